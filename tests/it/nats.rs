//! The fleet path with a real `nats-server` (JetStream, file storage in a
//! temporary directory, a free port): node spf processes publish raw events,
//! a central spf consumes and decodes them.

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
            Err(_) => 0,
        }
    })
}

fn node_config(dir: &Path, name: &str, url: &str, input: &Path, extra: &str) -> PathBuf {
    write_file(
        dir,
        &format!("{name}.toml"),
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\n[decoder]\ntype = \"raw\"\n\
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
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(200)
                            .header("x-path", path.clone())
                            .body(Full::new(Bytes::from(format!("{path} got {body}"))))
                            .unwrap(),
                    )
                });
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
                .body(Full::new(Bytes::from(vec![b'a' + (i % 26) as u8; 10 + i * 37])))
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
        .map(|(n, cap)| {
            let cfg = node_config(dir.path(), n, &server.url(), cap, "");
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
        assert!(!err.contains("lost") && !err.contains("not acknowledged"), "{err}");
    }
    let central = central_config(dir.path(), "central", &server.url(), "http2", "exit_at_end = true");
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
        assert!(paths.iter().all(|p| p.starts_with(&format!("/{n}/"))), "{paths:?}");
    }
    // Nothing else came out: every record is one of the two nodes'.
    assert!(got.iter().all(|v| nodes.contains(&v["node"].as_str().unwrap_or(""))));
    // The same connection ids on both nodes stayed two connections each.
    let conns: std::collections::BTreeSet<u64> =
        got.iter().filter_map(|v| v["conn"].as_u64()).collect();
    assert_eq!(conns.len(), 2 + 3, "{conns:?}");
}
