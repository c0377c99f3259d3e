//! The connection view on live traffic: the probe counting stream positions,
//! the connection stage joining both ends, each byte once.
//!
//! Captures come from the real probe (see `capture.rs`) with positions on, as
//! the connection view runs it; their items go through the same connection
//! stage the pipeline runs, and what comes out is compared byte for byte with
//! what each end sent.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Instant;

use spf_pipeline::connection::{Connections, Output};
use spf_pipeline::{Direction, Event, Role, SourceItem};
use spf_probes::{DirectionFilter, PathFilter, UnixConfig};

use crate::capture::{Captured, lock, start};
use crate::live::name_thread;
use crate::util::test_bytes;

fn positions(mut cfg: UnixConfig) -> UnixConfig {
    cfg.positions = true;
    cfg
}

fn own_pid() -> UnixConfig {
    UnixConfig {
        pids: vec![std::process::id()],
        ..UnixConfig::default()
    }
}

fn ino(fd: i32) -> u64 {
    // SAFETY: fstat into a zeroed buffer on an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

/// The connection view of one connection of a capture: its events, in order,
/// as the pipeline's connection stage hands them on.
fn joined(c: &Captured, conn: u64) -> Vec<Arc<Event>> {
    let mut stage = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    let mut items: Vec<SourceItem> = c
        .events
        .iter()
        .filter(|e| e.conn == conn)
        .map(|e| SourceItem::Event(Arc::clone(e)))
        .collect();
    // As the reorder stage would hand them on.
    items.sort_by_key(|i| i.ts_ns());
    for i in items {
        stage.push(i, now, &mut |o| out.push(o));
    }
    stage.finish(&mut |o| out.push(o));
    out.into_iter()
        .filter_map(|o| match o {
            Output::Item(SourceItem::Event(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// Compares two byte strings, saying where they first differ rather than
/// printing megabytes.
#[track_caller]
fn same_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{} bytes where {} were sent; first difference at {:?}",
            got.len(),
            want.len(),
            at.unwrap_or(got.len().min(want.len()))
        );
    }
}

/// The bytes a lane's events carry, in order; fails on a gap.
fn lane_bytes(evs: &[Arc<Event>], from: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for e in evs.iter().filter(|e| e.socket == from) {
        assert!(
            !e.truncated,
            "gap in the stream of socket {from} at {:?}: {} bytes missing (via {:?})",
            e.pos,
            e.len - e.data.len() as u64,
            e.via
        );
        assert_eq!(
            e.pos,
            Some(out.len() as u64),
            "positions count the lane's bytes"
        );
        out.extend_from_slice(&e.data);
    }
    out
}

/// Sends the first `len` bytes of the file at `path` into `sock` with
/// sendfile, as many calls as it takes.
fn sendfile_all(sock: &UnixStream, path: &std::path::Path, len: usize) {
    let file = std::fs::File::open(path).unwrap();
    let mut left = len;
    while left > 0 {
        // SAFETY: both fds are open; a null offset reads from the file's position.
        let n = unsafe {
            libc::sendfile(
                sock.as_raw_fd(),
                file.as_raw_fd(),
                std::ptr::null_mut(),
                left,
            )
        };
        assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
        left -= n as usize;
    }
}

/// Reads `n` bytes 16 KiB at a time, as curl reads a response.
fn read_in_chunks(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    let mut buf = vec![0u8; 16 << 10];
    while got.len() < n {
        let want = buf.len().min(n - got.len());
        let k = s.read(&mut buf[..want]).unwrap();
        assert!(k > 0, "early end of stream");
        got.extend_from_slice(&buf[..k]);
    }
    got
}

/// What the reader of [`write_read_in_chunks`] answers once it has it all.
const ACK: &[u8] = b"thanks";

/// On a socketpair made while `cap` watches (so counted from its first byte):
/// one write of `data`, which the other end reads 16 KiB at a time, as curl
/// does, and acknowledges with [`ACK`]. Returns the capture, checked for
/// loss, and the writer's and the reader's inodes.
fn write_read_in_chunks(cap: crate::capture::Capture, data: &[u8]) -> (Captured, u64, u64) {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (a_ino, b_ino) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    let want = data.to_vec();
    let reader = std::thread::spawn(move || {
        let got = read_in_chunks(&mut b, want.len());
        same_bytes(&got, &want);
        b.write_all(ACK).unwrap();
        b
    });
    a.write_all(data).unwrap();
    let mut ack = [0u8; ACK.len()];
    a.read_exact(&mut ack).unwrap();
    let _b = reader.join().unwrap();
    let c = cap.finish();
    c.assert_no_loss();
    (c, a_ino, b_ino)
}

/// Bytes the probe copied from receives (what the connection view had to take
/// from the receiving end).
fn copied_from_receives(c: &Captured, conn: u64) -> usize {
    c.events
        .iter()
        .filter(|e| e.conn == conn && e.dir == Direction::Recv)
        .map(|e| e.data.len())
        .sum()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spf-conv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn each_byte_once_seen_from_its_sender() {
    let _g = lock();
    let dir = tmpdir("once");
    let path = dir.join("srv.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let cfg = UnixConfig {
        paths: vec![PathFilter::parse(path.to_str().unwrap()).unwrap()],
        snaplen: 65536,
        ..UnixConfig::default()
    };
    let Some(cap) = start("each_byte_once_seen_from_its_sender", positions(cfg)) else {
        return;
    };
    let req = test_bytes(5000, 3);
    let resp = test_bytes(70_000, 4);
    let (req2, resp2) = (req.clone(), resp.clone());
    // Each side reads only once the other side's writes have returned: a
    // receive that overtakes the exit of the send that queued its bytes
    // copies them too (the send's capture is not settled yet), which the join
    // resolves by position but which would blur what this test counts.
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let (replied_tx, replied_rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).unwrap();
        for chunk in req2.chunks(1000) {
            s.write_all(chunk).unwrap();
        }
        sent_tx.send(()).unwrap();
        replied_rx.recv().unwrap();
        let mut r = vec![0u8; resp2.len()];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r, resp2);
        s
    });
    let (mut srv, _) = listener.accept().unwrap();
    sent_rx.recv().unwrap();
    let mut got = vec![0u8; req.len()];
    srv.read_exact(&mut got).unwrap();
    // 70,000 bytes fit in a Unix socket's default send buffer (208 KiB): the
    // write returns without the client reading.
    srv.write_all(&resp).unwrap();
    replied_tx.send(()).unwrap();
    let cli = client.join().unwrap();
    let (cli_ino, srv_ino) = (ino(cli.as_raw_fd()), ino(srv.as_raw_fd()));
    let c = cap.finish();
    c.assert_no_loss();
    let conn = c.events.iter().find(|e| e.socket == cli_ino).unwrap().conn;

    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, cli_ino), &req);
    same_bytes(&lane_bytes(&evs, srv_ino), &resp);
    let me = std::process::id();
    for e in &evs {
        assert_eq!(e.dir, Direction::Send);
        assert_eq!((e.pid, e.peer_pid), (me, me));
        let (role, peer) = if e.socket == cli_ino {
            (Role::Client, srv_ino)
        } else {
            (Role::Server, cli_ino)
        };
        assert_eq!(e.role, role, "{e:?}");
        // A client may send before the server's accept() gave its socket an
        // inode: until then the receiving socket is not known by number.
        assert!(e.peer_socket == peer || e.peer_socket == 0, "{e:?}");
    }
    // The connection was made while the probe watched: its positions are
    // known from the first byte, so no receive copied what a send held. The
    // 70,000-byte reply's send was cut at snaplen (64 KiB): the client's
    // receive copied exactly the rest.
    let tail = resp.len() - 65536;
    assert_eq!(copied_from_receives(&c, conn), tail);
    let via_recv: Vec<usize> = evs
        .iter()
        .filter(|e| e.via == Some(Direction::Recv))
        .map(|e| e.data.len())
        .collect();
    assert_eq!(via_recv, [tail]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bytes_a_send_capture_cut_short_come_from_the_receive() {
    let _g = lock();
    let cfg = UnixConfig {
        snaplen: 65536,
        ..own_pid()
    };
    let Some(cap) = start("bytes_a_send_capture_cut_short", positions(cfg)) else {
        return;
    };
    // One write of 1 MiB: its capture is cut at snaplen (64 KiB); the reader
    // takes it 16 KiB at a time, as curl does.
    let big = test_bytes(1 << 20, 9);
    let (c, a_ino, b_ino) = write_read_in_chunks(cap, &big);
    let conn = a_ino.min(b_ino);

    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &big);
    same_bytes(&lane_bytes(&evs, b_ino), ACK);
    // The send's capture was cut at snaplen: the rest came from the
    // receiver's reads, once.
    assert!(evs.iter().any(|e| e.via == Some(Direction::Recv)));
}

#[test]
fn every_send_cut_short_has_its_rest_copied_by_the_receive() {
    let _g = lock();
    let snaplen = 4096;
    let Some(cap) = start(
        "every_send_cut_short",
        positions(UnixConfig {
            snaplen,
            ..own_pid()
        }),
    ) else {
        return;
    };
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (a_ino, b_ino) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    // Five writes just over snaplen on one connection, each read whole and
    // acknowledged before the next: every receive passes the hole its send
    // left, and the next send leaves a hole of its own.
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| test_bytes(5000, 40 + i)).collect();
    let want = msgs.concat();
    for m in &msgs {
        a.write_all(m).unwrap();
        let got = read_in_chunks(&mut b, m.len());
        same_bytes(&got, m);
        b.write_all(b"k").unwrap();
        let mut k = [0u8; 1];
        a.read_exact(&mut k).unwrap();
    }
    let c = cap.finish();
    c.assert_no_loss();
    let conn = a_ino.min(b_ino);
    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &want);
    // Each receive copied its send's rest and nothing the send held.
    same_bytes(&lane_bytes(&evs, b_ino), b"kkkkk");
    assert_eq!(
        copied_from_receives(&c, conn),
        5 * (5000 - snaplen as usize)
    );
}

#[test]
fn a_write_read_while_it_blocks_is_copied_once() {
    let _g = lock();
    let Some(cap) = start("a_write_read_while_it_blocks", positions(own_pid())) else {
        return;
    };
    // Four times the default snaplen in one write, far more than the socket
    // holds: the reader takes most of it before the write returns (before
    // the send's hook runs), the rest while the hook copies.
    let big = test_bytes(4 << 20, 11);
    let (c, a_ino, b_ino) = write_read_in_chunks(cap, &big);
    let conn = a_ino.min(b_ino);
    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &big);
    // What reached the ring: each byte once, but for a read under way when
    // the send's hook promised its capture (one of 16 KiB; the bound allows
    // two). The send promises before it looks at what reads copied, so no
    // delay of its CPU in between lets more reads through.
    let copied: usize = c
        .events
        .iter()
        .filter(|e| {
            e.conn == conn
                && ((e.socket == a_ino && e.dir == Direction::Send)
                    || (e.socket == b_ino && e.dir == Direction::Recv))
        })
        .map(|e| e.data.len())
        .sum();
    assert!(
        copied >= big.len() && copied <= big.len() + (32 << 10),
        "{copied} bytes copied for {}",
        big.len()
    );
}

#[test]
fn sendfile_bytes_arrive_once_from_the_receive() {
    let _g = lock();
    let dir = tmpdir("sendfile");
    let body = test_bytes(1 << 20, 21);
    let file_path = dir.join("body.bin");
    std::fs::write(&file_path, &body).unwrap();
    let Some(cap) = start("sendfile_bytes_arrive_once", positions(own_pid())) else {
        return;
    };
    let (mut srv, mut cli) = UnixStream::pair().unwrap();
    let (srv_ino, cli_ino) = (ino(srv.as_raw_fd()), ino(cli.as_raw_fd()));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    let expect = [head.clone(), body.clone()].concat();
    let want = expect.len();
    // The reader starts once the headers' write has returned, so that no
    // receive overtakes the exit of the send that holds them (it would copy
    // them too; see each_byte_once_seen_from_its_sender).
    srv.write_all(&head).unwrap();
    let reader = std::thread::spawn(move || read_in_chunks(&mut cli, want));
    sendfile_all(&srv, &file_path, body.len());
    let got = reader.join().unwrap();
    same_bytes(&got, &expect);
    let c = cap.finish();
    c.assert_no_loss();
    let conn = srv_ino.min(cli_ino);

    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, srv_ino), &expect);
    // On the syscall exit hook the headers come from the server's write and
    // the body from the client's reads; the kernel hooks read sendfile's
    // pages at the send, so the body comes from the server's sends, but for
    // what a receive took before a send's hook ran (it holds those bytes
    // instead: each byte is copied once). Every event names the server as
    // the sender.
    let via_recv: usize = evs
        .iter()
        .filter(|e| e.via == Some(Direction::Recv))
        .map(|e| e.data.len())
        .sum();
    if c.hook.kernel {
        assert!(
            via_recv < body.len() / 2,
            "{via_recv} bytes via receives: {}",
            c.hook
        );
    } else {
        assert_eq!(via_recv, body.len(), "{}", c.hook);
    }
    assert!(
        evs.iter()
            .all(|e| e.socket == srv_ino && e.peer_socket == cli_ino)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Only sends captured (`--direction send`): the bytes sendfile moves cannot be
/// read by the syscall exit hook, and no receive copies them. They must show
/// as bytes not captured, in their place, so that what follows them is not
/// taken for what they were (here: the next response's head for the body).
#[test]
fn sendfile_bytes_are_a_declared_gap_when_only_sends_are_captured() {
    let _g = lock();
    let dir = tmpdir("sendfile-send");
    let body = test_bytes(256 << 10, 22);
    let file_path = dir.join("body.bin");
    std::fs::write(&file_path, &body).unwrap();
    let cfg = UnixConfig {
        direction: DirectionFilter::Send,
        ..own_pid()
    };
    let Some(cap) = start("sendfile_bytes_are_a_declared_gap", cfg) else {
        return;
    };
    let (mut srv, mut cli) = UnixStream::pair().unwrap();
    let (srv_ino, cli_ino) = (ino(srv.as_raw_fd()), ino(cli.as_raw_fd()));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n".to_vec();
    let next = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    let expect = [head.clone(), body.clone(), next.clone()].concat();
    let want = expect.len();
    let reader = std::thread::spawn(move || read_in_chunks(&mut cli, want));
    srv.write_all(&head).unwrap();
    sendfile_all(&srv, &file_path, body.len());
    srv.write_all(&next).unwrap();
    same_bytes(&reader.join().unwrap(), &expect);
    let c = cap.finish();
    c.assert_no_loss();

    // The server's lane, in order: every byte it holds is the byte sent at
    // that offset, and its lengths add up to all that was sent.
    let evs = joined(&c, srv_ino.min(cli_ino));
    let mut at = 0usize;
    let mut missing = 0usize;
    for e in evs.iter().filter(|e| e.socket == srv_ino) {
        same_bytes(&e.data, &expect[at..at + e.data.len()]);
        missing += e.len as usize - e.data.len();
        at += e.len as usize;
    }
    assert_eq!(at, expect.len(), "the lane's lengths, {}", c.hook);
    if c.hook.kernel {
        // The kernel hooks read sendfile's pages.
        assert_eq!(missing, 0, "{}", c.hook);
    } else {
        assert_eq!(missing, body.len(), "{}", c.hook);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sender_outside_the_filter_is_seen_through_its_receiver() {
    let _g = lock();
    let cfg = UnixConfig {
        comms: vec!["spf-conv-kept".into()],
        ..UnixConfig::default()
    };
    let Some(cap) = start("a_sender_outside_the_filter", positions(cfg)) else {
        return;
    };
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (a_ino, b_ino) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    let from_a = test_bytes(3000, 31);
    let from_b = test_bytes(2500, 32);
    let (fa, fb) = (from_a.clone(), from_b.clone());
    let a_len = from_a.len();
    let fb2 = from_b.clone();
    let kept = std::thread::spawn(move || {
        name_thread("spf-conv-kept");
        a.write_all(&fa).unwrap();
        let mut got = vec![0u8; fb.len()];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got, fb);
        a
    });
    let other = std::thread::spawn(move || {
        name_thread("spf-conv-other");
        let mut got = vec![0u8; a_len];
        b.read_exact(&mut got).unwrap();
        b.write_all(&fb2).unwrap();
        (b, got)
    });
    let _a = kept.join().unwrap();
    let (_b, got) = other.join().unwrap();
    assert_eq!(got, from_a);
    let c = cap.finish();
    c.assert_no_loss();
    let conn = a_ino.min(b_ino);

    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &from_a);
    // The other thread's sends were filtered out: its bytes come from the kept
    // thread's receives, still named as sent from its socket.
    same_bytes(&lane_bytes(&evs, b_ino), &from_b);
    assert!(
        evs.iter()
            .filter(|e| e.socket == b_ino)
            .all(|e| e.via == Some(Direction::Recv))
    );
}

#[test]
fn a_connection_older_than_the_capture_is_aligned_and_kept_once() {
    let _g = lock();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (a_ino, b_ino) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    // Traffic before the capture: positions must not depend on having seen
    // the connection's start.
    a.write_all(b"before").unwrap();
    let mut six = [0u8; 6];
    b.read_exact(&mut six).unwrap();
    let Some(cap) = start("a_connection_older_than_the_capture", positions(own_pid())) else {
        return;
    };
    // Two processes' worth of ping-pong: one thread per end.
    let lens: Vec<(usize, usize)> = (0..200usize)
        .map(|i| (50 + (i % 7) * 13, 20 + (i % 5) * 11))
        .collect();
    let lens2 = lens.clone();
    let echo = std::thread::spawn(move || {
        let mut sent = Vec::new();
        for (i, (q, r)) in lens2.iter().enumerate() {
            let mut got = vec![0u8; *q];
            b.read_exact(&mut got).unwrap();
            let reply = test_bytes(*r, i as u64 + 1000);
            b.write_all(&reply).unwrap();
            sent.extend_from_slice(&reply);
        }
        (b, sent)
    });
    let mut sent_a = Vec::new();
    for (i, (q, r)) in lens.iter().enumerate() {
        let msg = test_bytes(*q, i as u64);
        a.write_all(&msg).unwrap();
        let mut back = vec![0u8; *r];
        a.read_exact(&mut back).unwrap();
        sent_a.extend_from_slice(&msg);
    }
    let (_b, sent_b) = echo.join().unwrap();
    let c = cap.finish();
    c.assert_no_loss();
    let conn = a_ino.min(b_ino);
    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &sent_a);
    same_bytes(&lane_bytes(&evs, b_ino), &sent_b);
    // Every receive knows its place in the receiver's counting, and every
    // event that knows both places puts the two countings one offset apart
    // per direction: what places the receives made before alignment.
    let mine: Vec<_> = c.events.iter().filter(|e| e.conn == conn).collect();
    assert!(
        mine.iter()
            .filter(|e| e.dir == Direction::Recv)
            .all(|e| e.rpos.is_some())
    );
    for lane in [0, 1] {
        let offsets: std::collections::BTreeSet<u64> = mine
            .iter()
            .filter(|e| e.lane == lane)
            .filter_map(|e| Some(e.rpos?.wrapping_sub(e.pos?)))
            .collect();
        assert_eq!(offsets.len(), 1, "lane {lane}: offsets {offsets:?}");
    }
    // Once the two ends' counts were aligned, receives stopped copying what the
    // sends held: far fewer bytes than both directions' traffic were copied
    // twice.
    let total = sent_a.len() + sent_b.len();
    let twice = copied_from_receives(&c, conn);
    assert!(
        twice < total / 4,
        "{twice} of {total} bytes copied at both ends"
    );
}

/// Many connections older than the capture, all first seen at once by
/// their busy ends on both CPUs: the moment a receive can return before its
/// sender's hook has counted the send. Each byte still comes out once.
#[test]
fn many_old_connections_first_seen_at_once_keep_each_byte_once() {
    let _g = lock();
    let pairs: Vec<(UnixStream, UnixStream)> = (0..16)
        .map(|_| {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            a.write_all(b"hi").unwrap();
            b.read_exact(&mut [0u8; 2]).unwrap();
            (a, b)
        })
        .collect();
    let inos: Vec<(u64, u64)> = pairs
        .iter()
        .map(|(a, b)| (ino(a.as_raw_fd()), ino(b.as_raw_fd())))
        .collect();
    let Some(cap) = start("many_old_connections", positions(own_pid())) else {
        return;
    };
    // Every pair's two ends start together, once all threads are ready.
    let go = Arc::new(std::sync::Barrier::new(2 * pairs.len()));
    let mut ends = Vec::new();
    for (k, (mut a, mut b)) in pairs.into_iter().enumerate() {
        let k = k as u64;
        let go_a = Arc::clone(&go);
        ends.push(std::thread::spawn(move || {
            go_a.wait();
            let mut sent = Vec::new();
            for i in 0..30u64 {
                let msg = test_bytes(40 + (i % 3) as usize * 17, k * 1000 + i);
                a.write_all(&msg).unwrap();
                let mut back = vec![0u8; 20 + (i % 4) as usize * 9];
                a.read_exact(&mut back).unwrap();
                sent.extend_from_slice(&msg);
            }
            sent
        }));
        let go_b = Arc::clone(&go);
        ends.push(std::thread::spawn(move || {
            go_b.wait();
            let mut sent = Vec::new();
            for i in 0..30u64 {
                let mut got = vec![0u8; 40 + (i % 3) as usize * 17];
                b.read_exact(&mut got).unwrap();
                let reply = test_bytes(20 + (i % 4) as usize * 9, k * 1000 + 500 + i);
                b.write_all(&reply).unwrap();
                sent.extend_from_slice(&reply);
            }
            sent
        }));
    }
    let sent: Vec<Vec<u8>> = ends.into_iter().map(|t| t.join().unwrap()).collect();
    let c = cap.finish();
    c.assert_no_loss();
    for (k, (a_ino, b_ino)) in inos.into_iter().enumerate() {
        let evs = joined(&c, a_ino.min(b_ino));
        same_bytes(&lane_bytes(&evs, a_ino), &sent[2 * k]);
        same_bytes(&lane_bytes(&evs, b_ino), &sent[2 * k + 1]);
    }
}

#[test]
fn bytes_queued_before_the_capture_come_first_from_their_receive() {
    let _g = lock();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (a_ino, b_ino) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    // Sent before the capture, received after it: only the receive holds
    // these bytes, and only the receiver's counting knows where they are.
    let queued = b"queued before spf".to_vec();
    a.write_all(&queued).unwrap();
    let Some(cap) = start("bytes_queued_before_the_capture", positions(own_pid())) else {
        return;
    };
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let n = queued.len();
    let echo = std::thread::spawn(move || {
        let mut old = vec![0u8; n];
        b.read_exact(&mut old).unwrap();
        // The receive is counted before the first send is made.
        taken_tx.send(()).unwrap();
        let mut sent = Vec::new();
        for i in 0..4u64 {
            let mut got = vec![0u8; 100];
            b.read_exact(&mut got).unwrap();
            let reply = test_bytes(30, 500 + i);
            b.write_all(&reply).unwrap();
            sent.extend_from_slice(&reply);
        }
        (b, old, sent)
    });
    taken_rx.recv().unwrap();
    let mut sent_a = queued.clone();
    for i in 0..4u64 {
        let msg = test_bytes(100, 400 + i);
        a.write_all(&msg).unwrap();
        let mut back = vec![0u8; 30];
        a.read_exact(&mut back).unwrap();
        sent_a.extend_from_slice(&msg);
    }
    let (_b, old, sent_b) = echo.join().unwrap();
    assert_eq!(old, queued);
    let c = cap.finish();
    c.assert_no_loss();
    let conn = a_ino.min(b_ino);
    // The receiver's counting is ahead of the sender's by the queued bytes.
    let a_lane = c
        .events
        .iter()
        .find(|e| e.conn == conn && e.socket == a_ino && e.dir == Direction::Send)
        .expect("a's sends")
        .lane;
    let offsets: std::collections::BTreeSet<u64> = c
        .events
        .iter()
        .filter(|e| e.conn == conn && e.lane == a_lane)
        .filter_map(|e| Some(e.rpos?.wrapping_sub(e.pos?)))
        .collect();
    assert_eq!(offsets, [n as u64].into());
    let evs = joined(&c, conn);
    same_bytes(&lane_bytes(&evs, a_ino), &sent_a);
    same_bytes(&lane_bytes(&evs, b_ino), &sent_b);
}

/// The bytes each socket of `conn` sent, from NDJSON records of the raw
/// decoder, in record order.
fn sent_by(records: &[serde_json::Value], conn: u64, socket: u64, dir: &str) -> Vec<u8> {
    use base64::Engine as _;
    records
        .iter()
        .filter(|r| r["conn"] == conn && r["socket"] == socket && r["dir"] == dir)
        .filter(|r| r["decoder"] == "raw")
        .flat_map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r["data_b64"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

/// A socketpair conversation in a thread named `comm`: three writes one way,
/// one reply the other. Returns (a's inode, b's inode, a's bytes, b's bytes).
fn talk(comm: &'static str) -> (u64, u64, Vec<u8>, Vec<u8>) {
    std::thread::spawn(move || {
        crate::live::name_thread(comm);
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let ab: Vec<u8> = [test_bytes(700, 61), test_bytes(900, 62), test_bytes(64, 63)].concat();
        for part in [&ab[..700], &ab[700..1600], &ab[1600..]] {
            a.write_all(part).unwrap();
        }
        let mut got = vec![0u8; ab.len()];
        b.read_exact(&mut got).unwrap();
        let ba = test_bytes(321, 64);
        b.write_all(&ba).unwrap();
        let mut back = vec![0u8; ba.len()];
        a.read_exact(&mut back).unwrap();
        (ino(a.as_raw_fd()), ino(b.as_raw_fd()), ab, ba)
    })
    .join()
    .unwrap()
}

#[test]
fn spf_run_shows_each_byte_once_and_its_capture_replays_in_both_views() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap.ndjson");
    let comm = "spf-live-conv";
    let args = [
        "--comm",
        comm,
        "--decoder",
        "raw",
        "--output",
        cap.to_str().unwrap(),
    ];
    let Some(live) = crate::live::LiveSpf::start("spf_run_each_byte_once", dir.path(), comm, &args)
    else {
        return;
    };
    let (a, b, ab, ba) = talk(comm);
    let (records, _) = live.stop();
    let conn = a.min(b);

    // The default view: each byte once, every record from its sender.
    same_bytes(&sent_by(&records, conn, a, "send"), &ab);
    same_bytes(&sent_by(&records, conn, b, "send"), &ba);
    let of_conn: Vec<_> = records.iter().filter(|r| r["conn"] == conn).collect();
    assert!(
        of_conn
            .iter()
            .all(|r| r["dir"] == "send" && r["via"].is_string())
    );
    assert!(of_conn.iter().all(|r| r["pid"] == std::process::id()));

    // The capture holds the syscalls; replayed in the connection view it
    // gives the same bytes again, and in the syscall view every send whole.
    let replay = |view: &str| {
        let o = crate::util::spf_output(&[
            "run",
            "--replay",
            cap.to_str().unwrap(),
            "--view",
            view,
            "--decoder",
            "raw",
            "--format",
            "ndjson",
            "--quiet",
        ]);
        assert!(o.status.success(), "{}", crate::util::stderr_text(&o));
        let said = crate::util::stderr_text(&o);
        let records = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>();
        (records, said)
    };
    let (joined_again, said) = replay("connection");
    assert!(said.is_empty(), "{said}");
    same_bytes(&sent_by(&joined_again, conn, a, "send"), &ab);
    same_bytes(&sent_by(&joined_again, conn, b, "send"), &ba);
    // The receives hold only what no send held: the syscall view says so.
    let (syscalls, said) = replay("syscalls");
    assert!(said.contains("captured in the connection view"), "{said}");
    same_bytes(&sent_by(&syscalls, conn, a, "send"), &ab);
    same_bytes(&sent_by(&syscalls, conn, b, "send"), &ba);
    assert!(
        syscalls
            .iter()
            .filter(|r| r["conn"] == conn)
            .any(|r| r["dir"] == "recv")
    );
}

#[test]
fn the_syscall_view_shows_every_syscall_whole() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let comm = "spf-live-sys";
    let args = ["--comm", comm, "--decoder", "raw", "--view", "syscalls"];
    let Some(live) = crate::live::LiveSpf::start("the_syscall_view", dir.path(), comm, &args)
    else {
        return;
    };
    let (a, b, ab, ba) = talk(comm);
    let (records, _) = live.stop();
    let conn = a.min(b);
    same_bytes(&sent_by(&records, conn, a, "send"), &ab);
    same_bytes(&sent_by(&records, conn, b, "recv"), &ab);
    same_bytes(&sent_by(&records, conn, b, "send"), &ba);
    same_bytes(&sent_by(&records, conn, a, "recv"), &ba);
    assert!(records.iter().all(|r| r.get("via").is_none()));
}

/// A process in a cgroup named as Docker names a container's (made by the
/// test, as the runtime would) is filtered by `--cgroup` and each of its
/// records says which container it runs in.
#[test]
fn a_containers_cgroup_labels_and_filters_its_traffic() {
    let _g = lock();
    let root = spf_probes::containers::cgroup_root();
    let id: String = (0..64)
        .map(|i| b"0123456789abcdef"[(i * 7 + 3) % 16] as char)
        .collect();
    let parent = root.join(format!("spf-test-{}.slice", std::process::id()));
    let scope = parent.join(format!("docker-{id}.scope"));
    if let Err(e) = std::fs::create_dir_all(&scope) {
        assert!(!crate::capture::required(), "cannot make a cgroup: {e}");
        eprintln!("skipping: cannot make a cgroup: {e}");
        return;
    }
    let rel = scope.strip_prefix(root).unwrap().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The "container": a python process moved into the scope before it talks.
    let script = r#"
import socket, sys
sys.stdin.readline()
a, b = socket.socketpair()
a.sendall(b"from-the-container")
b.recv(100)
"#;
    let mut contained = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(scope.join("cgroup.procs"), contained.id().to_string()).unwrap();
    let canary = dir.path().join("canary.sock");
    let cgroup_arg = format!("/{rel}");
    // The canary runs in this process, outside the cgroup: the filter would
    // drop it, so the readiness check uses a capture without the filter.
    let started = crate::live::LiveSpf::start_with(
        "a_containers_cgroup",
        dir.path(),
        &["--cgroup", &cgroup_arg, "--decoder", "raw"],
        crate::live::Canary::Contained(&canary, &scope),
    );
    let Some(live) = started else {
        let _ = contained.kill();
        let _ = contained.wait();
        let _ = std::fs::remove_dir(&scope);
        let _ = std::fs::remove_dir(&parent);
        return;
    };
    contained.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(contained.wait().unwrap().success());
    // Outside the cgroup: not captured.
    let (mut x, mut y) = UnixStream::pair().unwrap();
    x.write_all(b"from-outside").unwrap();
    let mut buf = [0u8; 12];
    y.read_exact(&mut buf).unwrap();
    let (records, _) = live.stop();
    let _ = std::fs::remove_dir(&scope);
    let _ = std::fs::remove_dir(&parent);
    let mine: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["text"]
                .as_str()
                .is_some_and(|t| t.contains("from-the-container"))
        })
        .collect();
    assert_eq!(mine.len(), 1, "{records:#?}");
    assert_eq!(mine[0]["container"]["id"], id.as_str());
    assert_eq!(mine[0]["container"]["runtime"], "docker");
    assert!(mine[0]["cgroup"].as_u64().unwrap() > 0);
    assert!(!records.iter().any(|r| {
        r["text"]
            .as_str()
            .is_some_and(|t| t.contains("from-outside"))
    }));
}
