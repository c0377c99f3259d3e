//! A recording relay, for tests that compare what spf makes of a connection
//! with what really went over it: a Unix socket in front of a real server
//! that copies both ways and records every read as a connection-view event
//! (each byte once, seen from its sender: the sender's pid and command as
//! SO_PEERCRED gives them, its role, the byte position in its direction), as
//! the connection stage hands them to decoders.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spf_pipeline::{Direction, Event, Role, SockKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

/// A process at one end of a relayed connection.
#[derive(Debug, Clone)]
struct Peer {
    pid: u32,
    comm: Arc<str>,
}

fn peer_of(s: &UnixStream) -> Peer {
    let pid = s
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map_or(0, |p| p as u32);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Peer {
        pid,
        comm: Arc::from(comm.trim_end()),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One direction of one relayed connection.
struct OneWay {
    /// The relay's socket, as the events' `path`.
    path: Arc<str>,
    conn: u64,
    from_client: bool,
    sender: Peer,
    receiver: Peer,
}

/// Events recorded by the relays, in the order they happened.
#[derive(Default)]
pub struct Recording {
    events: Mutex<Vec<Arc<Event>>>,
    seq: AtomicU64,
    conns: AtomicU64,
    /// Pumps still copying.
    active: AtomicU64,
}

impl Recording {
    /// `data`, read from `d`'s sender at stream offset `pos`.
    fn record(&self, d: &OneWay, pos: u64, data: &[u8]) {
        // Under the lock: sequence numbers and timestamps in one order.
        let mut events = self.events.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let (client, server) = (d.conn * 2, d.conn * 2 + 1);
        let (socket, peer_socket) = if d.from_client {
            (client, server)
        } else {
            (server, client)
        };
        events.push(Arc::new(Event {
            seq,
            ts_ns: monotonic_ns(),
            time_ns,
            pid: d.sender.pid,
            tid: d.sender.pid,
            comm: Arc::clone(&d.sender.comm),
            peer_pid: d.receiver.pid,
            peer_comm: Arc::clone(&d.receiver.comm),
            path: Arc::clone(&d.path),
            sock: SockKind::Stream,
            dir: Direction::Send,
            conn: d.conn,
            socket,
            peer_socket,
            role: if d.from_client {
                Role::Client
            } else {
                Role::Server
            },
            pos: Some(pos),
            len: data.len() as u64,
            data: Bytes::copy_from_slice(data),
            via: Some(Direction::Send),
            ..Event::default()
        }));
    }

    pub fn events(&self) -> Vec<Arc<Event>> {
        self.events.lock().unwrap().clone()
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }

    /// Waits until every relayed connection has closed both ways.
    pub async fn closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.active.load(Ordering::SeqCst) != 0 {
            assert!(
                Instant::now() < deadline,
                "relayed connections still open after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Puts a recording relay in front of `upstream`, at `dir/NAME.relay.sock`;
/// returns that path. Runs on the caller's tokio runtime.
pub fn front(dir: &Path, name: &str, upstream: &Path, rec: &Arc<Recording>) -> PathBuf {
    let front = dir.join(format!("{name}.relay.sock"));
    let l = UnixListener::bind(&front).unwrap();
    let path: Arc<str> = Arc::from(front.to_str().unwrap());
    tokio::spawn(relay(l, upstream.to_path_buf(), Arc::clone(rec), path));
    front
}

/// Accepts on `listen`, connects each client to `upstream`, copies both ways
/// and records every read.
async fn relay(listen: UnixListener, upstream: PathBuf, rec: Arc<Recording>, path: Arc<str>) {
    loop {
        let Ok((client, _)) = listen.accept().await else {
            return;
        };
        let server = UnixStream::connect(&upstream)
            .await
            .expect("relay: connect upstream");
        let (c, s) = (peer_of(&client), peer_of(&server));
        let conn = 1 + rec.conns.fetch_add(1, Ordering::SeqCst);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        rec.active.fetch_add(2, Ordering::SeqCst);
        let direction = |from_client, sender: &Peer, receiver: &Peer| OneWay {
            path: Arc::clone(&path),
            conn,
            from_client,
            sender: sender.clone(),
            receiver: receiver.clone(),
        };
        tokio::spawn(pump(cr, sw, direction(true, &c, &s), Arc::clone(&rec)));
        tokio::spawn(pump(sr, cw, direction(false, &s, &c), Arc::clone(&rec)));
    }
}

async fn pump(
    mut r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    d: OneWay,
    rec: Arc<Recording>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        rec.record(&d, pos, &buf[..n]);
        pos += n as u64;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    rec.active.fetch_sub(1, Ordering::SeqCst);
}
