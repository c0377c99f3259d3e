//! replay -> http2 -> NDJSON on one core, next to replay -> raw -> NDJSON on the
//! same events as the baseline (the ratio is what the http2 decoder costs).
//!
//!     cargo bench -p spf-decoders --bench http2
//!
//! Rounds alternate between the variants and the best round of each is
//! reported (with the median), because on a shared machine other processes only
//! ever slow a round down.
//!
//! Two workloads: DATA-heavy traffic (16 KiB DATA frames, 64 KiB writes) in
//! bytes per second, and typical gRPC request HEADERS (one per write, as a gRPC
//! client sends them, later ones using the dynamic table) in frames per second.

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use spf_decoders::http2::hpack::encode as henc;
use spf_decoders::http2::{Http2, Http2Config, frame};
use spf_pipeline::{Decoder, Direction, Event, SockKind};

fn event(seq: u64, data: Vec<u8>) -> Arc<Event> {
    Arc::new(Event {
        seq,
        ts_ns: seq,
        time_ns: 1_700_000_000_000_000_000 + seq,
        pid: 1234,
        tid: 1234,
        comm: Arc::from("client"),
        peer_pid: 4321,
        path: Arc::from("/run/app/grpc.sock"),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn: 99,
        socket: 0,
        len: data.len() as u64,
        data: data.into(),
        truncated: false,
        ..Event::default()
    })
}

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The request headers a gRPC client sends, HPACK-encoded the way an encoder
/// with a dynamic table does it: the first call inserts, later ones index,
/// except for the values that change per call.
fn grpc_headers(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = Vec::new();
        henc::indexed(&mut b, 3); // :method POST
        henc::indexed(&mut b, 6); // :scheme http
        if i == 0 {
            henc::literal_indexed_name(&mut b, 4, b"/helloworld.Greeter/SayHello", true);
            henc::literal_indexed_name(&mut b, 1, b"localhost:50051", true);
            henc::literal_indexed_name(&mut b, 31, b"application/grpc", true);
            henc::literal_indexed(&mut b, b"te", b"trailers", true);
            henc::literal_indexed_name(&mut b, 58, b"tonic/0.14.2", true);
            henc::literal_indexed(
                &mut b,
                b"grpc-accept-encoding",
                b"identity, deflate, gzip",
                true,
            );
        } else {
            for idx in [67, 66, 65, 64, 63, 62] {
                henc::indexed(&mut b, idx);
            }
        }
        henc::literal_plain(
            &mut b,
            0,
            b"grpc-timeout",
            format!("{}m", 1000 + i % 9000).as_bytes(),
            true,
        );
        henc::literal_plain(
            &mut b,
            0,
            b"x-request-id",
            format!("{:016x}", i * 7919).as_bytes(),
            true,
        );
        out.push(frame(
            frame::HEADERS,
            frame::END_HEADERS,
            1 + 2 * i as u32,
            &b,
        ));
    }
    out
}

fn data_heavy(total: usize) -> Vec<Arc<Event>> {
    let mut evs = Vec::new();
    let mut first = frame::PREFACE.to_vec();
    first.extend(frame(frame::SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]));
    first.extend(&grpc_headers(1)[0]);
    evs.push(event(0, first));
    let payload: Vec<u8> = (0..16384u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut bytes = 0;
    let mut seq = 1;
    while bytes < total {
        let mut w = Vec::with_capacity(4 * (9 + payload.len()));
        for _ in 0..4 {
            // Not gRPC-framed on purpose: plain DATA, the case the 300 MB/s is for.
            w.extend(frame(frame::DATA, 0, 3, &payload));
        }
        bytes += w.len();
        evs.push(event(seq, w));
        seq += 1;
    }
    evs
}

fn headers_heavy(n: usize) -> Vec<Arc<Event>> {
    let mut evs = vec![event(0, frame::PREFACE.to_vec())];
    for (i, f) in grpc_headers(n).into_iter().enumerate() {
        evs.push(event(1 + i as u64, f));
    }
    evs
}

/// Decodes every event and encodes every record as an NDJSON line, as a run
/// does; returns the number of records.
fn run(dec: &mut dyn Decoder, evs: &[Arc<Event>]) -> usize {
    let mut recs = Vec::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut n = 0;
    for e in evs {
        dec.decode(e, &mut spf_pipeline::Out::collect(&mut recs));
        for r in recs.drain(..) {
            spf_pipeline::ndjson::encode(&r, &mut out);
            n += 1;
        }
        // A sink writes the buffer out and reuses it.
        out.clear();
    }
    std::hint::black_box(&out);
    n
}

fn raw() -> Box<dyn Decoder> {
    let mut reg = spf_pipeline::config::Registry::new();
    spf_decoders::register(&mut reg);
    let cfg = spf_pipeline::config::parse(
        &reg,
        "bench",
        "[source]\ntype = \"file\"\npath = \"/dev/null\"\n[decoder]\ntype = \"raw\"\n",
    )
    .expect("raw decoder config");
    cfg.decoder.build(&Default::default()).expect("raw decoder")
}

struct Stats {
    best: Duration,
    median: Duration,
}

fn rounds(n: usize, mut f: impl FnMut() -> Duration) -> Stats {
    let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
    v.sort();
    Stats {
        best: v[0],
        median: v[n / 2],
    }
}

fn time(f: impl FnOnce() -> usize) -> (Duration, usize) {
    let t = Instant::now();
    let n = f();
    (t.elapsed(), n)
}

fn main() {
    const ROUNDS: usize = 15;
    let data = data_heavy(64 << 20);
    let bytes: usize = data.iter().map(|e| e.data.len()).sum();
    let headers = headers_heavy(200_000);
    let frames = headers.len() - 1;

    // Alternate the variants within each round.
    let mut d_h2 = Vec::new();
    let mut d_raw = Vec::new();
    let mut h_h2 = Vec::new();
    let mut h_raw = Vec::new();
    for _ in 0..ROUNDS {
        let (t, n) = time(|| run(&mut Http2::new(Http2Config::default()), &data));
        assert_eq!(
            n,
            data.len() * 4 - 1,
            "one record per frame (preface, SETTINGS, HEADERS, DATA)"
        );
        d_h2.push(t);
        d_raw.push(time(|| run(raw().as_mut(), &data)).0);
        let (t, n) = time(|| run(&mut Http2::new(Http2Config::default()), &headers));
        assert_eq!(
            n,
            frames + 1,
            "one record per HEADERS frame and the preface"
        );
        h_h2.push(t);
        h_raw.push(time(|| run(raw().as_mut(), &headers)).0);
    }
    let mut it = [d_h2, d_raw, h_h2, h_raw].into_iter().map(|v| {
        let mut v = v.into_iter();
        rounds(ROUNDS, || v.next().unwrap())
    });
    let (d_h2, d_raw, h_h2, h_raw) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
    );
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let fps = |d: Duration| frames as f64 / d.as_secs_f64();
    println!(
        "DATA-heavy ({:.0} MB in 64 KiB writes of four 16 KiB DATA frames):",
        bytes as f64 / 1e6
    );
    println!(
        "  http2 -> ndjson: best {:.0} MB/s, median {:.0} MB/s",
        mbps(d_h2.best),
        mbps(d_h2.median)
    );
    println!(
        "  raw   -> ndjson: best {:.0} MB/s, median {:.0} MB/s",
        mbps(d_raw.best),
        mbps(d_raw.median)
    );
    println!(
        "  http2 / raw: {:.2}x (best), {:.2}x (median)",
        d_raw.best.as_secs_f64() / d_h2.best.as_secs_f64(),
        d_raw.median.as_secs_f64() / d_h2.median.as_secs_f64()
    );
    println!("gRPC request HEADERS ({frames} frames, one per write):");
    println!(
        "  http2 -> ndjson: best {:.0} frames/s, median {:.0} frames/s",
        fps(h_h2.best),
        fps(h_h2.median)
    );
    println!(
        "  raw   -> ndjson: best {:.0} events/s, median {:.0} events/s",
        fps(h_raw.best),
        fps(h_raw.median)
    );
    println!(
        "  http2 / raw: {:.2}x (best), {:.2}x (median)",
        h_raw.best.as_secs_f64() / h_h2.best.as_secs_f64(),
        h_raw.median.as_secs_f64() / h_h2.median.as_secs_f64()
    );
}
