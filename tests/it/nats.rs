//! The fleet path with a real `nats-server` (JetStream, file storage in a
//! temporary directory, a free port): node spf processes publish raw events,
//! a central spf consumes and decodes them.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use spf_pipeline::{Direction, Event, Record, Role};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use crate::util::{read_ndjson, spf, stderr_text, write_file};

const DEADLINE: Duration = Duration::from_secs(60);
/// The low bits of a central spf's connection ids: the node's own id.
const NODE_ID_BITS: u64 = (1 << 40) - 1;

/// A nats-server with JetStream, killed when dropped.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
}

impl NatsServer {
    /// Starts a server; `extra` goes into its config (e.g. authorization).
    fn start(dir: &Path, extra: &str) -> NatsServer {
        let bin = which("nats-server").expect(
            "nats-server not found: scripts/install-deps installs it (Debian package nats-server)",
        );
        let port = free_port();
        let store = dir.join("jetstream");
        let conf = write_file(
            dir,
            "nats-server.conf",
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                store.display()
            ),
        );
        let _ = bin;
        let mut s = NatsServer {
            child: None,
            port,
            dir: dir.to_path_buf(),
            conf,
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store, and waits until it serves.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = self.dir.join("nats-server.log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited ({st}):\n{text}");
            }
            assert!(Instant::now() < deadline, "nats-server not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: it writes out what it acknowledged) and
    /// waits for it to exit.
    fn stop(&mut self) {
        let mut c = self.child.take().expect("server running");
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        wait_deadline(&mut c, "nats-server");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for a child to exit, killing it past the deadline.
fn wait_deadline(c: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("{what} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `spf run -c CONFIG` to its end (within the deadline).
fn spf_run(config: &Path) -> Output {
    let mut c = spf()
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Pipes are read after exit: the outputs here are small.
    let st = wait_deadline(&mut c, "spf");
    let mut out = c.wait_with_output().unwrap();
    out.status = st;
    out
}

/// Creates the stream `SPF` on `spf.>` (file storage) with the real client,
/// as an operator would with `nats stream add`.
fn create_stream(url: &str) {
    rt().block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        async_nats::jetstream::new(c)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "SPF".into(),
                subjects: vec!["spf.>".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
    });
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `first + records` of the last message on `subject`: how many records of
/// the sink's run are stored (0 when none is).
/// The payload of the last message stored on `subject`.
fn last_payload(url: &str, subject: &str) -> bytes::Bytes {
    rt().block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let stream = js.get_stream("SPF").await.unwrap();
        stream
            .get_last_raw_message_by_subject(subject)
            .await
            .unwrap_or_else(|e| panic!("no message on {subject}: {e}"))
            .payload
    })
}

fn stored_records(url: &str, subject: &str) -> u64 {
    rt().block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut stream = js.get_stream("SPF").await.unwrap();
        let _ = stream.info().await;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => {
                let h = |k: &str| -> u64 {
                    m.headers
                        .get(k)
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0)
                };
                h("Spf-First") + h("Spf-Records")
            }
            // Nothing stored on the subject yet.
            Err(_) => 0,
        }
    })
}

fn node_config(dir: &Path, name: &str, url: &str, input: &Path, extra: &str) -> PathBuf {
    write_file(
        dir,
        &format!("{name}.toml"),
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\nview = \"syscalls\"\n[decoder]\ntype = \"raw\"\n\
             [[sink]]\ntype = \"nats\"\nservers = \"{url}\"\nnode = \"{name}\"\n{extra}",
            input.display()
        ),
    )
}

fn central_config(dir: &Path, name: &str, url: &str, decoder: &str, extra: &str) -> PathBuf {
    write_file(
        dir,
        &format!("{name}.toml"),
        format!(
            "[source]\ntype = \"nats\"\nservers = \"{url}\"\nstream = \"SPF\"\n\
             durable = \"central\"\n{extra}\n[decoder]\ntype = \"{decoder}\"\n\
             [[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            dir.join(format!("{name}.ndjson")).display()
        ),
    )
}

// ---------------------------------------------------------------------------
// Real HTTP/2 traffic, recorded as the probe would see the client's end.

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Arc<Event>>>,
    seq: AtomicU64,
    conns: AtomicU64,
    active: AtomicU64,
}

impl Recorder {
    /// One syscall of the client: `Send` is what it wrote (lane 0), `Recv`
    /// what it read (lane 1). Every recording uses the same ids, so that two
    /// nodes' connections collide unless the central spf keeps them apart.
    fn record(&self, conn: u64, dir: Direction, pos: u64, data: &[u8]) {
        let mut ev = self.events.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let (client, server) = (1000 + 2 * conn, 1001 + 2 * conn);
        ev.push(Arc::new(Event {
            seq,
            ts_ns: 1_000_000 + seq * 1000,
            time_ns: 1_764_000_000_000_000_000 + seq * 1000,
            pid: 100,
            tid: 100,
            comm: "client".into(),
            peer_pid: 200,
            path: "/run/app.sock".into(),
            dir,
            conn: client,
            socket: client,
            peer_socket: server,
            role: Role::Client,
            lane: u8::from(dir == Direction::Recv),
            pos: Some(pos),
            len: data.len() as u64,
            data: Bytes::copy_from_slice(data),
            ..Event::default()
        }));
    }

    fn write_capture(&self, path: &Path) -> usize {
        let events = self.events.lock().unwrap();
        let mut out = Vec::new();
        for e in events.iter() {
            spf_pipeline::ndjson::encode(&Record::raw(Arc::clone(e), "raw".into()), &mut out);
        }
        std::fs::write(path, out).unwrap();
        events.len()
    }
}

async fn pump(
    mut r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    conn: u64,
    dir: Direction,
    rec: Arc<Recorder>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pos = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        rec.record(conn, dir, pos, &buf[..n]);
        pos += n as u64;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    rec.active.fetch_sub(1, Ordering::SeqCst);
}

/// Records `conns` HTTP/2 connections between a hyper client and a hyper
/// server, `requests` each, paths naming `node`; writes the capture.
async fn record_http2(node: &str, conns: u64, requests: usize, capture: &Path) -> usize {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("server.sock");
    let front = dir.path().join("front.sock");
    let server = UnixListener::bind(&server_path).unwrap();
    let relay = UnixListener::bind(&front).unwrap();
    let rec = Arc::new(Recorder::default());
    tokio::spawn(async move {
        while let Ok((stream, _)) = server.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(200)
                                .header("x-path", path.clone())
                                .body(Full::new(Bytes::from(format!("{path} got {body}"))))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let r = Arc::clone(&rec);
    tokio::spawn(async move {
        while let Ok((client, _)) = relay.accept().await {
            let upstream = UnixStream::connect(&server_path).await.unwrap();
            let conn = r.conns.fetch_add(1, Ordering::SeqCst);
            let (cr, cw) = client.into_split();
            let (sr, sw) = upstream.into_split();
            r.active.fetch_add(2, Ordering::SeqCst);
            tokio::spawn(pump(cr, sw, conn, Direction::Send, Arc::clone(&r)));
            tokio::spawn(pump(sr, cw, conn, Direction::Recv, Arc::clone(&r)));
        }
    });
    for c in 0..conns {
        let stream = UnixStream::connect(&front).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        for i in 0..requests {
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost/{node}/conn{c}/req{i}"))
                .header("x-node", node)
                .body(Full::new(Bytes::from(vec![
                    b'a' + (i % 26) as u8;
                    10 + i * 37
                ])))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let _ = resp.into_body().collect().await.unwrap();
        }
        drop(sender);
        let _ = driver.await;
    }
    let deadline = Instant::now() + DEADLINE;
    while rec.active.load(Ordering::SeqCst) > 0 || rec.conns.load(Ordering::SeqCst) < conns {
        assert!(Instant::now() < deadline, "relayed connections still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rec.write_capture(capture)
}

/// A record as compared between a direct decode and the central's: without
/// the ids the central moves into each node's range, and without the node.
fn comparable(v: &Value) -> (u64, Value) {
    let mut v = v.clone();
    let m = v.as_object_mut().unwrap();
    let conn = m.remove("conn").and_then(|c| c.as_u64()).unwrap_or(0) & NODE_ID_BITS;
    for k in ["socket", "peer_socket", "node"] {
        m.remove(k);
    }
    (conn, v)
}

/// Records per connection, in order.
fn per_conn(records: &[&Value]) -> std::collections::BTreeMap<u64, Vec<Value>> {
    let mut m = std::collections::BTreeMap::<u64, Vec<Value>>::new();
    for r in records {
        let (c, v) = comparable(r);
        m.entry(c).or_default().push(v);
    }
    m
}

#[test]
fn two_nodes_one_stream_one_central_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    create_stream(&server.url());
    let nodes = ["node-a", "node-b"];
    let mut captures = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let cap = dir.path().join(format!("{n}.ndjson"));
        let events = rt().block_on(record_http2(n, 2 + i as u64, 5 + i, &cap));
        assert!(events > 10, "{events} events recorded");
        captures.push(cap);
    }
    // Both nodes publish at once.
    let mut children: Vec<Child> = nodes
        .iter()
        .zip(&captures)
        .enumerate()
        .map(|(i, (n, cap))| {
            // One node publishes lines, the other binary records (the
            // default): one stream holds both, and the central reads either.
            let format = ["format = \"ndjson\"\n", ""][i];
            let cfg = node_config(dir.path(), n, &server.url(), cap, format);
            spf()
                .args(["run", "-c"])
                .arg(cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (c, n) in children.iter_mut().zip(nodes) {
        let st = wait_deadline(c, n);
        let mut err = String::new();
        std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(st.success(), "{n}: {err}");
        assert!(err.contains("records acknowledged"), "{n}: {err}");
        assert!(
            !err.contains("lost") && !err.contains("not acknowledged"),
            "{err}"
        );
    }
    // The stream really holds both formats.
    let magic = &spf_pipeline::capture::MAGIC[..];
    assert!(!last_payload(&server.url(), "spf.node-a.events").starts_with(magic));
    assert!(last_payload(&server.url(), "spf.node-b.events").starts_with(magic));
    let central = central_config(
        dir.path(),
        "central",
        &server.url(),
        "http2",
        "exit_at_end = true",
    );
    let out = spf_run(&central);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let got = read_ndjson(&dir.path().join("central.ndjson"));

    for (n, cap) in nodes.iter().zip(&captures) {
        // What decoding the node's capture directly gives.
        let direct = crate::util::spf_output(&[
            "run",
            "--replay",
            cap.to_str().unwrap(),
            "--decoder",
            "http2",
            "--format",
            "ndjson",
            "--quiet",
        ]);
        assert!(direct.status.success(), "{}", stderr_text(&direct));
        let direct: Vec<Value> = String::from_utf8(direct.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mine: Vec<&Value> = got.iter().filter(|v| v["node"] == *n).collect();
        let want = per_conn(&direct.iter().collect::<Vec<_>>());
        let have = per_conn(&mine);
        assert_eq!(want.len(), have.len(), "{n}: connections");
        for (conn, w) in &want {
            assert_eq!(have.get(conn), Some(w), "{n}: connection {conn}");
        }
        // Real HTTP/2 in there: every request's path, once.
        let paths: Vec<&str> = mine
            .iter()
            .filter_map(|v| v["http2"]["headers"].as_array())
            .flatten()
            .filter(|h| h[0] == ":path")
            .filter_map(|h| h[1].as_str())
            .collect();
        let expect = 2 + nodes.iter().position(|x| x == n).unwrap();
        assert_eq!(paths.len(), expect * (5 + expect - 2), "{n}: {paths:?}");
        assert!(
            paths.iter().all(|p| p.starts_with(&format!("/{n}/"))),
            "{paths:?}"
        );
    }
    // Nothing else came out: every record is one of the two nodes'.
    assert!(
        got.iter()
            .all(|v| nodes.contains(&v["node"].as_str().unwrap_or("")))
    );
    // The same connection ids on both nodes stayed two connections each.
    let conns: std::collections::BTreeSet<u64> =
        got.iter().filter_map(|v| v["conn"].as_u64()).collect();
    assert_eq!(conns.len(), 2 + 3, "{conns:?}");
}

// ---------------------------------------------------------------------------
// Synthetic raw events, one id each in their bytes, for counting.

/// NDJSON lines of events `range`, each carrying `event NNNNNNN` padded to
/// 64 bytes, spread over 7 connections.
fn event_lines(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in range {
        let conn = 1 + i % 7;
        let mut data = format!("event {i:07} ").into_bytes();
        data.resize(64, b'.');
        let e = Event {
            seq: i,
            ts_ns: 1_000_000 + i * 100,
            time_ns: 1_764_000_000_000_000_000 + i * 100,
            pid: 7,
            tid: 7,
            comm: "writer".into(),
            path: "/run/x.sock".into(),
            dir: Direction::Send,
            conn,
            socket: conn,
            len: 64,
            data: Bytes::from(data),
            ..Event::default()
        };
        spf_pipeline::ndjson::encode(&Record::raw(Arc::new(e), "raw".into()), &mut out);
    }
    out
}

/// The event ids in a central output, in order, and the sum of its lost
/// markers.
fn ids_and_lost(path: &Path) -> (Vec<u64>, u64, u64) {
    let mut ids = Vec::new();
    let (mut lost, mut markers) = (0, 0);
    for v in read_ndjson(path) {
        if let Some(n) = v["lost"].as_u64() {
            lost += n;
            markers += 1;
            continue;
        }
        let text = v["text"].as_str().expect("a raw record");
        let id = text[6..13].parse::<u64>().expect("an event id");
        ids.push(id);
    }
    (ids, lost, markers)
}

/// A number just before `word` in `text` (`... 123 records acknowledged`).
fn number_before(text: &str, word: &str) -> Option<u64> {
    let at = text.find(word)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

/// Waits until the file at `p` contains `text`; fails with `what` and the
/// file's content after the deadline.
fn wait_for_text(p: &Path, text: &str, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = std::fs::read_to_string(p).unwrap_or_default();
        if now.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}:\n{now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The write end of a FIFO, every wait on it with a deadline.
struct Fifo(std::fs::File);

impl Fifo {
    /// Opens once the reader (`child`) has opened its end.
    fn open(p: &Path, child: &mut Child) -> Fifo {
        use std::os::unix::fs::OpenOptionsExt as _;
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Without a reader, a non-blocking open fails (ENXIO) at once.
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p)
            {
                Ok(f) => return Fifo(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("opening the FIFO: {e}"),
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("spf exited ({st}) before opening the FIFO");
            }
            assert!(Instant::now() < deadline, "spf never opened the FIFO");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn write_all(&mut self, mut data: &[u8]) {
        let deadline = Instant::now() + DEADLINE;
        while !data.is_empty() {
            match self.0.write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "spf stopped reading the FIFO");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("writing the FIFO: {e}"),
            }
        }
    }
}

#[test]
fn server_restart_mid_run_loses_nothing_acknowledged_and_counts_the_overflow() {
    server_restart(false);
}

#[test]
fn server_restart_mid_run_with_a_spool_loses_nothing() {
    server_restart(true);
}

/// Events written before, during and after an outage of the server. Without
/// a spool, the sink's 64 KiB buffer overflows; with one large enough,
/// nothing is lost.
fn server_restart(spool: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path(), "");
    create_stream(&server.url());
    let fifo = dir.path().join("events.fifo");
    crate::util::mkfifo(&fifo, 0o600);
    let cfg = node_config(
        dir.path(),
        "node-r",
        &server.url(),
        &fifo,
        &format!(
            "buffer_bytes = 65536\nmessage_bytes = 4096\nin_flight = 4\nack_timeout_ms = 1000\n\
             drain_timeout_ms = 60000\n{}",
            // Without a spool, the events and the lost markers go as binary
            // records (the default format); with one, the events go as
            // lines, so a restart is run through both formats.
            if spool {
                format!(
                    "spool = \"{}\"\nspool_bytes = 134217728\nformat = \"ndjson\"\n",
                    dir.path().join("node.spool").display()
                )
            } else {
                String::new()
            }
        ),
    );
    let err = dir.path().join("node.err");
    let mut node = spf()
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut w = Fifo::open(&fifo, &mut node);
    // Part 1 fits in the buffer whatever the publishing rate.
    let (part1, part2, part3) = (100u64, 100_100u64, 105_100u64);

    w.write_all(&event_lines(0..part1));
    let deadline = Instant::now() + DEADLINE;
    while stored_records(&server.url(), "spf.node-r.events") < part1 {
        assert!(Instant::now() < deadline, "part 1 never stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    // 100k events (about 30 MB) while the server is down: more than the
    // pipeline's channel and the pipe hold, so most of it reached the sink
    // once the writes return, and far more than its 64 KiB buffer.
    w.write_all(&event_lines(part1..part2));
    // The outage must be one the sink saw: an outage shorter than the
    // acknowledgement timeout is bridged by the client's own buffer, and
    // then there is nothing to report and no "publishing again".
    wait_for_text(
        &err,
        "not acknowledged (",
        "the sink did not see the outage",
    );
    server.restart();
    // The sink reconnects by itself and says so once an acknowledgement
    // comes again.
    wait_for_text(
        &err,
        "publishing again after",
        "the sink did not publish again",
    );
    w.write_all(&event_lines(part2..part3));
    drop(w);
    let st = wait_deadline(&mut node, "node spf");
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(st.success(), "{err}");
    assert!(
        err.contains("not acknowledged ("),
        "the outage was reported: {err}"
    );
    let acked = number_before(&err, "records acknowledged").expect(&err);
    let lost = number_before(&err, "lost (buffer full)").unwrap_or(0);
    if spool {
        assert_eq!(lost, 0, "{err}");
        assert!(!err.contains("undelivered"), "{err}");
    } else {
        assert!(lost > 0, "{err}");
        assert!(err.contains(&format!("undelivered {lost}")), "{err}");
    }
    assert!(!err.contains("in no published lost marker"), "{err}");

    let central = central_config(
        dir.path(),
        "central",
        &server.url(),
        "raw",
        "exit_at_end = true\nview = \"syscalls\"",
    );
    let out = spf_run(&central);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let (ids, central_lost, markers) = ids_and_lost(&dir.path().join("central.ndjson"));
    // Each event at most once, in order.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "order or repeats");
    // Everything the sink had acknowledged is there, and what it dropped is
    // counted in the lost markers.
    assert_eq!(ids.len() as u64 + markers, acked, "{err}");
    assert_eq!(central_lost, lost, "{err}");
    assert_eq!(ids.len() as u64 + lost, part3);
    // What was written before the outage is whole, and what was written
    // after the restart came through, from the same spf.
    assert_eq!(&ids[..part1 as usize], (0..part1).collect::<Vec<_>>());
    assert!(ids.iter().any(|&i| i >= part2), "nothing after the restart");
    if spool {
        assert_eq!(ids, (0..part3).collect::<Vec<_>>());
    }
}

#[test]
fn a_central_consumer_stopped_and_restarted_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    create_stream(&server.url());
    let total = 30_000u64;
    let cap = write_file(dir.path(), "cap.ndjson", event_lines(0..total));
    // Small messages and single-message pulls make the central slow enough
    // to be stopped in the middle.
    let node = node_config(
        dir.path(),
        "node-c",
        &server.url(),
        &cap,
        "message_bytes = 1024\n",
    );
    let out = spf_run(&node);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains(&format!("{total} records acknowledged")));

    let first = central_config(
        dir.path(),
        "first",
        &server.url(),
        "raw",
        "batch = 1\nview = \"syscalls\"",
    );
    let mut c = spf()
        .args(["run", "-c"])
        .arg(&first)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out1 = dir.path().join("first.ndjson");
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read(&out1).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) < 300 {
        assert!(
            Instant::now() < deadline,
            "the first central run shows nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = wait_deadline(&mut c, "first central");
    assert!(st.success());
    let second = central_config(
        dir.path(),
        "second",
        &server.url(),
        "raw",
        "batch = 1\nview = \"syscalls\"\nexit_at_end = true",
    );
    let out = spf_run(&second);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let (a, lost_a, _) = ids_and_lost(&out1);
    let (b, lost_b, _) = ids_and_lost(&dir.path().join("second.ndjson"));
    assert_eq!((lost_a, lost_b), (0, 0));
    assert!(
        !a.is_empty() && (a.len() as u64) < total,
        "stopped midway: {}",
        a.len()
    );
    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[test]
fn wrong_credentials_no_server_and_no_stream_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(
        dir.path(),
        "authorization { user: spf, password: \"right-one\" }",
    );
    rt().block_on(async {
        let c =
            async_nats::ConnectOptions::with_user_and_password("spf".into(), "right-one".into())
                .connect(server.url())
                .await
                .unwrap();
        async_nats::jetstream::new(c)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "SPF".into(),
                subjects: vec!["spf.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let cap = write_file(dir.path(), "cap.ndjson", event_lines(0..10));
    let url = server.url();
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    let check = |name: &str, url: &str, extra: &str, code: i32, want: &str, source: bool| {
        let cfg = if source {
            let cfg = central_config(dir.path(), name, url, "raw", extra);
            // The stream named by `extra` instead of the helper's.
            if extra.contains("stream = ") {
                let text = std::fs::read_to_string(&cfg).unwrap();
                std::fs::write(&cfg, text.replacen("stream = \"SPF\"\n", "", 1)).unwrap();
            }
            cfg
        } else {
            node_config(dir.path(), name, url, &cap, extra)
        };
        let started = Instant::now();
        let out = spf_run(&cfg);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} took {:?}",
            started.elapsed()
        );
    };
    let auth = "user = \"spf\"\npassword = \"right-one\"\n";
    check("good", &url, auth, 0, "10 records acknowledged", false);
    check(
        "good-source",
        &url,
        &format!("{auth}exit_at_end = true"),
        0,
        "10 events",
        true,
    );
    let wrong = "user = \"spf\"\npassword = \"wrong\"\n";
    check(
        "wrong-password",
        &url,
        wrong,
        1,
        "authorization violation",
        false,
    );
    check(
        "wrong-password-source",
        &url,
        wrong,
        1,
        "authorization violation",
        true,
    );
    check("no-auth", &url, "", 1, "authorization violation", false);
    let fast = format!("{auth}connect_timeout_ms = 1000\n");
    check("unreachable", &nobody, &fast, 1, "cannot connect", false);
    check(
        "unreachable-source",
        &nobody,
        &fast,
        1,
        "cannot connect",
        true,
    );
    check(
        "no-stream-sink",
        &url,
        &format!("{auth}subject = \"other.{{node}}.{{kind}}\"\n"),
        1,
        "no JetStream stream takes subject `other.no-stream-sink.events`",
        false,
    );
    check(
        "no-stream-source",
        &url,
        &format!("{auth}stream = \"NOPE\"\n"),
        1,
        "stream `NOPE` not found",
        true,
    );
    check(
        "bad-kind",
        &url,
        "records = [\"frames\"]\n",
        2,
        "unknown record kind `frames`",
        false,
    );
    check(
        "no-creds-file",
        &url,
        "credentials = \"/nonexistent/spf.creds\"\n",
        2,
        "cannot read `/nonexistent/spf.creds`",
        false,
    );
}
