//! replay -> http2 -> NDJSON on one core, next to replay -> raw -> NDJSON on the
//! same events as the baseline (the ratio is what the http2 decoder costs).
//!
//!     cargo bench -p spf-decoders --bench http2
//!
//! Rounds alternate between the variants and the best round of each is
//! reported (with the median), because on a shared machine other processes only
//! ever slow a round down.
//!
//! Three workloads: DATA-heavy traffic (16 KiB DATA frames, 64 KiB writes) in
//! bytes per second; typical gRPC request HEADERS (one per write, as a gRPC
//! client sends them, later ones using the dynamic table) in frames per
//! second; and many small gRPC calls on several connections, both directions
//! (request HEADERS, request DATA, response HEADERS with DATA, trailers: four
//! writes per call), in events per second, with exchange records and without
//! (`exchanges = false`), to show what pairing requests with responses costs.

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use spf_decoders::http2::hpack::encode as henc;
use spf_decoders::http2::{Http2, Http2Config, frame};
use spf_pipeline::{Decoder, Direction, Event, SockKind};

fn event(seq: u64, data: Vec<u8>) -> Arc<Event> {
    event_on(seq, 99, Direction::Send, data)
}

fn event_on(seq: u64, conn: u64, dir: Direction, data: Vec<u8>) -> Arc<Event> {
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
        dir,
        conn,
        socket: conn * 2,
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

/// `calls` small unary gRPC calls spread over `conns` connections, seen from
/// the client's end: per call the request HEADERS (indexed after the first
/// call), the request message, the response HEADERS with its message, and
/// the trailers, each its own write.
fn small_grpc(calls: usize, conns: u64) -> Vec<Arc<Event>> {
    let mut evs = Vec::with_capacity(calls * 4 + 2 * conns as usize);
    let mut seq = 0;
    let mut push = |evs: &mut Vec<Arc<Event>>, conn, dir, data| {
        evs.push(event_on(seq, conn, dir, data));
        seq += 1;
    };
    for conn in 0..conns {
        let mut p = frame::PREFACE.to_vec();
        p.extend(frame(frame::SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]));
        push(&mut evs, conn, Direction::Send, p);
        push(
            &mut evs,
            conn,
            Direction::Recv,
            frame(frame::SETTINGS, 0, 0, &[]),
        );
    }
    let requests = grpc_headers(calls.div_ceil(conns as usize) + 1);
    for i in 0..calls {
        let conn = i as u64 % conns;
        let n = i / conns as usize;
        let sid = 1 + 2 * n as u32;
        let mut req = requests[n].clone();
        req[5..9].copy_from_slice(&sid.to_be_bytes());
        push(&mut evs, conn, Direction::Send, req);
        // field 1: "hello", field 2: n
        let msg = [
            0,
            0,
            0,
            0,
            9,
            0x0a,
            5,
            b'h',
            b'e',
            b'l',
            b'l',
            b'o',
            0x10,
            (n % 128) as u8,
        ];
        push(
            &mut evs,
            conn,
            Direction::Send,
            frame(frame::DATA, frame::END_STREAM, sid, &msg),
        );
        let mut resp = Vec::new();
        if n == 0 {
            henc::indexed(&mut resp, 8);
            henc::literal_indexed_name(&mut resp, 31, b"application/grpc", true);
        } else {
            // The trailers' grpc-status went in after the content-type.
            henc::indexed(&mut resp, 8);
            henc::indexed(&mut resp, 63);
        }
        let mut w = frame(frame::HEADERS, frame::END_HEADERS, sid, &resp);
        let reply = [0, 0, 0, 0, 7, 0x0a, 5, b'w', b'o', b'r', b'l', b'd'];
        w.extend(frame(frame::DATA, 0, sid, &reply));
        push(&mut evs, conn, Direction::Recv, w);
        let mut t = Vec::new();
        if n == 0 {
            henc::literal_indexed(&mut t, b"grpc-status", b"0", true);
        } else {
            henc::indexed(&mut t, 62);
        }
        push(
            &mut evs,
            conn,
            Direction::Recv,
            frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                sid,
                &t,
            ),
        );
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
    let rounds_n = std::env::var("SPF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    // SPF_BENCH_ROUNDS=3 gives a quick look; figures come from the default.
    let profile = std::env::var_os("SPF_BENCH_PROFILE").is_some();

    let data = if profile {
        Vec::new()
    } else {
        data_heavy(64 << 20)
    };
    let bytes: usize = data.iter().map(|e| e.data.len()).sum();
    let headers = headers_heavy(if profile { 1 } else { 200_000 });
    let frames = headers.len() - 1;
    let calls = small_grpc(250_000, 16);
    let no_exchanges = Http2Config {
        exchanges: false,
        ..Http2Config::default()
    };

    // Alternate the variants within each round.
    let mut d_h2 = Vec::new();
    let mut d_raw = Vec::new();
    let mut h_h2 = Vec::new();
    let mut h_raw = Vec::new();
    let mut g_h2 = Vec::new();
    let mut g_plain = Vec::new();
    let mut g_raw = Vec::new();
    // SPF_BENCH_PROFILE=1 runs only the small calls through http2, for a
    // profiler to see nothing else.
    if profile {
        for _ in 0..rounds_n {
            let (t, _) = time(|| run(&mut Http2::new(Http2Config::default()), &calls));
            println!("{:.0} events/s", calls.len() as f64 / t.as_secs_f64());
        }
        return;
    }
    for _ in 0..rounds_n {
        let (t, n) = time(|| run(&mut Http2::new(Http2Config::default()), &data));
        assert_eq!(
            n,
            data.len() * 4 - 1,
            "one record per frame (preface, SETTINGS, HEADERS, DATA)"
        );
        d_h2.push(t);
        d_raw.push(time(|| run(raw().as_mut(), &data)).0);
        // Requests only, never answered: with exchange records on, each
        // would end as "no response" once the stream limit is reached. The
        // frames alone are what this workload has always measured; what
        // exchanges cost is measured on the small calls below.
        let (t, n) = time(|| run(&mut Http2::new(no_exchanges.clone()), &headers));
        assert_eq!(
            n,
            frames + 1,
            "one record per HEADERS frame and the preface"
        );
        h_h2.push(t);
        h_raw.push(time(|| run(raw().as_mut(), &headers)).0);
        let (t, n) = time(|| run(&mut Http2::new(Http2Config::default()), &calls));
        // Per call: five frames and one exchange; per connection a preface
        // and two SETTINGS.
        assert_eq!(n, 250_000 * 6 + 16 * 3, "records of the small calls");
        g_h2.push(t);
        let (t, n) = time(|| run(&mut Http2::new(no_exchanges.clone()), &calls));
        assert_eq!(n, 250_000 * 5 + 16 * 3);
        g_plain.push(t);
        g_raw.push(time(|| run(raw().as_mut(), &calls)).0);
    }
    let mut it = [d_h2, d_raw, h_h2, h_raw, g_h2, g_plain, g_raw]
        .into_iter()
        .map(|v| {
            let mut v = v.into_iter();
            rounds(rounds_n, || v.next().unwrap())
        });
    let mut next = || it.next().unwrap();
    let (d_h2, d_raw, h_h2, h_raw) = (next(), next(), next(), next());
    let (g_h2, g_plain, g_raw) = (next(), next(), next());
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
    println!("gRPC request HEADERS ({frames} frames, one per write, exchanges = false):");
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
    let eps = |d: Duration| calls.len() as f64 / d.as_secs_f64();
    println!(
        "small gRPC calls ({} events, 250,000 calls on 16 connections, 4 writes per call):",
        calls.len()
    );
    println!(
        "  http2 -> ndjson:              best {:.0} events/s, median {:.0} events/s",
        eps(g_h2.best),
        eps(g_h2.median)
    );
    println!(
        "  http2, exchanges = false:     best {:.0} events/s, median {:.0} events/s",
        eps(g_plain.best),
        eps(g_plain.median)
    );
    println!(
        "  raw   -> ndjson:              best {:.0} events/s, median {:.0} events/s",
        eps(g_raw.best),
        eps(g_raw.median)
    );
    println!(
        "  http2 / raw: {:.2}x (best), {:.2}x (median)",
        g_raw.best.as_secs_f64() / g_h2.best.as_secs_f64(),
        g_raw.median.as_secs_f64() / g_h2.median.as_secs_f64()
    );
    println!(
        "  exchange records add {:+.1}% (best), {:+.1}% (median) to the decode time",
        (g_h2.best.as_secs_f64() / g_plain.best.as_secs_f64() - 1.0) * 100.0,
        (g_h2.median.as_secs_f64() / g_plain.median.as_secs_f64() - 1.0) * 100.0
    );
}
