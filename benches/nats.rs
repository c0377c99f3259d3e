//! The fleet path's speed with a real, local `nats-server` (JetStream, file
//! storage in a temporary directory):
//!
//! * node side: the `nats` sink publishing raw events, every message
//!   acknowledged (timed from the first record to the last acknowledgement),
//!   for 64-byte and 64 KiB payloads;
//! * central side: `spf run` decoding an HTTP/2 (gRPC-like) capture from the
//!   stream with the `nats` source, against `spf run` decoding the same
//!   capture from a file.
//!
//!     cargo bench --bench nats

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spf_pipeline::config::{BuildContext, Registry};
use spf_pipeline::{Direction, Event, Record, Role};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: \"{}\", max_file_store: 64GB }}\n",
            dir.join("js").display()
        ),
    )
    .expect("write server config");
    let log = dir.join("nats.log");
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("nats-server (scripts/install-deps installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Server is ready")
    {
        assert!(Instant::now() < deadline, "nats-server not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// (Re)creates the stream `SPF` on `spf.>`, empty.
fn fresh_stream(url: &str) {
    rt().block_on(async {
        let c = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(c);
        let _ = js.delete_stream("SPF").await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "SPF".into(),
            subjects: vec!["spf.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
    });
}

fn registry() -> Registry {
    let mut r = Registry::new();
    spf_decoders::register(&mut r);
    spf_nats::register(&mut r);
    r
}

/// SPF_NATS_FORMAT: how the node publishes raw events (spfcap, the default,
/// or ndjson).
fn format() -> String {
    std::env::var("SPF_NATS_FORMAT").unwrap_or_else(|_| "spfcap".into())
}

/// Node side: `events` raw events of `payload` bytes through the sink,
/// timed until the last one is acknowledged.
fn node_side(url: &str, events: usize, payload: usize) -> f64 {
    fresh_stream(url);
    let text = format!(
        "[source]\ntype = \"file\"\npath = \"/dev/null\"\n[decoder]\ntype = \"raw\"\n\
         [[sink]]\ntype = \"nats\"\nservers = \"{url}\"\nnode = \"bench\"\n\
         buffer_bytes = 1073741824\ndrain_timeout_ms = 600000\nformat = \"{}\"\n",
        format()
    );
    // Only the sink is built from this config.
    let sink_cfg = sink_config(&registry(), &text);
    let mut sink = sink_cfg.build(&BuildContext::default()).expect("sink");
    let data = bytes::Bytes::from((0..payload).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
    let (comm, path): (Arc<str>, Arc<str>) = ("bench".into(), "/run/bench.sock".into());
    let raw: Arc<str> = "raw".into();
    let start = Instant::now();
    for i in 0..events {
        let ev = Event {
            seq: i as u64,
            ts_ns: 1_000_000 + i as u64 * 100,
            time_ns: 1_764_000_000_000_000_000 + i as u64 * 100,
            pid: 100,
            tid: 100,
            comm: Arc::clone(&comm),
            peer_pid: 200,
            path: Arc::clone(&path),
            dir: if i % 2 == 0 {
                Direction::Send
            } else {
                Direction::Recv
            },
            conn: (i % 16) as u64 + 1,
            socket: 1000 + (i % 32) as u64,
            len: payload as u64,
            data: data.clone(),
            ..Event::default()
        };
        sink.write(&Record::raw(Arc::new(ev), Arc::clone(&raw)))
            .expect("write");
    }
    sink.flush().expect("flush");
    sink.close().expect("close");
    let report = sink.report();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(report.undelivered, 0, "{:?}", report.note);
    secs
}

fn sink_config(reg: &Registry, text: &str) -> Box<dyn spf_pipeline::config::SinkConfig> {
    let cfg = spf_pipeline::config::parse(reg, "bench", text).expect("bench config");
    cfg.sinks.into_iter().next().expect("one sink")
}

/// An HTTP/2 capture of gRPC-like calls as the probe records a client: per
/// connection the preface and SETTINGS, then calls of five frames each
/// (request HEADERS and DATA, response HEADERS, DATA and trailers), one
/// frame per syscall.
fn write_http2_capture(path: &Path, conns: u64, calls: u64) -> u64 {
    fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        let n = payload.len() as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..]);
        out.extend_from_slice(&[ty, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    // HPACK literal fields without indexing, new names: no table state.
    fn headers(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            b.push(0);
            b.push(n.len() as u8);
            b.extend_from_slice(n.as_bytes());
            b.push(v.len() as u8);
            b.extend_from_slice(v.as_bytes());
        }
        b
    }
    let f = std::fs::File::create(path).expect("capture");
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut seq = 0u64;
    let mut line = Vec::new();
    let mut emit =
        |w: &mut BufWriter<std::fs::File>, conn: u64, dir: Direction, pos: u64, data: Vec<u8>| {
            let (client, server) = (1000 + 2 * conn, 1001 + 2 * conn);
            let ev = Event {
                seq,
                ts_ns: 1_000_000 + seq * 1000,
                time_ns: 1_764_000_000_000_000_000 + seq * 1000,
                pid: 100,
                tid: 100,
                comm: "client".into(),
                peer_pid: 200,
                path: "/run/grpc.sock".into(),
                dir,
                conn: client,
                socket: client,
                peer_socket: server,
                role: Role::Client,
                lane: u8::from(dir == Direction::Recv),
                pos: Some(pos),
                len: data.len() as u64,
                data: data.into(),
                ..Event::default()
            };
            seq += 1;
            line.clear();
            spf_pipeline::ndjson::encode(&Record::raw(Arc::new(ev), "raw".into()), &mut line);
            w.write_all(&line).expect("write capture");
        };
    for c in 0..conns {
        let (mut sent, mut recvd) = (0u64, 0u64);
        let mut send = |w: &mut BufWriter<std::fs::File>, d: Vec<u8>, recv: bool| {
            let (dir, pos) = if recv {
                (Direction::Recv, &mut recvd)
            } else {
                (Direction::Send, &mut sent)
            };
            let n = d.len() as u64;
            emit(w, c, dir, *pos, d);
            *pos += n;
        };
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut preface, 4, 0, 0, &[]);
        send(&mut w, preface, false);
        let mut s = Vec::new();
        frame(&mut s, 4, 0, 0, &[]);
        send(&mut w, s, true);
        for call in 0..calls {
            let id = (call * 2 + 1) as u32;
            let p = format!("/bench.Service/Method{}", call % 16);
            let id_s = call.to_string();
            let mut b = Vec::new();
            frame(
                &mut b,
                1,
                4,
                id,
                &headers(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", &p),
                    (":authority", "localhost"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("x-request-id", &id_s),
                ]),
            );
            send(&mut w, b, false);
            let mut msg = vec![0, 0, 0, 0, 20];
            msg.extend_from_slice(&[b'q'; 20]);
            let mut b = Vec::new();
            frame(&mut b, 0, 1, id, &msg);
            send(&mut w, b, false);
            let mut b = Vec::new();
            frame(
                &mut b,
                1,
                4,
                id,
                &headers(&[(":status", "200"), ("content-type", "application/grpc")]),
            );
            send(&mut w, b, true);
            let mut b = Vec::new();
            frame(&mut b, 0, 0, id, &msg);
            send(&mut w, b, true);
            let mut b = Vec::new();
            frame(
                &mut b,
                1,
                5,
                id,
                &headers(&[("grpc-status", "0"), ("grpc-message", "")]),
            );
            send(&mut w, b, true);
        }
    }
    w.flush().expect("flush capture");
    seq
}

/// Runs spf; its wall time, CPU time (user + system) and stderr.
fn spf_run(config: &Path) -> (f64, f64, String) {
    let before = children_cpu();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_spf"))
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spf");
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spf failed: {err}");
    (secs, children_cpu() - before, err)
}

/// CPU seconds of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU seconds a running process used so far (from /proc).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 / hz)
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("config");
    p
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("spf-bench-nats")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let server = start_server(d);
    let url = &server.url;

    println!(
        "node side: nats sink -> local nats-server (JetStream, file storage), every message acknowledged; \
         raw events as {}",
        format()
    );
    // SPF_BENCH_NATS=central measures the central side only.
    let node_cases: &[(usize, usize)] =
        if std::env::var("SPF_BENCH_NATS").is_ok_and(|v| v == "central") {
            &[]
        } else {
            &[(1_000_000, 64), (6_000, 64 * 1024)]
        };
    for &(events, payload) in node_cases {
        let best = (0..3)
            .map(|_| node_side(url, events, payload))
            .fold(f64::INFINITY, f64::min);
        println!(
            "  {events:>8} events x {payload:>6} B: {best:.3} s  {:>9.0} events/s  {:>7.1} MB/s payload",
            events as f64 / best,
            (events * payload) as f64 / best / 1e6
        );
    }

    println!(
        "central side: HTTP/2 capture decoded by `spf run` (http2 decoder, ndjson to /dev/null)"
    );
    let cap = d.join("grpc.ndjson");
    let events = write_http2_capture(&cap, 64, 2_000);
    let size = std::fs::metadata(&cap).map_or(0, |m| m.len());
    fresh_stream(url);
    let format = format();
    let node = write(
        d,
        "node.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\nview = \"syscalls\"\n[decoder]\ntype = \"raw\"\n\
             [[sink]]\ntype = \"nats\"\nservers = \"{url}\"\nnode = \"bench\"\n\
             buffer_bytes = 1073741824\ndrain_timeout_ms = 600000\nformat = \"{format}\"\n",
            cap.display()
        ),
    );
    let (_, _, err) = spf_run(&node);
    assert!(
        err.contains(&format!("{events} records acknowledged")),
        "{err}"
    );
    // NDJSON on stdout, which is /dev/null here (spf writes no file there).
    let decode = "[decoder]\ntype = \"http2\"\n[[sink]]\ntype = \"stdout\"\nformat = \"ndjson\"\n";
    let from_file = write(
        d,
        "file.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\n{decode}",
            cap.display()
        ),
    );
    let mut file_best = (f64::INFINITY, 0.0);
    let mut nats_best = (f64::INFINITY, 0.0, 0.0);
    for round in 0..3 {
        let (secs, cpu, _) = spf_run(&from_file);
        if secs < file_best.0 {
            file_best = (secs, cpu);
        }
        // A new durable consumer each round reads the stream from its start.
        // SPF_NATS_BATCH: the source's `batch` (messages per pull).
        let batch = std::env::var("SPF_NATS_BATCH")
            .map(|b| format!("batch = {b}\n"))
            .unwrap_or_default();
        let from_nats = write(
            d,
            "central.toml",
            format!(
                "[source]\ntype = \"nats\"\nservers = \"{url}\"\nstream = \"SPF\"\n\
                 durable = \"bench{round}\"\nexit_at_end = true\n{batch}{decode}"
            ),
        );
        let server_before = process_cpu(server.child.id());
        let (secs, cpu, err) = spf_run(&from_nats);
        let server_cpu = process_cpu(server.child.id()) - server_before;
        assert!(err.contains(&format!("{events} events")), "{err}");
        if secs < nats_best.0 {
            nats_best = (secs, cpu, server_cpu);
        }
    }
    println!(
        "  {events} events ({} MiB of NDJSON): from the file {:.3} s ({:.0} events/s, spf CPU {:.2} s), \
         from the stream {:.3} s ({:.0} events/s, spf CPU {:.2} s, nats-server CPU {:.2} s): {:.2}x",
        size >> 20,
        file_best.0,
        events as f64 / file_best.0,
        file_best.1,
        nats_best.0,
        events as f64 / nats_best.0,
        nats_best.1,
        nats_best.2,
        file_best.0 / nats_best.0
    );
}
