//! The http1 decoder on one core: a keep-alive connection with small JSON
//! bodies (exchanges per second) and one with 64 KiB bodies (bytes per
//! second), in the connection view, each decoded alone and decoded with every
//! record written as an NDJSON line as a sink does.
//!
//!     cargo bench -p spf-decoders --bench http1
//!
//! Rounds alternate between the variants and the best round of each is
//! reported (with the median): on a shared machine other processes only ever
//! slow a round down.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use spf_decoders::http1::{Http1, Http1Config};
use spf_decoders::http2::Http2Config;
use spf_pipeline::{BuildContext, Decoder, Direction, Event, Record, Role, SockKind};

fn event(seq: u64, client: bool, data: Vec<u8>) -> Arc<Event> {
    Arc::new(Event {
        seq,
        ts_ns: seq * 1000,
        time_ns: 1_700_000_000_000_000_000 + seq * 1000,
        pid: if client { 1234 } else { 4321 },
        tid: if client { 1234 } else { 4321 },
        comm: Arc::from(if client { "client" } else { "dockerd" }),
        peer_pid: if client { 4321 } else { 1234 },
        path: Arc::from("/run/docker.sock"),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn: 7,
        socket: if client { 10 } else { 11 },
        peer_socket: if client { 11 } else { 10 },
        role: if client { Role::Client } else { Role::Server },
        len: data.len() as u64,
        data: data.into(),
        via: Some(Direction::Send),
        ..Event::default()
    })
}

/// A keep-alive conversation: `n` requests, each answered by a response
/// with a body of `body` bytes, one write each.
fn conversation(n: usize, body: usize) -> Vec<Arc<Event>> {
    let mut evs = Vec::with_capacity(2 * n);
    for i in 0..n {
        let req = format!(
            "GET /v1.43/containers/{:016x}/json HTTP/1.1\r\nHost: api.moby.localhost\r\n\
             User-Agent: Docker-Client/24.0.7 (linux)\r\nAccept: application/json\r\n\r\n",
            i * 7919
        );
        evs.push(event(2 * i as u64, true, req.into_bytes()));
        let payload: Vec<u8> = if body <= 256 {
            format!(
                "{{\"Id\":\"{:016x}\",\"State\":{{\"Status\":\"running\",\"Pid\":{}}}}}",
                i,
                1000 + i
            )
            .into_bytes()
        } else {
            (0..body)
                .map(|j| b"abcdefghijklmnopqrstuvwxyz\n"[j % 27])
                .collect()
        };
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\n\
             Date: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        resp.extend_from_slice(&payload);
        evs.push(event(2 * i as u64 + 1, false, resp));
    }
    evs
}

/// Decodes every event; with `encode`, writes every record as an NDJSON line
/// as a sink does. Returns the number of exchange records.
fn run(evs: &[Arc<Event>], encode: bool) -> usize {
    let mut dec = Http1::new(
        &Http1Config::default(),
        Http2Config::default(),
        &BuildContext::default(),
    );
    let mut recs = Vec::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut exchanges = 0;
    for e in evs {
        dec.decode(e, &mut spf_pipeline::Out::collect(&mut recs));
        for r in recs.drain(..) {
            if r.kind() == spf_pipeline::RecordKind::Exchange {
                exchanges += 1;
            }
            if encode {
                spf_pipeline::ndjson::encode(&r, &mut out);
            }
            drop::<Record>(r);
        }
        out.clear();
    }
    std::hint::black_box(&out);
    exchanges
}

fn time(f: impl FnOnce() -> usize) -> (Duration, usize) {
    let t = Instant::now();
    let n = f();
    (t.elapsed(), n)
}

fn best_median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    const ROUNDS: usize = 15;
    let small = conversation(200_000, 64);
    let large = conversation(2_000, 64 << 10);
    let large_bytes: usize = large.iter().map(|e| e.data.len()).sum();
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, (evs, encode)) in [
            (&small, false),
            (&small, true),
            (&large, false),
            (&large, true),
        ]
        .into_iter()
        .enumerate()
        {
            let (d, n) = time(|| run(evs, encode));
            assert_eq!(n, evs.len() / 2, "one exchange per request");
            t[i].push(d);
        }
    }
    let [s, se, l, le] = t.map(best_median);
    let xps = |d: Duration| small.len() as f64 / 2.0 / d.as_secs_f64();
    let gbps = |d: Duration| large_bytes as f64 / d.as_secs_f64() / 1e9;
    println!(
        "keep-alive, small JSON bodies ({} exchanges, one write per message):",
        small.len() / 2
    );
    println!(
        "  decode:          best {:.0} exchanges/s, median {:.0}",
        xps(s.0),
        xps(s.1)
    );
    println!(
        "  decode + NDJSON: best {:.0} exchanges/s, median {:.0}",
        xps(se.0),
        xps(se.1)
    );
    println!(
        "keep-alive, 64 KiB bodies ({:.0} MB, one write per message):",
        large_bytes as f64 / 1e6
    );
    println!(
        "  decode:          best {:.2} GB/s, median {:.2}",
        gbps(l.0),
        gbps(l.1)
    );
    println!(
        "  decode + NDJSON: best {:.2} GB/s, median {:.2}",
        gbps(le.0),
        gbps(le.1)
    );
}
