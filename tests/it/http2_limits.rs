//! Integration tests: attacks on the http2 decoder replayed through the real
//! `spf` binary. Each capture holds the attack on one connection and then a
//! normal conversation on another; spf must stay under 256 MB of peak memory
//! (the kernel's own count of its resident set, VmHWM), say which limit
//! stopped the attack, and decode the normal connection right.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use spf_decoders::http2::frame;
use spf_decoders::http2::hpack::encode as henc;
use spf_pipeline::{Direction, Event, Record};

/// Peak resident memory allowed to spf while it decodes an attack.
const MAX_RSS: u64 = 256 << 20;

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Writes a capture: raw records of `(conn, dir, bytes)` as the server's end
/// of each connection sees them (its receives are the client's bytes).
struct Capture {
    out: std::io::BufWriter<std::fs::File>,
    seq: u64,
    line: Vec<u8>,
}

impl Capture {
    fn new(path: &std::path::Path) -> Self {
        Capture {
            out: std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
            seq: 0,
            line: Vec::new(),
        }
    }

    fn write(&mut self, conn: u64, dir: Direction, data: Vec<u8>) {
        self.seq += 1;
        let e = Event {
            seq: self.seq,
            ts_ns: 1_000_000 + self.seq * 1000,
            time_ns: 1_790_000_000_000_000_000 + self.seq * 1000,
            pid: 200,
            tid: 200,
            comm: Arc::from("server"),
            peer_pid: 100,
            path: Arc::from("/run/attacked.sock"),
            dir,
            conn,
            socket: conn * 10,
            peer_socket: conn * 10 + 1,
            // Client to server is lane 0, the server's own sends lane 1.
            lane: u8::from(dir == Direction::Send),
            len: data.len() as u64,
            data: Bytes::from(data),
            ..Event::default()
        };
        self.line.clear();
        spf_pipeline::ndjson::encode(&Record::raw(Arc::new(e), Arc::from("raw")), &mut self.line);
        self.out.write_all(&self.line).unwrap();
    }

    /// The client's bytes in writes of at most 64 KiB, as a probe with the
    /// default snaplen would capture them.
    fn client_bytes(&mut self, conn: u64, bytes: &[u8]) {
        for piece in bytes.chunks(64 << 10) {
            self.write(conn, Direction::Recv, piece.to_vec());
        }
    }

    /// A normal gRPC call on `conn`: preface, SETTINGS both ways, request
    /// and response, headers encoded with the dynamic table.
    fn normal_call(&mut self, conn: u64) {
        let mut c = frame::PREFACE.to_vec();
        c.extend(frame(frame::SETTINGS, 0, 0, &[]));
        let mut b = Vec::new();
        henc::indexed(&mut b, 3);
        henc::indexed(&mut b, 6);
        henc::literal_indexed_name(&mut b, 4, b"/after.Attack/Works", true);
        henc::literal_indexed_name(&mut b, 31, b"application/grpc", true);
        c.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &b));
        c.extend(frame(
            frame::DATA,
            frame::END_STREAM,
            1,
            &[0, 0, 0, 0, 2, 8, 1],
        ));
        self.write(conn, Direction::Recv, c);
        let mut s = frame(frame::SETTINGS, 0, 0, &[]);
        let mut b = Vec::new();
        henc::indexed(&mut b, 8);
        henc::literal_indexed_name(&mut b, 31, b"application/grpc", false);
        s.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &b));
        s.extend(frame(frame::DATA, 0, 1, &[0, 0, 0, 0, 2, 8, 2]));
        let mut t = Vec::new();
        henc::literal_plain(&mut t, 0, b"grpc-status", b"0", false);
        s.extend(frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &t,
        ));
        self.write(conn, Direction::Send, s);
    }

    fn finish(mut self) {
        self.out.flush().unwrap();
    }
}

/// What spf made of a capture: the records worth looking at, and its peak
/// resident memory.
struct Run {
    errors: Vec<serde_json::Value>,
    /// Records of the connection after the attack.
    normal: Vec<serde_json::Value>,
    records: u64,
    max_rss: u64,
}

/// Replays `capture` through `spf run --decoder http2`, reading its NDJSON
/// output as it comes (keeping only errors and the normal connection's
/// records), and takes spf's peak memory (VmHWM) once it has decoded the whole
/// capture. The capture comes through a FIFO held open until then, so that
/// spf is still running to be asked: the peak a parent reads from `wait4`
/// would include this test process's own memory, which the child had between
/// its fork and its exec.
fn replay(capture: &std::path::Path, normal_conn: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("capture.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = crate::util::spf()
        .args([
            "run",
            "-q",
            "--decoder",
            "http2",
            "--format",
            "ndjson",
            "--replay",
        ])
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The writer keeps the FIFO open until told the capture was decoded.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let src = capture.to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::copy(&mut std::fs::File::open(&src).unwrap(), &mut w).unwrap();
        let _ = done_rx.recv();
    });
    let stdout = child.stdout.take().unwrap();
    let mut run = Run {
        errors: Vec::new(),
        normal: Vec::new(),
        records: 0,
        max_rss: 0,
    };
    let conn_key = format!("\"conn\":{normal_conn},");
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        run.records += 1;
        if line.contains("\"error\":") || line.contains(&conn_key) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            // The normal connection's exchange is the capture's last record:
            // everything before it is decoded, and spf still runs.
            let last = v.get("exchange").is_some() && v["conn"] == normal_conn;
            if v.get("error").is_some() {
                run.errors.push(v);
            } else if v["conn"] == normal_conn {
                run.normal.push(v);
            }
            if last {
                run.max_rss = peak_rss(pid);
                let _ = done_tx.send(());
            }
        }
    }
    let _ = done_tx.send(());
    writer.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "spf failed ({status}): {stderr}");
    assert!(
        run.max_rss > 0,
        "the normal connection's exchange never came"
    );
    eprintln!(
        "{}: {} records, peak RSS {} MiB",
        capture.display(),
        run.records,
        run.max_rss >> 20
    );
    run
}

/// A running process's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// The normal connection after the attack decoded exactly: its request
/// headers, the gRPC method on its messages, its exchange.
fn assert_normal(run: &Run) {
    let headers: Vec<&serde_json::Value> = run
        .normal
        .iter()
        .filter_map(|v| v.get("http2")?.get("headers"))
        .collect();
    assert_eq!(headers.len(), 3, "{:?}", run.normal);
    assert_eq!(
        headers[0],
        &serde_json::json!([
            [":method", "POST"],
            [":scheme", "http"],
            [":path", "/after.Attack/Works"],
            ["content-type", "application/grpc"]
        ])
    );
    assert_eq!(
        headers[1],
        &serde_json::json!([[":status", "200"], ["content-type", "application/grpc"]])
    );
    let x: Vec<&serde_json::Value> = run
        .normal
        .iter()
        .filter_map(|v| v.get("exchange"))
        .collect();
    assert_eq!(x.len(), 1, "{:?}", run.normal);
    assert_eq!(x[0]["protocol"], "grpc");
    assert_eq!(x[0]["path"], "/after.Attack/Works");
    assert_eq!(x[0]["grpc_status"], 0);
    assert_eq!(x[0]["error"], serde_json::Value::Null);
    assert!(
        run.normal.iter().all(|v| v.get("error").is_none()),
        "{:?}",
        run.normal
    );
}

fn limit_error<'a>(run: &'a Run, limit: &str) -> &'a serde_json::Value {
    let hits: Vec<&serde_json::Value> = run
        .errors
        .iter()
        .filter(|e| e["error"]["code"] == "LIMIT")
        .collect();
    assert!(
        hits.iter()
            .any(|e| e["error"]["message"].as_str().unwrap().contains(limit)),
        "no error naming {limit}: {:?}",
        run.errors
    );
    hits[0]
}

/// HEADERS followed by 1,000,000 empty CONTINUATION frames (9 MB).
#[test]
fn continuation_flood_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("continuation-flood.ndjson");
    let mut cap = Capture::new(&path);
    let mut attack = frame::PREFACE.to_vec();
    attack.extend(frame(frame::SETTINGS, 0, 0, &[]));
    attack.extend(frame(frame::HEADERS, 0, 1, &[0x82, 0x84]));
    let cont = frame(frame::CONTINUATION, 0, 1, &[]);
    attack.reserve(cont.len() * 1_000_000);
    for _ in 0..1_000_000 {
        attack.extend_from_slice(&cont);
    }
    assert!(attack.len() > 9_000_000);
    cap.client_bytes(1, &attack);
    cap.normal_call(2);
    cap.finish();
    let run = replay(&path, 2);
    assert!(run.max_rss < MAX_RSS, "peak RSS {} MB", run.max_rss >> 20);
    let e = limit_error(&run, "limits.continuation_frames (256)");
    assert_eq!(e["conn"], 1);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection 1")
    );
    // Every frame still has its record.
    assert!(run.records > 1_000_000, "{} records", run.records);
    assert_normal(&run);
}

/// A 4 KB header inserted once, then referenced by 1-byte indexes in 1 MB
/// header blocks (2 MB in all).
#[test]
fn hpack_amplification_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hpack-bomb.ndjson");
    let mut cap = Capture::new(&path);
    let mut preface = frame::PREFACE.to_vec();
    preface.extend(frame(frame::SETTINGS, 0, 0, &[]));
    cap.client_bytes(1, &preface);
    // The server allows frames of 16 MB, so the blocks need no CONTINUATION.
    cap.write(
        1,
        Direction::Send,
        frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]),
    );
    let mut attack = Vec::new();
    let mut first = Vec::new();
    henc::indexed(&mut first, 3);
    henc::literal_indexed(&mut first, b"x-bomb", &[b'b'; 4096], false);
    attack.extend(frame(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &first,
    ));
    for sid in [3u32, 5] {
        let block = vec![0xbe; 1 << 20];
        attack.extend(frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            sid,
            &block,
        ));
    }
    assert!(attack.len() > 2_000_000);
    cap.client_bytes(1, &attack);
    cap.normal_call(2);
    cap.finish();
    let run = replay(&path, 2);
    assert!(run.max_rss < MAX_RSS, "peak RSS {} MB", run.max_rss >> 20);
    let e = limit_error(&run, "limits.header_list_size (262144)");
    assert_eq!(e["conn"], 1);
    assert_normal(&run);
}

/// One 16 MiB event of empty SETTINGS ACK frames (1.86 million frames):
/// their records go to the sink as they are made, never all held at once.
#[test]
fn tiny_frame_flood_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings-flood.ndjson");
    let mut cap = Capture::new(&path);
    let mut preface = frame::PREFACE.to_vec();
    preface.extend(frame(frame::SETTINGS, 0, 0, &[]));
    cap.write(1, Direction::Recv, preface);
    let ack = frame(frame::SETTINGS, frame::ACK, 0, &[]);
    let n = (16 << 20) / ack.len();
    let mut flood = Vec::with_capacity(n * ack.len());
    for _ in 0..n {
        flood.extend_from_slice(&ack);
    }
    cap.write(1, Direction::Recv, flood);
    cap.normal_call(2);
    cap.finish();
    let run = replay(&path, 2);
    assert!(run.max_rss < MAX_RSS, "peak RSS {} MB", run.max_rss >> 20);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert!(run.records >= n as u64 + 2, "{} records", run.records);
    assert_normal(&run);
}

/// A local process without privileges writes a CONTINUATION flood to a socket
/// root's spf watches: spf's memory stays bounded, it says which limit
/// stopped the attack, and it decodes on.
#[test]
fn a_live_continuation_flood_from_an_unprivileged_user_is_bounded() {
    use std::os::unix::fs::PermissionsExt as _;
    let _g = crate::capture::lock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("victim.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Anyone may connect, as to many a daemon's socket.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        std::io::copy(&mut s, &mut std::io::sink()).unwrap()
    });
    let filter = sock.display().to_string();
    let canary = dir.path().join("canary.sock");
    let Some(live) = crate::live::LiveSpf::start_with(
        "a_live_continuation_flood",
        dir.path(),
        &["--path", &filter, "--path", &canary.display().to_string()],
        crate::live::Canary::Socket(&canary),
    ) else {
        return;
    };
    // The attacker: python as nobody, one HEADERS without END_HEADERS and
    // half a million empty CONTINUATIONs (4.5 MB, the size of the flood that
    // once took spf to 816 MB).
    let script = r#"
import socket, struct, sys
def frame(kind, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0, 1, b"\x82"))
cont = frame(9, 0, 1) * 10000
for _ in range(50):
    s.sendall(cont)
s.close()
"#;
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(script)
        .arg(&sock)
        .output()
        .expect("running the attacker as nobody");
    assert!(
        o.status.success(),
        "attacker: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let received = reader.join().unwrap();
    assert_eq!(received, 24 + 9 + 10 + 4_500_000);
    // spf's peak memory, read while it still runs.
    let peak = peak_rss(live.pid());
    let (records, _) = live.stop();
    assert!(
        peak < MAX_RSS,
        "spf's peak memory {} MiB under a live flood",
        peak >> 20
    );
    let limits: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["error"]["code"] == "LIMIT")
        .collect();
    assert!(
        limits.iter().any(|r| r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("continuation")),
        "an error record names the limit: {limits:?}"
    );
}
