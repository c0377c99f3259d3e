//! Throughput of the pcapng sink: connection view events (16 connections,
//! both directions interleaved) handed to the sink as the runner hands them
//! (`Sink::event`), written to a file, best of five rounds.
//!
//!     cargo bench -p spf-sinks --bench pcapng
//!
//! The file goes to the temporary directory (`TMPDIR`, e.g. `/dev/shm` to
//! leave the disk out of it). Prints packets/s and payload bytes/s for
//! 64-byte and 64 KiB payloads.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use spf_pipeline::config::{BuildContext, SinkConfig};
use spf_pipeline::{Direction, Event, Role};
use spf_sinks::pcapng::PcapngConfig;

const CONNS: u64 = 16;

fn events(n: usize, payload: usize) -> Vec<Arc<Event>> {
    let data = Bytes::from((0..payload).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>());
    let client: Arc<str> = Arc::from("bench-client");
    let server: Arc<str> = Arc::from("bench-server");
    let path: Arc<str> = Arc::from("/run/bench.sock");
    let mut pos = vec![0u64; (CONNS * 2) as usize];
    (0..n)
        .map(|i| {
            let conn = i as u64 % CONNS;
            let from_client = (i as u64 / CONNS) % 2 == 0;
            let side = (conn * 2 + u64::from(!from_client)) as usize;
            let p = pos[side];
            pos[side] += payload as u64;
            let (pid, peer, comm, peer_comm, role) = if from_client {
                (100, 200, &client, &server, Role::Client)
            } else {
                (200, 100, &server, &client, Role::Server)
            };
            Arc::new(Event {
                seq: i as u64,
                ts_ns: 1_000 + i as u64 * 100,
                time_ns: 1_764_000_000_000_000_000 + i as u64 * 100,
                pid,
                tid: pid,
                comm: Arc::clone(comm),
                peer_pid: peer,
                peer_comm: Arc::clone(peer_comm),
                path: Arc::clone(&path),
                dir: Direction::Send,
                conn,
                socket: conn * 2 + u64::from(!from_client) + 1000,
                peer_socket: conn * 2 + u64::from(from_client) + 1000,
                role,
                pos: Some(p),
                len: payload as u64,
                data: data.clone(),
                via: Some(Direction::Send),
                ..Event::default()
            })
        })
        .collect()
}

fn round(dir: &std::path::Path, events: &[Arc<Event>]) -> (f64, u64) {
    let path = dir.join("bench.pcapng");
    let _ = std::fs::remove_file(&path);
    let ctx = BuildContext {
        decoder: "raw".into(),
        ..BuildContext::default()
    };
    let mut sink = PcapngConfig {
        path: path.clone(),
        comments: true,
    }
    .build(&ctx)
    .expect("sink");
    let start = Instant::now();
    for e in events {
        sink.event(e).expect("event");
    }
    sink.close().expect("close");
    let secs = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&path);
    (secs, size)
}

fn case(dir: &std::path::Path, name: &str, n: usize, payload: usize) {
    let events = events(n, payload);
    let segments_per_event = payload.div_ceil(65535 - 40).max(1);
    let packets = n * segments_per_event;
    let mut best = f64::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let (secs, s) = round(dir, &events);
        best = best.min(secs);
        size = s;
    }
    println!(
        "{name:<6} {n:>9} events x {payload:>6} B: {best:>6.3} s  {:>10.0} packets/s  {:>7.0} MB/s payload  ({} MB written)",
        packets as f64 / best,
        (n * payload) as f64 / best / 1e6,
        size / 1_000_000,
    );
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("spf-bench")
        .tempdir()
        .expect("tempdir");
    println!(
        "pcapng sink, connection view events, file in {}",
        dir.path().parent().unwrap_or(dir.path()).display()
    );
    case(dir.path(), "64B", 1_000_000, 64);
    case(dir.path(), "64KiB", 16_384, 64 * 1024);
}
