//! The `unix` source with the real BPF probe: real sockets of every kind, real
//! peers (Rust std, raw libc calls, a Python process), every byte compared.
//!
//! Captures are started with the helpers in `capture.rs`, which say how tests
//! keep out of each other's way.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use spf_pipeline::{Direction, Event, SockKind};
use spf_probes::{DirectionFilter, PathFilter, UnixConfig};

use crate::capture::{Captured, lock, required, start};
use crate::util::test_bytes;

/// Concatenated captured data of the events matching `f`, checking that none was
/// cut short.
fn stream<'a>(events: impl IntoIterator<Item = &'a Arc<Event>>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        assert!(
            !e.truncated,
            "unexpected truncated event: len {} captured {}",
            e.len,
            e.data.len()
        );
        assert_eq!(e.len as usize, e.data.len());
        out.extend_from_slice(&e.data);
    }
    out
}

fn ino(fd: RawFd) -> u64 {
    // SAFETY: fstat into a zeroed stat buffer on an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

fn conn_of(a: RawFd, b: RawFd) -> u64 {
    ino(a).min(ino(b))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spf-probe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn path_cfg(p: &str) -> UnixConfig {
    UnixConfig {
        paths: vec![PathFilter::parse(p).unwrap()],
        ..UnixConfig::default()
    }
}

/// Only this process's traffic (either end).
fn own_pid() -> UnixConfig {
    UnixConfig {
        pids: vec![pid()],
        ..Default::default()
    }
}

fn pid() -> u32 {
    std::process::id()
}

fn c_write(fd: RawFd, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        off += n as usize;
    }
}

fn c_read_exact(fd: RawFd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut off = 0;
    while off < n {
        // SAFETY: reading into a live buffer.
        let r = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), n - off) };
        assert!(r > 0, "read: {}", std::io::Error::last_os_error());
        off += r as usize;
    }
    buf
}

#[test]
fn stream_socketpair_both_directions() {
    let _g = lock();
    let (mut a, b) = UnixStream::pair().unwrap();
    let conn = conn_of(a.as_raw_fd(), b.as_raw_fd());
    let Some(cap) = start("stream_socketpair_both_directions", own_pid()) else {
        return;
    };
    let ab = test_bytes(3000, 1);
    let ba = test_bytes(777, 2);
    // Rust's write (sendto) one way, libc write/read the other.
    for chunk in ab.chunks(100) {
        a.write_all(chunk).unwrap();
    }
    let got = c_read_exact(b.as_raw_fd(), ab.len());
    assert_eq!(got, ab);
    c_write(b.as_raw_fd(), &ba);
    let mut back = vec![0u8; ba.len()];
    a.read_exact(&mut back).unwrap();
    let c = cap.finish();
    c.assert_no_loss();

    let evs = c.of_conn(conn);
    let send = c.of_conn_dir(conn, Direction::Send);
    let recv = c.of_conn_dir(conn, Direction::Recv);
    let mut want_send = ab.clone();
    want_send.extend_from_slice(&ba);
    assert_eq!(stream(send.iter().copied()), want_send);
    assert_eq!(stream(recv.iter().copied()), want_send);
    for e in &evs {
        assert_eq!(e.sock, SockKind::Stream);
        assert_eq!(&*e.path, "");
        assert_eq!(e.pid, pid());
        assert_eq!(e.peer_pid, pid());
        assert!(
            e.time_ns > 1_600_000_000_000_000_000,
            "wall clock time: {}",
            e.time_ns
        );
    }
    assert_eq!(send.len(), 30 + 1);
}

/// A socket at an fd past the 64 a process's table starts with: the probe finds
/// it in the table the process grew, not only in the one its files_struct
/// embeds. In a child, so that this test process's own table stays as it is.
#[test]
fn a_socket_past_the_first_64_fds_is_captured() {
    let _g = lock();
    let (a, b) = UnixStream::pair().unwrap();
    let conn = conn_of(a.as_raw_fd(), b.as_raw_fd());
    let Some(cap) = start("a_socket_past_the_first_64_fds_is_captured", own_pid()) else {
        return;
    };
    let data = test_bytes(5000, 3);
    let high = 200;
    // SAFETY: the child makes only async-signal-safe calls (dup2, write,
    // _exit) on fds and memory it inherited, and never returns.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::dup2(a.as_raw_fd(), high) != high {
                libc::_exit(1);
            }
            let mut off = 0;
            while off < data.len() {
                let n = libc::write(high, data[off..].as_ptr().cast(), data.len() - off);
                if n <= 0 {
                    libc::_exit(2);
                }
                off += n as usize;
            }
            libc::_exit(0);
        }
    }
    let got = c_read_exact(b.as_raw_fd(), data.len());
    let mut status = 0;
    // SAFETY: waiting for the child this test forked.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: {status:#x}"
    );
    assert_eq!(got, data);
    let c = cap.finish();
    c.assert_no_loss();
    let send = c.of_conn_dir(conn, Direction::Send);
    assert_eq!(stream(send.iter().copied()), data);
    assert!(send.iter().all(|e| e.pid == child as u32), "{send:?}");
}

#[test]
fn named_listener_connect_accept() {
    let _g = lock();
    let dir = tmpdir("named");
    let path = dir.join("srv.sock");
    let p = path.to_str().unwrap().to_string();
    let listener = UnixListener::bind(&path).unwrap();
    let Some(cap) = start("named_listener_connect_accept", path_cfg(&p)) else {
        return;
    };
    let req = test_bytes(5000, 3);
    let resp = test_bytes(64, 4);
    let (req2, resp2) = (req.clone(), resp.clone());
    let client = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&req2).unwrap();
        let mut r = vec![0u8; resp2.len()];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r, resp2);
        s
    });
    let (mut srv, _) = listener.accept().unwrap();
    let mut got = vec![0u8; req.len()];
    srv.read_exact(&mut got).unwrap();
    srv.write_all(&resp).unwrap();
    let cli = client.join().unwrap();
    let lower = conn_of(cli.as_raw_fd(), srv.as_raw_fd());
    let cli_ino = ino(cli.as_raw_fd());
    let c = cap.finish();
    c.assert_no_loss();

    assert!(!c.events.is_empty());
    let conn = c.events[0].conn;
    // The lower inode of the two, unless the client sent before accept() gave
    // the server's socket an inode: then the client's.
    assert!(conn == lower || conn == cli_ino, "conn {conn}");
    for e in &c.events {
        assert_eq!(&*e.path, p, "both ends report the listener's path");
        assert_eq!(e.conn, conn, "one conn for both ends and directions");
        assert_eq!((e.pid, e.peer_pid), (pid(), pid()));
    }
    // Which end sent what, each end on its own: events come in the order their
    // syscalls returned, and the server can read and answer before the
    // client's write has returned (a slow or busy machine shows it).
    let srv_ino = ino(srv.as_raw_fd());
    let of = |dir: Direction, socket: u64| {
        stream(
            c.events
                .iter()
                .filter(|e| e.dir == dir && e.socket == socket),
        )
    };
    assert_eq!(of(Direction::Send, cli_ino), req);
    assert_eq!(of(Direction::Recv, srv_ino), req);
    assert_eq!(of(Direction::Send, srv_ino), resp);
    assert_eq!(of(Direction::Recv, cli_ino), resp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn abstract_socket() {
    let _g = lock();
    let name = format!("spf-test-abstract-{}", pid());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let Some(cap) = start("abstract_socket", path_cfg(&format!("@{name}"))) else {
        return;
    };
    let msg = test_bytes(1234, 5);
    let mut cli = UnixStream::connect_addr(&addr).unwrap();
    let (mut srv, _) = listener.accept().unwrap();
    cli.write_all(&msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    srv.read_exact(&mut got).unwrap();
    let conn = conn_of(cli.as_raw_fd(), srv.as_raw_fd());
    let c = cap.finish();
    c.assert_no_loss();
    assert_eq!(c.events.len(), 2, "{:?}", c.events);
    for e in &c.events {
        assert_eq!(&*e.path, format!("@{name}"));
        assert_eq!(e.conn, conn);
        assert_eq!(&e.data[..], &msg[..]);
    }
}

/// Names of every length from 1 to 17 bytes, so that the last of their
/// 8-byte words ends at every place a word can: each reaches the events whole,
/// and nothing after it.
#[test]
fn abstract_names_of_every_short_length_are_read_whole() {
    let _g = lock();
    let Some(cap) = start(
        "abstract_names_of_every_short_length_are_read_whole",
        own_pid(),
    ) else {
        return;
    };
    let mut want = Vec::new();
    for n in 1..=17usize {
        // Letters that vary with this process, so that another run's names
        // are unlikely to be bound already.
        let name: String = (0..n)
            .map(|i| char::from(b'A' + ((pid() as usize + n * 7 + i) % 26) as u8))
            .collect();
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let mut cli = UnixStream::connect_addr(&addr).unwrap();
        let (mut srv, _) = listener.accept().unwrap();
        cli.write_all(name.as_bytes()).unwrap();
        let mut got = vec![0u8; n];
        srv.read_exact(&mut got).unwrap();
        want.push((conn_of(cli.as_raw_fd(), srv.as_raw_fd()), name));
    }
    let c = cap.finish();
    c.assert_no_loss();
    for (conn, name) in want {
        let evs = c.of_conn(conn);
        assert!(!evs.is_empty(), "no event of @{name}");
        for e in evs {
            assert_eq!(&*e.path, format!("@{name}"), "{e:?}");
        }
    }
}

#[test]
fn dgram_sendto_path() {
    let _g = lock();
    let dir = tmpdir("dgram");
    let path = dir.join("rx.sock");
    let p = path.to_str().unwrap().to_string();
    let rx = UnixDatagram::bind(&path).unwrap();
    let tx = UnixDatagram::unbound().unwrap();
    let Some(cap) = start("dgram_sendto_path", path_cfg(&p)) else {
        return;
    };
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| test_bytes(10 + i * 37, i as u64)).collect();
    let rx_ino = ino(rx.as_raw_fd());
    // The receive queue holds few datagrams: read while sending.
    let want = msgs.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        for m in &want {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &m[..]);
        }
    });
    for m in &msgs {
        assert_eq!(tx.send_to(m, &path).unwrap(), m.len());
    }
    reader.join().unwrap();
    let c = cap.finish();
    c.assert_no_loss();
    let send = c.of_dir(Direction::Send);
    let recv = c.of_dir(Direction::Recv);
    assert_eq!(send.len(), msgs.len());
    assert_eq!(recv.len(), msgs.len());
    for (e, m) in send.iter().zip(&msgs) {
        assert_eq!(&e.data[..], &m[..], "one event per datagram, in order");
    }
    for (e, m) in recv.iter().zip(&msgs) {
        assert_eq!(&e.data[..], &m[..]);
    }
    for e in &c.events {
        assert_eq!(e.sock, SockKind::Dgram);
        assert_eq!(&*e.path, p);
        assert_eq!(
            e.conn, rx_ino,
            "a datagram's conn is its receiving socket: {e:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A filter on a datagram server's path keeps the whole conversation: the
/// client's requests (sent to that path), the server's receives, the server's
/// replies (sent to the client's own path) and the client's receives of them,
/// whether the client sends to an address or is connected.
#[test]
fn dgram_path_filter_keeps_replies() {
    let _g = lock();
    let dir = tmpdir("dgram-reply");
    let srv_path = dir.join("d.sock");
    let cli_path = dir.join("c.sock");
    let other_path = dir.join("other.sock");
    let p = srv_path.to_str().unwrap().to_string();
    let server = UnixDatagram::bind(&srv_path).unwrap();
    let client = UnixDatagram::bind(&cli_path).unwrap();
    let other = UnixDatagram::bind(&other_path).unwrap();
    let Some(cap) = start("dgram_path_filter_keeps_replies", path_cfg(&p)) else {
        return;
    };
    let mut buf = [0u8; 256];
    // Unconnected client: request to the server's address, reply to the
    // client's address, both read with their source address.
    client.send_to(b"request-1", &srv_path).unwrap();
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"request-1");
    server
        .send_to(b"reply-1", from.as_pathname().unwrap())
        .unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply-1");
    // The same client talking to another named socket: not the filter's.
    client.send_to(b"elsewhere", &other_path).unwrap();
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"elsewhere");
    other.send_to(b"from-elsewhere", &cli_path).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from-elsewhere");
    // Connected client: send and recv without addresses.
    client.connect(&srv_path).unwrap();
    client.send(b"request-2").unwrap();
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"request-2");
    server
        .send_to(b"reply-2", from.as_pathname().unwrap())
        .unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply-2");
    // A third client on sendmsg/recvmsg, with the addresses in the msghdr.
    let msg_path = dir.join("m.sock");
    let msg_client = UnixDatagram::bind(&msg_path).unwrap();
    let (srv_addr, srv_len) = sockaddr_for(srv_path.as_os_str().as_encoded_bytes());
    let mut req = *b"request-3";
    let mut iov = libc::iovec {
        iov_base: req.as_mut_ptr().cast(),
        iov_len: req.len(),
    };
    // SAFETY: a zeroed msghdr, then pointers to live locals only.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&srv_addr as *const libc::sockaddr_un).cast_mut().cast();
    m.msg_namelen = srv_len;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    // SAFETY: `m` points at live buffers for the whole call.
    let n = unsafe { libc::sendmsg(msg_client.as_raw_fd(), &m, 0) };
    assert_eq!(n, req.len() as isize);
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"request-3");
    server
        .send_to(b"reply-3", from.as_pathname().unwrap())
        .unwrap();
    // SAFETY: as above; the kernel fills `from_addr` and `msg_namelen`.
    let mut from_addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut rbuf = [0u8; 64];
    let mut riov = libc::iovec {
        iov_base: rbuf.as_mut_ptr().cast(),
        iov_len: rbuf.len(),
    };
    let mut rm: libc::msghdr = unsafe { std::mem::zeroed() };
    rm.msg_name = (&mut from_addr as *mut libc::sockaddr_un).cast();
    rm.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    rm.msg_iov = &mut riov;
    rm.msg_iovlen = 1;
    // SAFETY: `rm` points at live buffers for the whole call.
    let n = unsafe { libc::recvmsg(msg_client.as_raw_fd(), &mut rm, 0) };
    assert_eq!(&rbuf[..n as usize], b"reply-3");
    let c = cap.finish();
    c.assert_no_loss();
    let srv_ino = ino(server.as_raw_fd());
    let cli_ino = ino(client.as_raw_fd());
    let msg_ino = ino(msg_client.as_raw_fd());
    // A datagram sent to an address reports that address; the rest report
    // the socket's own name.
    let (sp, cp, mp) = (
        p.as_str(),
        cli_path.to_str().unwrap(),
        msg_path.to_str().unwrap(),
    );
    let got: Vec<(u64, Direction, &[u8], &str)> = c
        .events
        .iter()
        .map(|e| (e.socket, e.dir, &e.data[..], &*e.path))
        .collect();
    let want: Vec<(u64, Direction, &[u8], &str)> = vec![
        (cli_ino, Direction::Send, b"request-1", sp),
        (srv_ino, Direction::Recv, b"request-1", sp),
        (srv_ino, Direction::Send, b"reply-1", cp),
        (cli_ino, Direction::Recv, b"reply-1", cp),
        (cli_ino, Direction::Send, b"request-2", cp),
        (srv_ino, Direction::Recv, b"request-2", sp),
        (srv_ino, Direction::Send, b"reply-2", cp),
        (cli_ino, Direction::Recv, b"reply-2", cp),
        (msg_ino, Direction::Send, b"request-3", sp),
        (srv_ino, Direction::Recv, b"request-3", sp),
        (srv_ino, Direction::Send, b"reply-3", mp),
        (msg_ino, Direction::Recv, b"reply-3", mp),
    ];
    assert_eq!(got, want, "{:?}", c.events);
    assert!(c.events.iter().all(|e| e.sock == SockKind::Dgram));
    let _ = std::fs::remove_dir_all(&dir);
}

fn socketpair(kind: libc::c_int) -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    assert_eq!(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                kind | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        },
        0
    );
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: closing an fd this test owns.
    unsafe { libc::close(fd) };
}

#[test]
fn seqpacket_keeps_message_boundaries() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    let conn = conn_of(a, b);
    let Some(cap) = start("seqpacket_keeps_message_boundaries", own_pid()) else {
        return;
    };
    let msgs: Vec<Vec<u8>> = (0..10)
        .map(|i| test_bytes(1 + i * 300, 100 + i as u64))
        .collect();
    for m in &msgs {
        c_write(a, m);
    }
    let mut buf = vec![0u8; 8192];
    for m in &msgs {
        // SAFETY: reading into a live buffer.
        let n = unsafe { libc::read(b, buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n as usize, m.len());
    }
    let c = cap.finish();
    c.assert_no_loss();
    let send = c.of_conn_dir(conn, Direction::Send);
    let recv = c.of_conn_dir(conn, Direction::Recv);
    assert_eq!(send.len(), msgs.len());
    assert_eq!(recv.len(), msgs.len());
    for ((s, r), m) in send.iter().zip(&recv).zip(&msgs) {
        assert_eq!(&s.data[..], &m[..]);
        assert_eq!(&r.data[..], &m[..]);
        assert_eq!(s.sock, SockKind::Seqpacket);
    }
    close(a);
    close(b);
}

#[test]
fn sendmsg_with_64_iovecs() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let conn = conn_of(a, b);
    let Some(cap) = start("sendmsg_with_64_iovecs", own_pid()) else {
        return;
    };
    let parts: Vec<Vec<u8>> = (0..64)
        .map(|i| test_bytes(1 + (i * 131) % 700, 7 + i as u64))
        .collect();
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let total: usize = parts.iter().map(Vec::len).sum();
    // SAFETY: a zeroed msghdr with the iovec array set is a valid argument.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: every iovec points into a live buffer.
    let n = unsafe { libc::sendmsg(a, &msg, 0) };
    assert_eq!(n as usize, total);
    // Read it back scattered over 16 iovecs with recvmsg.
    // Exactly `total` bytes of buffers, or MSG_WAITALL would wait for more.
    let per = total.div_ceil(16);
    let mut back: Vec<Vec<u8>> = (0..16)
        .map(|i| vec![0u8; per.min(total - (per * i).min(total))])
        .collect();
    let mut riov: Vec<libc::iovec> = back
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut rmsg: libc::msghdr = unsafe { std::mem::zeroed() };
    rmsg.msg_iov = riov.as_mut_ptr();
    rmsg.msg_iovlen = riov.len();
    // SAFETY: every iovec points into a live buffer.
    let r = unsafe { libc::recvmsg(b, &mut rmsg, libc::MSG_WAITALL) };
    assert_eq!(r as usize, total);
    let c = cap.finish();
    c.assert_no_loss();
    let want: Vec<u8> = parts.concat();
    let send = c.of_conn_dir(conn, Direction::Send);
    let recv = c.of_conn_dir(conn, Direction::Recv);
    assert_eq!(send.len(), 1);
    assert_eq!(recv.len(), 1);
    assert_eq!(stream(send), want);
    assert_eq!(stream(recv), want);
    close(a);
    close(b);
}

#[test]
fn writev_readv_sendmmsg_recvmmsg() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    let conn = conn_of(a, b);
    let Some(cap) = start("writev_readv_sendmmsg_recvmmsg", own_pid()) else {
        return;
    };
    // writev of three pieces, readv into two buffers: one message.
    let parts = [test_bytes(100, 21), test_bytes(5, 22), test_bytes(300, 23)];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: every iovec points into a live buffer.
    let n = unsafe { libc::writev(a, iov.as_ptr(), iov.len() as i32) };
    assert_eq!(n, 405);
    let mut r1 = vec![0u8; 200];
    let mut r2 = vec![0u8; 205];
    let riov = [
        libc::iovec {
            iov_base: r1.as_mut_ptr().cast(),
            iov_len: r1.len(),
        },
        libc::iovec {
            iov_base: r2.as_mut_ptr().cast(),
            iov_len: r2.len(),
        },
    ];
    // SAFETY: as above.
    assert_eq!(unsafe { libc::readv(b, riov.as_ptr(), 2) }, 405);

    // sendmmsg of 5 messages, recvmmsg of them: one event per message.
    let msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| test_bytes(10 + i * 50, 30 + i as u64))
        .collect();
    let mut siov: Vec<libc::iovec> = msgs
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.as_ptr() as *mut _,
            iov_len: m.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdrs with one iovec each are valid arguments.
    let mut hdrs: Vec<libc::mmsghdr> = siov
        .iter_mut()
        .map(|v| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at a live iovec.
    assert_eq!(unsafe { libc::sendmmsg(a, hdrs.as_mut_ptr(), 5, 0) }, 5);
    let mut bufs = vec![vec![0u8; 512]; 5];
    let mut riovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut rhdrs: Vec<libc::mmsghdr> = riovs
        .iter_mut()
        .map(|v| {
            // SAFETY: as above.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at a live iovec.
    let got = unsafe {
        libc::recvmmsg(
            b,
            rhdrs.as_mut_ptr(),
            5,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    assert!(got >= 1);
    let mut received = got as usize;
    while received < 5 {
        // SAFETY: as above, for the headers not yet filled.
        let more = unsafe {
            libc::recvmmsg(
                b,
                rhdrs[received..].as_mut_ptr(),
                (5 - received) as u32,
                0,
                std::ptr::null_mut(),
            )
        };
        assert!(more >= 1);
        received += more as usize;
    }
    let c = cap.finish();
    c.assert_no_loss();
    let send = c.of_conn_dir(conn, Direction::Send);
    let recv = c.of_conn_dir(conn, Direction::Recv);
    assert_eq!(
        send.len(),
        6,
        "one writev and five messages of one sendmmsg"
    );
    assert_eq!(recv.len(), 6);
    assert_eq!(&send[0].data[..], &parts.concat()[..]);
    assert_eq!(&recv[0].data[..], &parts.concat()[..]);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(&send[i + 1].data[..], &m[..], "sendmmsg message {i}");
        assert_eq!(&recv[i + 1].data[..], &m[..], "recvmmsg message {i}");
    }
    close(a);
    close(b);
}

fn big_write(snaplen: Option<u32>) -> Option<(Captured, Vec<u8>, u64)> {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let conn = conn_of(a, b);
    let mut cfg = UnixConfig {
        pids: vec![pid()],
        ..Default::default()
    };
    if let Some(s) = snaplen {
        cfg.snaplen = s;
    }
    let cap = start("big_write", cfg)?;
    let data = test_bytes(1 << 20, 9);
    let n = data.len();
    let reader = std::thread::spawn(move || {
        let got = c_read_exact(b, n);
        close(b);
        got
    });
    // SAFETY: one write of the whole buffer; a blocking stream socket takes it all.
    let w = unsafe { libc::write(a, data.as_ptr().cast(), data.len()) };
    assert_eq!(w as usize, data.len());
    assert_eq!(reader.join().unwrap(), data);
    close(a);
    Some((cap.finish(), data, conn))
}

#[test]
fn a_write_longer_than_snaplen_is_truncated() {
    let _g = lock();
    let Some((c, data, conn)) = big_write(Some(65_536)) else {
        return;
    };
    c.assert_no_loss();
    let send = c.of_conn_dir(conn, Direction::Send);
    assert_eq!(send.len(), 1);
    let e = send[0];
    assert!(e.truncated);
    assert_eq!(e.len, 1 << 20, "the real length is kept");
    assert_eq!(e.data.len(), 65_536);
    assert_eq!(&e.data[..], &data[..65_536]);
}

#[test]
fn one_mib_write_with_the_default_snaplen_is_whole() {
    let _g = lock();
    let Some((c, data, conn)) = big_write(None) else {
        return;
    };
    c.assert_no_loss();
    let send = c.of_conn_dir(conn, Direction::Send);
    assert_eq!(send.len(), 1);
    assert_eq!(stream(send), data);
    let recv = c.of_conn_dir(conn, Direction::Recv);
    assert_eq!(stream(recv), data);
}

const PY_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"hello from python " * 3)
data = b""
while len(data) < 11:
    chunk = s.recv(100)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some("python3")
    } else {
        assert!(!required(), "python3 is needed for this test");
        eprintln!("skipping: python3 not found");
        None
    }
}

#[test]
fn python_peer_is_captured_with_its_pid() {
    let _g = lock();
    let Some(py) = python() else { return };
    let dir = tmpdir("py");
    let path = dir.join("py.sock");
    let p = path.to_str().unwrap().to_string();
    let listener = UnixListener::bind(&path).unwrap();
    let Some(cap) = start("python_peer_is_captured_with_its_pid", path_cfg(&p)) else {
        return;
    };
    let mut child = Command::new(py)
        .arg("-c")
        .arg(PY_CLIENT)
        .arg(&p)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    let (mut srv, _) = listener.accept().unwrap();
    let want = b"hello from python ".repeat(3);
    let mut got = vec![0u8; want.len()];
    srv.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    srv.write_all(b"hi, python!").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out, "hi, python!");
    let c = cap.finish();
    c.assert_no_loss();
    let py_send = stream(
        c.events
            .iter()
            .filter(|e| e.pid == child_pid && e.dir == Direction::Send),
    );
    let py_recv = stream(
        c.events
            .iter()
            .filter(|e| e.pid == child_pid && e.dir == Direction::Recv),
    );
    let our_recv = stream(
        c.events
            .iter()
            .filter(|e| e.pid == pid() && e.dir == Direction::Recv),
    );
    assert_eq!(py_send, want);
    assert_eq!(our_recv, want);
    assert_eq!(py_recv, b"hi, python!");
    for e in &c.events {
        let other = if e.pid == child_pid { pid() } else { child_pid };
        assert_eq!(e.peer_pid, other, "peer pid of {e:?}");
        if e.pid == child_pid {
            assert!(e.comm.starts_with("python"), "comm {}", e.comm);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const PY_SERVER: &str = r#"
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
sys.stdout.write("ready\n"); sys.stdout.flush()
c, _ = s.accept()
data = c.recv(100)
c.sendall(data.upper())
c.close()
"#;

const PY_CONNECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"ping")
sys.stdout.write(s.recv(100).decode())
"#;

#[test]
fn pid_filter_matches_either_end() {
    let _g = lock();
    let Some(py) = python() else { return };
    let dir = tmpdir("pidf");
    let path = dir.join("s.sock");
    let p = path.to_str().unwrap().to_string();
    let mut server = Command::new(py)
        .arg("-c")
        .arg(PY_SERVER)
        .arg(&p)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let server_pid = server.id();
    let mut sout = server.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    sout.read_exact(&mut ready).unwrap();
    let Some(cap) = start(
        "pid_filter_matches_either_end",
        UnixConfig {
            pids: vec![server_pid],
            ..Default::default()
        },
    ) else {
        let _ = server.kill();
        let _ = server.wait();
        return;
    };
    // Traffic of this process that does not involve the server: not captured.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(b"not for the filter").unwrap();
    let mut sink = [0u8; 18];
    b.read_exact(&mut sink).unwrap();
    let client = Command::new(py)
        .arg("-c")
        .arg(PY_CONNECT)
        .arg(&p)
        .output()
        .unwrap();
    assert!(client.status.success());
    assert_eq!(client.stdout, b"PING");
    assert!(server.wait().unwrap().success());
    let c = cap.finish();
    c.assert_no_loss();
    assert_eq!(
        c.events.len(),
        4,
        "client send/recv and server recv/send: {:?}",
        c.events
    );
    for e in &c.events {
        assert!(e.pid == server_pid || e.peer_pid == server_pid, "{e:?}");
        assert_eq!(&*e.path, p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const PY_DGRAM_SERVER: &str = r#"
import socket, sys
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a.bind(sys.argv[1])
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
d, addr = a.recvfrom(100)
a.sendto(d.upper(), addr)
b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
b.bind(sys.argv[2])
a.sendto(b"bound", addr)
for _ in range(2):
    d, addr = b.recvfrom(100)
    b.sendto(d.upper(), addr)
"#;

/// A `pid` filter on a datagram server keeps what clients send to its names
/// and what they receive from them, though their sockets know no peer: names
/// bound before the capture started from the start, a name bound later from
/// the server's first receive on it.
#[test]
fn pid_filter_on_a_datagram_server_keeps_its_clients() {
    let _g = lock();
    let Some(py) = python() else { return };
    let dir = tmpdir("pid-dgram");
    let (a_path, b_path, c_path) = (dir.join("a.sock"), dir.join("b.sock"), dir.join("c.sock"));
    let mut server = Command::new(py)
        .arg("-c")
        .arg(PY_DGRAM_SERVER)
        .arg(&a_path)
        .arg(&b_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let server_pid = server.id();
    let mut go = server.stdin.take().unwrap();
    let mut ready = [0u8; 6];
    server
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    let Some(cap) = start(
        "pid_filter_on_a_datagram_server_keeps_its_clients",
        UnixConfig {
            pids: vec![server_pid],
            ..Default::default()
        },
    ) else {
        let _ = server.kill();
        let _ = server.wait();
        return;
    };
    // Its name is bound before the capture; its first receive starts after
    // (a receive already waiting in the kernel when the probe attaches is
    // not seen by the kernel hooks: see docs/probe.md).
    go.write_all(b"go\n").unwrap();
    let client = UnixDatagram::bind(&c_path).unwrap();
    let ask = |to: &std::path::Path, m: &[u8]| {
        client.send_to(m, to).unwrap();
        let mut buf = [0u8; 100];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let mut buf = [0u8; 100];
    assert_eq!(ask(&a_path, b"one"), b"ONE");
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"bound");
    assert_eq!(ask(&b_path, b"two"), b"TWO");
    assert_eq!(ask(&b_path, b"three"), b"THREE");
    // This process's own traffic with no part of the server: not kept.
    let other = UnixDatagram::bind(dir.join("other.sock")).unwrap();
    client
        .send_to(b"unrelated", dir.join("other.sock"))
        .unwrap();
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"unrelated");
    assert!(server.wait().unwrap().success());
    let c = cap.finish();
    c.assert_no_loss();
    let me = pid();
    let mine = |d: Direction| -> Vec<&[u8]> {
        c.events
            .iter()
            .filter(|e| e.pid == me && e.dir == d)
            .map(|e| &e.data[..])
            .collect()
    };
    let theirs = |d: Direction| -> Vec<&[u8]> {
        c.events
            .iter()
            .filter(|e| e.pid == server_pid && e.dir == d)
            .map(|e| &e.data[..])
            .collect()
    };
    assert_eq!(theirs(Direction::Recv), [&b"one"[..], b"two", b"three"]);
    assert_eq!(
        theirs(Direction::Send),
        [&b"ONE"[..], b"bound", b"TWO", b"THREE"]
    );
    // "two" went to b.sock before the server had received anything on it:
    // that first datagram to a name bound after the start is not kept.
    assert_eq!(mine(Direction::Send), [&b"one"[..], b"three"]);
    assert_eq!(
        mine(Direction::Recv),
        [&b"ONE"[..], b"bound", b"TWO", b"THREE"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn path_prefix_abstract_comm_and_direction_filters() {
    let _g = lock();
    let dir = tmpdir("filters");
    let keep = dir.join("keep-1.sock");
    let drop_ = dir.join("other.sock");
    let l_keep = UnixListener::bind(&keep).unwrap();
    let l_drop = UnixListener::bind(&drop_).unwrap();
    let abs_name = format!("spf-test-filter-{}", pid());
    let abs = SocketAddr::from_abstract_name(abs_name.as_bytes()).unwrap();
    let l_abs = UnixListener::bind_addr(&abs).unwrap();

    let talk = |l: &UnixListener, mut c: UnixStream, msg: &[u8]| {
        let (mut s, _) = l.accept().unwrap();
        c.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        s.write_all(msg).unwrap();
        c.read_exact(&mut got).unwrap();
    };

    // Prefix: only keep-*.
    let prefix = format!("{}/keep-*", dir.display());
    let Some(cap) = start("filters/prefix", path_cfg(&prefix)) else {
        return;
    };
    talk(&l_keep, UnixStream::connect(&keep).unwrap(), b"kept");
    talk(&l_drop, UnixStream::connect(&drop_).unwrap(), b"dropped");
    talk(&l_abs, UnixStream::connect_addr(&abs).unwrap(), b"abstract");
    let c = cap.finish();
    assert_eq!(c.events.len(), 4);
    assert!(
        c.events
            .iter()
            .all(|e| *e.path == *keep.to_str().unwrap() && &e.data[..] == b"kept")
    );

    // Abstract, send direction only.
    let cfg = UnixConfig {
        direction: DirectionFilter::Send,
        ..path_cfg(&format!("@{abs_name}"))
    };
    let Some(cap) = start("filters/abstract+direction", cfg) else {
        return;
    };
    talk(&l_keep, UnixStream::connect(&keep).unwrap(), b"kept");
    talk(&l_abs, UnixStream::connect_addr(&abs).unwrap(), b"abstract");
    let c = cap.finish();
    assert_eq!(c.events.len(), 2, "{:?}", c.events);
    assert!(
        c.events
            .iter()
            .all(|e| e.dir == Direction::Send && &e.data[..] == b"abstract")
    );

    // Comm: the thread's name is its comm.
    let tname = format!("spfc{}", pid() % 100_000);
    let cfg = UnixConfig {
        comms: vec![tname.clone()],
        ..Default::default()
    };
    let Some(cap) = start("filters/comm", cfg) else {
        return;
    };
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = std::thread::Builder::new()
        .name(tname.clone())
        .spawn(move || {
            a.write_all(b"from the named thread").unwrap();
            a
        })
        .unwrap();
    let _a = t.join().unwrap();
    let mut got = [0u8; 21];
    b.read_exact(&mut got).unwrap();
    let c = cap.finish();
    assert_eq!(c.events.len(), 1, "{:?}", c.events);
    assert_eq!(&*c.events[0].comm, tname);
    assert_eq!(&c.events[0].data[..], b"from the named thread");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_connections_every_byte_in_order() {
    let _g = lock();
    const CONNS: usize = 32;
    const MSGS: usize = 1000;
    let dir = tmpdir("many");
    let path = dir.join("many.sock");
    let p = path.to_str().unwrap().to_string();
    let listener = UnixListener::bind(&path).unwrap();
    // The client's reader takes everything in one read_exact, which can be one
    // big read: capture it whole.
    let cfg = UnixConfig {
        ring_size: 64 << 20,
        snaplen: 1 << 20,
        ..path_cfg(&p)
    };
    let Some(cap) = start("concurrent_connections_every_byte_in_order", cfg) else {
        return;
    };
    let gettid = || {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    };
    let server = std::thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..CONNS {
            let (mut s, _) = listener.accept().unwrap();
            handles.push(std::thread::spawn(move || {
                // Echo everything back until the client closes.
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
                (ino(s.as_raw_fd()), gettid())
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let clients: Vec<_> = (0..CONNS)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                let mut r = s.try_clone().unwrap();
                let total: usize = (0..MSGS).map(|m| 1 + (m * 7 + i) % 200).sum();
                let reader = std::thread::spawn(move || {
                    let mut got = vec![0u8; total];
                    r.read_exact(&mut got).unwrap();
                    (got, gettid())
                });
                let mut sent = Vec::with_capacity(total);
                for m in 0..MSGS {
                    let msg = test_bytes(1 + (m * 7 + i) % 200, (i * MSGS + m) as u64);
                    s.write_all(&msg).unwrap();
                    sent.extend_from_slice(&msg);
                }
                let (got, reader_tid) = reader.join().unwrap();
                assert_eq!(got, sent);
                s.shutdown(std::net::Shutdown::Write).unwrap();
                (ino(s.as_raw_fd()), gettid(), reader_tid, sent, s)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let handlers = server.join().unwrap();
    let c = cap.finish();
    c.assert_no_loss();

    let mut by_flow: HashMap<(u32, Direction), Vec<&Arc<Event>>> = HashMap::new();
    for e in &c.events {
        by_flow.entry((e.tid, e.dir)).or_default().push(e);
    }
    let flow = |tid: u32, dir: Direction| -> (u64, Vec<u8>) {
        let evs = by_flow
            .get(&(tid, dir))
            .unwrap_or_else(|| panic!("no {dir} events of thread {tid}"));
        let conn = evs[0].conn;
        assert!(
            evs.iter().all(|e| e.conn == conn),
            "one conn for one connection"
        );
        (conn, stream(evs.iter().copied()))
    };
    let mut server_of: HashMap<u64, (u64, u32)> = HashMap::new();
    for (srv_ino, tid) in &handlers {
        let (conn, _) = flow(*tid, Direction::Recv);
        assert!(
            server_of.insert(conn, (*srv_ino, *tid)).is_none(),
            "two connections share conn {conn}"
        );
    }
    for (cli_ino, writer, reader, sent, _s) in &results {
        // What the client wrote is what the server read; the echo is what the
        // server wrote and the client read. All four under one conn id.
        let (conn, data) = flow(*writer, Direction::Send);
        assert!(data == *sent, "client send stream differs");
        let (conn2, data) = flow(*reader, Direction::Recv);
        assert_eq!(conn2, conn);
        assert!(data == *sent, "client recv stream differs");
        let (srv_ino, srv_tid) = server_of[&conn];
        // The lower inode of the two, unless the client sent before the
        // server's accept() gave its socket an inode: then the client's.
        assert!(
            conn == srv_ino.min(*cli_ino) || conn == *cli_ino,
            "conn {conn}: client {cli_ino}, server {srv_ino}"
        );
        let (conn3, data) = flow(srv_tid, Direction::Recv);
        assert_eq!(conn3, conn);
        assert!(data == *sent, "server recv stream differs");
        let (conn4, data) = flow(srv_tid, Direction::Send);
        assert_eq!(conn4, conn);
        assert!(data == *sent, "server send stream differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_ring_reports_every_drop() {
    let _g = lock();
    const N: usize = 20_000;
    let dir = tmpdir("tiny");
    let path = dir.join("tiny.sock");
    let p = path.to_str().unwrap().to_string();
    let rx = UnixDatagram::bind(&path).unwrap();
    let tx = UnixDatagram::unbound().unwrap();
    tx.connect(&path).unwrap();
    // A snaplen that fits the 64-byte datagrams keeps one event within what a
    // 4 KiB ring can hold at all.
    let cfg = UnixConfig {
        ring_size: 4096,
        snaplen: 64,
        ..path_cfg(&p)
    };
    let Some(cap) = start("tiny_ring_reports_every_drop", cfg) else {
        return;
    };
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..N {
            rx.recv(&mut buf).unwrap();
        }
    });
    let msg = [0x5au8; 64];
    for _ in 0..N {
        tx.send(&msg).unwrap();
    }
    reader.join().unwrap();
    let c = cap.finish();
    let lost: u64 = c.lost.iter().map(|l| l.count).sum();
    assert!(
        lost > 0,
        "a 4 KiB ring cannot hold a burst of {N} datagrams"
    );
    assert_eq!(
        lost, c.summary.lost,
        "every drop is reported as a Lost item"
    );
    assert_eq!(
        c.events.len() as u64 + lost,
        2 * N as u64,
        "every datagram sent and received is either captured or counted as lost"
    );
    assert!(c.events.iter().all(|e| e.data[..] == msg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_builds_the_probe() {
    let _g = lock();
    let mut reg = spf_pipeline::config::Registry::new();
    spf_probes::register(&mut reg);
    assert!(reg.source_types().contains(&"unix"));
    let bad = spf_pipeline::config::parse(
        &reg,
        "t.toml",
        "[source]\ntype = \"unix\"\nring_size = 3000\n",
    );
    let msg = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("source.ring_size: must be a power of two"),
        "{msg}"
    );
}

/// The feature probes behind the "this kernel lacks ..." error find everything
/// on a kernel that runs the probe: they must not blame a kernel that works.
#[test]
fn every_kernel_feature_the_probe_needs_is_found_here() {
    let _g = lock();
    if !crate::capture::bpf_ready("every_kernel_feature_the_probe_needs_is_found_here") {
        return;
    }
    assert_eq!(spf_probes::missing_kernel_feature(), None);
    // And the probe does load on this kernel.
    let Some(cap) = start(
        "every_kernel_feature_the_probe_needs_is_found_here",
        own_pid(),
    ) else {
        return;
    };
    cap.finish().assert_no_loss();
}

#[test]
fn without_privileges_the_error_says_what_to_do() {
    // Run the CLI as an unprivileged user: the probe must refuse in one line
    // that says how to fix it, not fail somewhere inside libbpf.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("skipping without_privileges_the_error_says_what_to_do: needs root and setpriv");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_spf"))
        .args(["run", "--path", "/nonexistent/spf-test.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("CAP_BPF"),
        "stderr: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

fn sockaddr_for(path: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in a.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + path.len()) as libc::socklen_t;
    (a, len)
}

#[test]
fn full_108_byte_path() {
    let _g = lock();
    let dir = tmpdir("long");
    let prefix = format!("{}/", dir.display());
    let path = format!("{prefix}{}", "p".repeat(108 - prefix.len()));
    assert_eq!(path.len(), 108);
    let (addr, len) = sockaddr_for(path.as_bytes());
    // SAFETY: plain socket calls on fds this test owns, with a valid address.
    let (srv_l, cli) = unsafe {
        let l = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert_eq!(
            libc::bind(l, (&addr as *const libc::sockaddr_un).cast(), len),
            0,
            "bind"
        );
        assert_eq!(libc::listen(l, 1), 0);
        let c = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert_eq!(
            libc::connect(c, (&addr as *const libc::sockaddr_un).cast(), len),
            0,
            "connect"
        );
        (l, c)
    };
    // SAFETY: accepting on the listener this test owns.
    let srv = unsafe { libc::accept(srv_l, std::ptr::null_mut(), std::ptr::null_mut()) };
    assert!(srv >= 0);
    let Some(cap) = start("full_108_byte_path", path_cfg(&path)) else {
        return;
    };
    c_write(cli, b"a name with no room for its NUL");
    assert_eq!(c_read_exact(srv, 31), b"a name with no room for its NUL");
    let c = cap.finish();
    c.assert_no_loss();
    assert_eq!(c.events.len(), 2, "{:?}", c.events);
    for e in &c.events {
        assert_eq!(&*e.path, path);
    }
    for fd in [cli, srv, srv_l] {
        close(fd);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dgram_sendto_abstract_name() {
    let _g = lock();
    let name = format!("spf-test-dgram-abstract-{}", pid());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    let tx = UnixDatagram::unbound().unwrap();
    let rx_ino = ino(rx.as_raw_fd());
    let Some(cap) = start("dgram_sendto_abstract_name", path_cfg(&format!("@{name}"))) else {
        return;
    };
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| test_bytes(20 + i, 50 + i as u64)).collect();
    let mut buf = [0u8; 256];
    for m in &msgs {
        assert_eq!(tx.send_to_addr(m, &addr).unwrap(), m.len());
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &m[..]);
    }
    let c = cap.finish();
    c.assert_no_loss();
    assert_eq!(c.events.len(), 2 * msgs.len(), "{:?}", c.events);
    for e in &c.events {
        assert_eq!(&*e.path, format!("@{name}"));
        assert_eq!(e.conn, rx_ino, "{e:?}");
        assert_eq!(e.sock, SockKind::Dgram);
    }
}

#[test]
fn connections_one_after_another_get_their_own_ids() {
    // A closed connection's socks are reused at once for the next one: the
    // next connection must not inherit the old id.
    let _g = lock();
    let dir = tmpdir("seq");
    let path = dir.join("seq.sock");
    let p = path.to_str().unwrap().to_string();
    let listener = UnixListener::bind(&path).unwrap();
    let Some(cap) = start(
        "connections_one_after_another_get_their_own_ids",
        path_cfg(&p),
    ) else {
        return;
    };
    const N: usize = 20;
    for i in 0..N {
        let mut cli = UnixStream::connect(&path).unwrap();
        let (mut srv, _) = listener.accept().unwrap();
        cli.write_all(format!("request {i}").as_bytes()).unwrap();
        let mut buf = [0u8; 32];
        let n = srv.read(&mut buf).unwrap();
        srv.write_all(&buf[..n]).unwrap();
        let _ = cli.read(&mut buf).unwrap();
    }
    let c = cap.finish();
    c.assert_no_loss();
    let mut conns: HashMap<u64, Vec<String>> = HashMap::new();
    for e in &c.events {
        conns
            .entry(e.conn)
            .or_default()
            .push(String::from_utf8_lossy(&e.data).into_owned());
    }
    assert_eq!(conns.len(), N, "one id per connection: {conns:?}");
    for texts in conns.values() {
        assert_eq!(texts.len(), 4);
        assert!(
            texts.iter().all(|t| t == &texts[0]),
            "one connection's events: {texts:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_closing_ends_the_connection_and_a_half_close_does_not() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let (ab, cd) = (conn_of(a, b), conn_of(c, d));
    let Some(cap) = start(
        "a_peer_closing_ends_the_connection_and_a_half_close_does_not",
        own_pid(),
    ) else {
        return;
    };
    c_write(a, b"bye");
    assert_eq!(c_read_exact(b, 3), b"bye");
    c_write(a, b"later");
    close(a);
    let mut buf = [0u8; 8];
    // A read of zero bytes returns 0 while data still waits: no end yet.
    // SAFETY: a read of zero bytes into a valid buffer.
    assert_eq!(unsafe { libc::read(b, buf.as_mut_ptr().cast(), 0) }, 0);
    assert_eq!(c_read_exact(b, 5), b"later");
    // SAFETY: reading into a buffer of the given size.
    let n = unsafe { libc::read(b, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, 0, "end-of-file after the peer closed");
    // A half close: d reads end-of-file but may still send.
    // SAFETY: plain syscall on an fd this test owns.
    assert_eq!(unsafe { libc::shutdown(c, libc::SHUT_WR) }, 0);
    // SAFETY: as above.
    let n = unsafe { libc::read(d, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, 0);
    c_write(d, b"still here");
    assert_eq!(c_read_exact(c, 10), b"still here");
    let c2 = cap.finish();
    close(b);
    close(c);
    close(d);
    c2.assert_no_loss();

    let closes: Vec<_> = c2.closed.iter().filter(|(k, _)| *k == ab).collect();
    let recv_ab = c2.of_conn_dir(ab, Direction::Recv);
    assert_eq!(stream(recv_ab), b"byelater");
    assert_eq!(closes.len(), 1, "one close for the pair: {:?}", c2.closed);
    let last_data = c2.of_conn(ab).iter().map(|e| e.ts_ns).max().unwrap();
    assert!(closes[0].1 >= last_data, "the close comes after the data");
    assert!(
        !c2.closed.iter().any(|(k, _)| *k == cd),
        "a half close is no close: {:?}",
        c2.closed
    );
    let sent = c2.of_conn_dir(cd, Direction::Send);
    assert_eq!(stream(sent), b"still here");
}

/// A send that fails because the peer is gone: its errno.
fn send_to_gone_peer(fd: RawFd) -> i32 {
    // SAFETY: a one-byte send from a valid buffer; MSG_NOSIGNAL keeps the
    // test process from SIGPIPE.
    let n = unsafe { libc::send(fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    assert_eq!(n, -1, "the send to a closed peer fails");
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

#[test]
fn a_peer_gone_ends_the_connection() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let (e, f) = socketpair(libc::SOCK_STREAM);
    let (ab, cd, ef) = (conn_of(a, b), conn_of(c, d), conn_of(e, f));
    let Some(cap) = start("a_peer_gone_ends_the_connection", own_pid()) else {
        return;
    };
    // b leaves with a's bytes unread: a's next receive fails with
    // ECONNRESET (and reads no end-of-file).
    c_write(a, b"unread");
    close(b);
    let mut buf = [0u8; 8];
    // SAFETY: reading into a buffer of the given size.
    let n = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ECONNRESET)
    );
    // d leaves with nothing unread: c's send fails with EPIPE.
    close(d);
    assert_eq!(send_to_gone_peer(c), libc::EPIPE);
    // A half close is no end: e may not send any more (EPIPE), but f may.
    // SAFETY: plain syscall on an fd this test owns.
    assert_eq!(unsafe { libc::shutdown(f, libc::SHUT_RD) }, 0);
    assert_eq!(send_to_gone_peer(e), libc::EPIPE);
    let cap = cap.finish();
    for fd in [a, c, e, f] {
        close(fd);
    }
    cap.assert_no_loss();
    for conn in [ab, cd] {
        let closes = cap.closed.iter().filter(|(k, _)| *k == conn).count();
        assert_eq!(closes, 1, "{conn}: {:?}", cap.closed);
    }
    assert!(
        !cap.closed.iter().any(|(k, _)| *k == ef),
        "a half close is no close: {:?}",
        cap.closed
    );
}

#[test]
fn a_peer_gone_with_its_last_words_unread_ends_the_connection_after_them() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let ab = conn_of(a, b);
    let Some(cap) = start("a_peer_gone_with_its_last_words_unread", own_pid()) else {
        return;
    };
    // A server answers and leaves without reading the rest of the request
    // (a 413 to an upload).
    c_write(a, b"PUT /big");
    c_write(b, b"413");
    close(b);
    // The client's next write fails; the answer still waits to be read.
    let e = send_to_gone_peer(a);
    assert!(e == libc::ECONNRESET || e == libc::EPIPE, "{e}");
    assert_eq!(c_read_exact(a, 3), b"413");
    let mut buf = [0u8; 8];
    // SAFETY: reading into a buffer of the given size.
    let n = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n <= 0, "nothing more to read");
    let cap = cap.finish();
    close(a);
    cap.assert_no_loss();
    let closes: Vec<_> = cap.closed.iter().filter(|(k, _)| *k == ab).collect();
    assert_eq!(closes.len(), 1, "{:?}", cap.closed);
    let answer = cap
        .of_conn(ab)
        .iter()
        .filter(|e| e.dir == Direction::Recv && e.len == 3)
        .map(|e| e.ts_ns)
        .max()
        .expect("the answer's receive");
    assert!(
        closes[0].1 >= answer,
        "the end comes after the answer is read"
    );
}

#[test]
fn an_empty_seqpacket_message_is_no_end() {
    let _g = lock();
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    let conn = conn_of(a, b);
    let Some(cap) = start("an_empty_seqpacket_message_is_no_end", own_pid()) else {
        return;
    };
    // SAFETY: a send of zero bytes from a valid pointer.
    assert_eq!(unsafe { libc::send(a, b"".as_ptr().cast(), 0, 0) }, 0);
    c_write(a, b"after");
    close(a);
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    loop {
        // SAFETY: reading into a buffer of the given size.
        let n = unsafe { libc::read(b, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 0);
        got.push(buf[..n as usize].to_vec());
        if got.len() == 3 {
            break;
        }
    }
    assert_eq!(got, [b"".to_vec(), b"after".to_vec(), b"".to_vec()]);
    let c = cap.finish();
    close(b);
    c.assert_no_loss();
    let closes: Vec<_> = c.closed.iter().filter(|(k, _)| *k == conn).collect();
    assert_eq!(
        closes.len(),
        1,
        "only the last read is the end: {:?}",
        c.closed
    );
    let last = c.of_conn(conn).iter().map(|e| e.ts_ns).max().unwrap();
    assert!(closes[0].1 >= last);
}

/// A Python script that waits for a line on stdin, then sends its tag
/// (`argv[1]`) from a child it forks and from itself, each on a connection of
/// its own to the server socket `argv[2]`.
const FAMILY: &str = r#"
import os, socket, sys
sys.stdin.readline()
def send(msg):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[2])
    s.sendall(msg.encode())
    s.close()
pid = os.fork()
if pid == 0:
    send("child of " + sys.argv[1])
    os._exit(0)
os.waitpid(pid, 0)
send("parent " + sys.argv[1])
"#;

/// Accepts `n` connections on `listener` and returns what each sent.
fn accept_all(listener: &UnixListener, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            got
        })
        .collect()
}

#[test]
fn follow_keeps_a_process_and_what_it_forks_only() {
    let _g = lock();
    let Some(py) = python() else { return };
    let py = &py;
    let dir = tmpdir("follow");
    let path = dir.join("srv.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let spawn = |tag: &str| {
        Command::new(py)
            .arg("-c")
            .arg(FAMILY)
            .arg(tag)
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut followed = spawn("followed");
    let mut other = spawn("other");
    let cfg = UnixConfig {
        follow: vec![followed.id()],
        ..UnixConfig::default()
    };
    let Some(cap) = start("follow_keeps_a_process_and_what_it_forks_only", cfg) else {
        for mut c in [followed, other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        return;
    };
    for c in [&mut followed, &mut other] {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut got = accept_all(&listener, 4);
    got.sort();
    assert_eq!(
        got,
        [
            "child of followed",
            "child of other",
            "parent followed",
            "parent other"
        ]
    );
    assert!(followed.wait().unwrap().success());
    assert!(other.wait().unwrap().success());
    let c = cap.finish();
    c.assert_no_loss();
    let mut sent: Vec<String> = c
        .events
        .iter()
        .filter(|e| e.dir == Direction::Send)
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, ["child of followed", "parent followed"]);
    assert!(
        c.events.iter().all(|e| e.pid != pid()),
        "the server is not followed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cgroup_filter_keeps_the_processes_of_one_cgroup() {
    let _g = lock();
    let Some(py) = python() else { return };
    let py = &py;
    let root = spf_probes::containers::cgroup_root();
    let name = format!("spf-test-{}", pid());
    let cg_dir = root.join(&name);
    if let Err(e) = std::fs::create_dir(&cg_dir) {
        assert!(
            !required(),
            "cannot make a cgroup under {}: {e}",
            root.display()
        );
        eprintln!("skipping cgroup_filter test: cannot make a cgroup: {e}");
        return;
    }
    let dir = tmpdir("cgroup");
    let path = dir.join("srv.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let spawn = |tag: &str| {
        Command::new(py)
            .arg("-c")
            .arg(FAMILY)
            .arg(tag)
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut inside = spawn("inside");
    let mut outside = spawn("outside");
    // Into the cgroup, as a container runtime would put a container.
    std::fs::write(cg_dir.join("cgroup.procs"), inside.id().to_string()).unwrap();
    let cg = spf_probes::containers::cgroup_id(&format!("/{name}")).unwrap();
    let cfg = UnixConfig {
        cgroups: vec![cg],
        ..UnixConfig::default()
    };
    let started = start("cgroup_filter_keeps_the_processes_of_one_cgroup", cfg);
    for c in [&mut inside, &mut outside] {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let got = accept_all(&listener, 4);
    assert_eq!(got.len(), 4);
    assert!(inside.wait().unwrap().success());
    assert!(outside.wait().unwrap().success());
    let result = started.map(|cap| cap.finish());
    std::fs::remove_dir(&cg_dir).unwrap();
    let Some(c) = result else { return };
    c.assert_no_loss();
    let mut sent: Vec<String> = c
        .events
        .iter()
        .filter(|e| e.dir == Direction::Send)
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    sent.sort();
    // The child forked inside the cgroup stays in it.
    assert_eq!(sent, ["child of inside", "parent inside"]);
    assert!(
        c.events.iter().all(|e| e.cgroup == cg.id),
        "every event names the cgroup"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The smallest ring `validate` accepts for a snaplen holds one whole event of
/// that snaplen from a named socket (the largest records the probe writes for
/// it), and the next smaller ring is refused.
#[test]
fn the_smallest_ring_accepted_holds_one_whole_event() {
    let _g = lock();
    let dir = tmpdir("ring-bound");
    let path = dir.join("ring.sock");
    let p = path.to_str().unwrap().to_string();
    let snaplen = 65_536u32;
    let need = UnixConfig::ring_bytes_for_event(snaplen);
    let ring = (need + 1).next_power_of_two();
    let cfg = UnixConfig {
        snaplen,
        ring_size: ring,
        // One event in the ring at a time: the receiver's copy would be another.
        direction: DirectionFilter::Send,
        ..path_cfg(&p)
    };
    let smaller = UnixConfig {
        ring_size: ring / 2,
        ..cfg.clone()
    };
    let refused = smaller.validate();
    assert!(
        refused
            .iter()
            .any(|(f, m)| *f == "ring_size" && m.contains("snaplen")),
        "{refused:?}"
    );
    let listener = UnixListener::bind(&path).unwrap();
    let Some(cap) = start("the_smallest_ring_accepted_holds_one_whole_event", cfg) else {
        return;
    };
    let mut client = UnixStream::connect(&path).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let data = test_bytes(snaplen as usize, 5);
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; snaplen as usize];
        server.read_exact(&mut got).unwrap();
        got
    });
    client.write_all(&data).unwrap();
    assert_eq!(reader.join().unwrap(), data);
    let c = cap.finish();
    c.assert_no_loss();
    let sends = c.of_dir(Direction::Send);
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].data.len(), snaplen as usize);
    assert_eq!(stream(sends), data);
    let _ = std::fs::remove_dir_all(&dir);
}
