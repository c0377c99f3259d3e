//! Many small gRPC calls replayed through the real `spf` binary: file source
//! → reorder → http2 → ndjson file, against the same capture through `raw`.
//!
//!     cargo bench --bench http2_replay
//!
//! The capture: 250,000 unary calls on 16 connections seen from the client's
//! end, four writes per call (request HEADERS, request message, response
//! HEADERS with its message, trailers), 1,000,032 events. Runs alternate
//! between the decoders; each one's best of five is reported, since other
//! processes on the machine only ever slow a run down. With
//! `SPF_BENCH_CAPTURE=FILE` it only writes the capture, for profiling.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use spf_decoders::http2::frame;
use spf_decoders::http2::hpack::encode as henc;
use spf_pipeline::{Direction, Event, Record};

const CALLS: usize = 250_000;
const CONNS: u64 = 16;

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Request headers as a gRPC client's encoder writes them: inserted on a
/// connection's first call, indexed after, with a per-call request id.
fn request(n: usize, sid: u32) -> Vec<u8> {
    let mut b = Vec::new();
    henc::indexed(&mut b, 3);
    henc::indexed(&mut b, 6);
    if n == 0 {
        henc::literal_indexed_name(&mut b, 4, b"/helloworld.Greeter/SayHello", true);
        henc::literal_indexed_name(&mut b, 1, b"localhost:50051", true);
        henc::literal_indexed_name(&mut b, 31, b"application/grpc", true);
        henc::literal_indexed(&mut b, b"te", b"trailers", true);
        henc::literal_indexed_name(&mut b, 58, b"tonic/0.14.2", true);
    } else {
        for idx in [66, 65, 64, 63, 62] {
            henc::indexed(&mut b, idx);
        }
    }
    henc::literal_plain(
        &mut b,
        0,
        b"x-request-id",
        format!("{n:016x}").as_bytes(),
        true,
    );
    frame(frame::HEADERS, frame::END_HEADERS, sid, &b)
}

fn write_capture(path: &Path) -> usize {
    let f = std::fs::File::create(path).expect("create capture");
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let raw: Arc<str> = Arc::from("raw");
    let (comm, path_name): (Arc<str>, Arc<str>) =
        (Arc::from("client"), Arc::from("/run/grpc.sock"));
    let mut seq = 0u64;
    let mut line = Vec::new();
    let mut put = |conn: u64, dir: Direction, data: Vec<u8>, w: &mut BufWriter<std::fs::File>| {
        seq += 1;
        let e = Event {
            seq,
            ts_ns: 1_000_000 + seq * 1000,
            time_ns: 1_790_000_000_000_000_000 + seq * 1000,
            pid: 100,
            tid: 100,
            comm: Arc::clone(&comm),
            peer_pid: 200,
            path: Arc::clone(&path_name),
            dir,
            conn,
            socket: 1000 + conn,
            len: data.len() as u64,
            data: Bytes::from(data),
            ..Event::default()
        };
        line.clear();
        spf_pipeline::ndjson::encode(&Record::raw(Arc::new(e), Arc::clone(&raw)), &mut line);
        w.write_all(&line).expect("write capture");
    };
    for conn in 0..CONNS {
        let mut p = frame::PREFACE.to_vec();
        p.extend(frame(frame::SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]));
        put(conn, Direction::Send, p, &mut w);
        put(
            conn,
            Direction::Recv,
            frame(frame::SETTINGS, 0, 0, &[]),
            &mut w,
        );
    }
    for i in 0..CALLS {
        let conn = i as u64 % CONNS;
        let n = i / CONNS as usize;
        let sid = 1 + 2 * n as u32;
        put(conn, Direction::Send, request(n, sid), &mut w);
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
        put(
            conn,
            Direction::Send,
            frame(frame::DATA, frame::END_STREAM, sid, &msg),
            &mut w,
        );
        let mut h = Vec::new();
        henc::indexed(&mut h, 8);
        if n == 0 {
            henc::literal_indexed_name(&mut h, 31, b"application/grpc", true);
        } else {
            henc::indexed(&mut h, 63);
        }
        let mut resp = frame(frame::HEADERS, frame::END_HEADERS, sid, &h);
        resp.extend(frame(
            frame::DATA,
            0,
            sid,
            &[0, 0, 0, 0, 7, 0x0a, 5, b'w', b'o', b'r', b'l', b'd'],
        ));
        put(conn, Direction::Recv, resp, &mut w);
        let mut t = Vec::new();
        if n == 0 {
            henc::literal_indexed(&mut t, b"grpc-status", b"0", true);
        } else {
            henc::indexed(&mut t, 62);
        }
        put(
            conn,
            Direction::Recv,
            frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                sid,
                &t,
            ),
            &mut w,
        );
    }
    w.flush().expect("flush capture");
    seq as usize
}

fn config(dir: &Path, input: &Path, output: &Path, decoder: &str) -> PathBuf {
    let p = dir.join(format!("{decoder}.toml"));
    std::fs::write(
        &p,
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\n\n[decoder]\ntype = \"{decoder}\"\n\n\
             [[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            input.display(),
            output.display()
        ),
    )
    .expect("write config");
    p
}

/// Runs spf on `config`; returns seconds and the output's size.
fn run_spf(config: &Path, output: &Path) -> (f64, u64) {
    let _ = std::fs::remove_file(output);
    let start = Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_spf"))
        .args(["run", "-q", "-c"])
        .arg(config)
        .status()
        .expect("spawn spf");
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "spf failed");
    (secs, std::fs::metadata(output).map_or(0, |m| m.len()))
}

fn main() {
    // SPF_BENCH_CAPTURE=FILE writes the capture there and stops: for
    // profiling spf on it.
    if let Some(p) = std::env::var_os("SPF_BENCH_CAPTURE") {
        let n = write_capture(Path::new(&p));
        println!("{n} events written to {}", Path::new(&p).display());
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("spf-bench-h2")
        .tempdir()
        .expect("tempdir");
    let input = dir.path().join("calls.ndjson");
    let events = write_capture(&input);
    let output = dir.path().join("out.ndjson");
    let raw = config(dir.path(), &input, &output, "raw");
    let http2 = config(dir.path(), &input, &output, "http2");
    let (mut best_raw, mut best_h2) = (f64::MAX, f64::MAX);
    let (mut out_raw, mut out_h2) = (0, 0);
    for _ in 0..5 {
        let (s, n) = run_spf(&raw, &output);
        best_raw = best_raw.min(s);
        out_raw = n;
        let (s, n) = run_spf(&http2, &output);
        best_h2 = best_h2.min(s);
        out_h2 = n;
    }
    println!(
        "small gRPC calls, {events} events, replay -> reorder -> DECODER -> ndjson file (release build of spf):"
    );
    println!(
        "  raw:   {best_raw:.3} s  {:>9.0} events/s  ({} MiB written)",
        events as f64 / best_raw,
        out_raw >> 20
    );
    println!(
        "  http2: {best_h2:.3} s  {:>9.0} events/s  ({} MiB written)",
        events as f64 / best_h2,
        out_h2 >> 20
    );
    println!("  http2 / raw: {:.2}x", best_raw / best_h2);
}
