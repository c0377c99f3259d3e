//! Integration tests: the http1 and auto decoders on real traffic between
//! independent HTTP implementations over real Unix sockets — nginx and curl,
//! Python's http.server, a Python h2 server upgraded from HTTP/1.1 (h2c), a
//! Docker-style hijacking server, raw pipelined writes.
//!
//! A recording relay sits between client and server and records what each
//! side wrote as connection-view events (one per read: the sender's pid and
//! command, as SO_PEERCRED gives them, its role, the byte position in its
//! direction), as the connection stage hands them to decoders. What the
//! decoders make of the recording is compared with what the peers sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use spf_decoders::auto::AutoConfig;
use spf_pipeline::config::{BuildContext, Registry};
use spf_pipeline::{Decoder, Event, Out, Record, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::relay::{Recording, front};
use crate::util::{test_bytes, write_file};

fn decoder(toml: &str) -> Box<dyn Decoder> {
    let mut reg = Registry::new();
    spf_decoders::register(&mut reg);
    let cfg = spf_pipeline::config::parse(
        &reg,
        "test",
        &format!("[source]\ntype = \"file\"\npath = \"/dev/null\"\n[decoder]\n{toml}"),
    )
    .unwrap();
    cfg.decoder.build(&BuildContext::default()).unwrap()
}

/// Decodes events, closing every connection at the end; returns the records
/// as NDJSON values, written by the same encoder the sinks use.
fn decode(d: &mut dyn Decoder, events: &[Arc<Event>]) -> Vec<Value> {
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    let mut conns: Vec<u64> = Vec::new();
    for e in events {
        if !conns.contains(&e.conn) {
            conns.push(e.conn);
        }
        d.decode(e, &mut out);
    }
    for c in conns {
        d.closed(c, &mut out);
    }
    d.finish(&mut out);
    recs.iter()
        .map(|r: &Record| {
            let mut buf = Vec::new();
            spf_pipeline::ndjson::encode(r, &mut buf);
            serde_json::from_slice(&buf).unwrap()
        })
        .collect()
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn http1_of<'a>(v: &'a [Value], conn: u64, ty: &str) -> Vec<&'a Value> {
    v.iter()
        .filter(|r| r["conn"] == conn && r["http1"]["type"] == ty)
        .map(|r| &r["http1"])
        .collect()
}

fn exchanges_of(v: &[Value], conn: u64) -> Vec<&Value> {
    v.iter()
        .filter(|r| r["conn"] == conn && r.get("exchange").is_some())
        .map(|r| &r["exchange"])
        .collect()
}

/// The body of request or response `index` on `conn`, as captured (`data`)
/// or decompressed (`decoded`).
fn body_of(v: &[Value], conn: u64, message: &str, index: u64, field: &str) -> Vec<u8> {
    http1_of(v, conn, "body")
        .into_iter()
        .filter(|b| b["message"] == message && b["index"] == index)
        .flat_map(|b| b64(b[field].as_str().unwrap_or("")))
        .collect()
}

/// No error, and nothing skipped.
fn assert_clean(v: &[Value]) {
    let bad: Vec<&Value> = v
        .iter()
        .filter(|r| r.get("error").is_some() || r["http1"]["type"] == "skipped")
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Every exchange: latency positive and no longer than the capture of it.
fn assert_latencies(v: &[Value], events: &[Arc<Event>]) {
    let first = events.iter().map(|e| e.ts_ns).min().unwrap();
    let last = events.iter().map(|e| e.ts_ns).max().unwrap();
    for r in v.iter().filter(|r| r.get("exchange").is_some()) {
        let x = &r["exchange"];
        if x["error"].is_null() {
            let l = x["latency_ns"].as_u64().unwrap();
            let started = x["started_ns"].as_u64().unwrap();
            assert!(l > 0, "{x}");
            assert!(started >= first && started + l <= last, "{x}");
            assert_eq!(started + l, r["ts_ns"].as_u64().unwrap(), "{x}");
        }
    }
}

pub(crate) fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-S"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited early: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server process, ended (by its pid) when dropped.
pub(crate) struct Server(Child);

impl Server {
    /// Starts `cmd` and waits until it has made `sock`.
    pub(crate) fn spawn(cmd: &mut Command, sock: &Path) -> Server {
        let mut child = cmd.spawn().expect("starting a server");
        wait_for(sock, &mut child);
        Server(child)
    }

    /// Ends the server now.
    pub(crate) fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/install-deps");
}

/// nginx serving `www` on a Unix socket, with sendfile, an echo location
/// for request bodies, a 204 location and a failing one (503).
pub(crate) fn nginx(dir: &Path) -> (Server, PathBuf) {
    let sock = dir.join("nginx.sock");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(format!("tmp-{t}"))).unwrap();
    }
    let d = dir.display();
    let conf = write_file(
        dir,
        "nginx.conf",
        format!(
            "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;\n\
             daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\n\
             http {{\n  access_log off;\n  sendfile on;\n  if_modified_since before;\n\
               client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n\
               fastcgi_temp_path {d}/tmp-fastcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n\
               scgi_temp_path {d}/tmp-scgi;\n  default_type application/octet-stream;\n\
               types {{ application/json json; text/plain txt; }}\n\
               server {{\n    listen unix:{};\n    root {};\n\
                 location /echo {{ client_body_buffer_size 1m; echo_read_request_body; echo_request_body; }}\n\
                 location = /empty {{ return 204; }}\n\
                 location = /fail {{ return 503; }}\n  }}\n}}\n",
            sock.display(),
            www.display()
        ),
    );
    let mut child = Command::new(tool("nginx"))
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    wait_for(&sock, &mut child);
    (Server(child), sock)
}

pub(crate) fn www(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join("www").join(name), data).unwrap();
}

/// The events of each connection, by connection.
fn by_conn(events: &[Arc<Event>]) -> BTreeMap<u64, Vec<Arc<Event>>> {
    let mut m: BTreeMap<u64, Vec<Arc<Event>>> = BTreeMap::new();
    for e in events {
        m.entry(e.conn).or_default().push(Arc::clone(e));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_curl() {
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, sock) = nginx(dir.path());
    let small = br#"{"containers":[{"Id":"4f2a","State":"running"}]}"#;
    let big = test_bytes(1 << 20, 11);
    www(dir.path(), "small.json", small);
    www(dir.path(), "big.bin", &big);
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "nginx", &sock, &cap);
    let r = relay.to_str().unwrap();
    let payload = test_bytes(200_000, 5);
    let payload_file = write_file(dir.path(), "payload.bin", &payload);
    let p = format!("@{}", payload_file.display());
    // 1: keep-alive, three requests on one connection (the 1 MiB file goes
    //    out with sendfile).
    let got = curl(&[
        "--unix-socket",
        r,
        "http://localhost/small.json",
        "http://localhost/big.bin",
        "http://localhost/empty",
    ]);
    assert_eq!(got.len(), small.len() + big.len());
    // 2: HEAD.
    curl(&["--unix-socket", r, "-I", "http://localhost/big.bin"]);
    // 3: POST with Content-Length, echoed back.
    assert_eq!(
        curl(&[
            "--unix-socket",
            r,
            "--data-binary",
            &p,
            "http://localhost/echo"
        ]),
        payload
    );
    // 4: chunked upload.
    let echoed = curl(&[
        "--unix-socket",
        r,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &p,
        "http://localhost/echo",
    ]);
    assert_eq!(echoed, payload);
    // 5: Expect: 100-continue.
    curl(&[
        "--unix-socket",
        r,
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &p,
        "http://localhost/echo",
    ]);
    // 6: 304.
    curl(&[
        "--unix-socket",
        r,
        "-z",
        "Jan 1 2100 00:00:00 GMT",
        "http://localhost/small.json",
    ]);
    cap.closed().await;
    let events = cap.events();
    let v = decode(decoder("type = \"http1\"").as_mut(), &events);
    assert_clean(&v);
    assert_latencies(&v, &events);
    let conns = by_conn(&events);
    assert_eq!(conns.len(), 6, "one connection per curl");
    let c: Vec<u64> = conns.keys().copied().collect();

    // Keep-alive: three exchanges on one connection, bodies byte-exact.
    let x = exchanges_of(&v, c[0]);
    let got: Vec<(&str, &str, u64)> = x
        .iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap(),
                x["path"].as_str().unwrap(),
                x["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/small.json", 200),
            ("GET", "/big.bin", 200),
            ("GET", "/empty", 204)
        ]
    );
    assert_eq!(body_of(&v, c[0], "response", 0, "data_b64"), small);
    assert_eq!(body_of(&v, c[0], "response", 1, "data_b64"), big);
    assert!(x.iter().all(|x| x["authority"] == "localhost"));
    assert!(
        x.iter()
            .all(|x| x["client_comm"] == "curl" && x["server_comm"] == "nginx")
    );
    let req = &http1_of(&v, c[0], "request")[0];
    assert_eq!(req["headers"][0], serde_json::json!(["Host", "localhost"]));
    // HEAD: a length, no body.
    let x = exchanges_of(&v, c[1]);
    assert_eq!(
        (x[0]["method"].as_str(), x[0]["status"].as_u64()),
        (Some("HEAD"), Some(200))
    );
    assert_eq!(http1_of(&v, c[1], "response")[0]["content_length"], 1 << 20);
    assert!(http1_of(&v, c[1], "body").is_empty());
    // POST with a length, and the chunked upload: both bodies exact.
    for (conn, framing) in [(c[2], "length"), (c[3], "chunked")] {
        assert_eq!(http1_of(&v, conn, "request")[0]["body"], framing);
        assert_eq!(body_of(&v, conn, "request", 0, "data_b64"), payload);
        assert_eq!(body_of(&v, conn, "response", 0, "data_b64"), payload);
        let x = exchanges_of(&v, conn);
        assert_eq!(
            (x[0]["method"].as_str(), x[0]["status"].as_u64()),
            (Some("POST"), Some(200))
        );
        let wire: u64 = events
            .iter()
            .filter(|e| e.conn == conn && e.role == Role::Client)
            .map(|e| e.len)
            .sum();
        assert_eq!(
            x[0]["request_bytes"], wire,
            "every byte of the request counted"
        );
    }
    // 100-continue: an interim response, then the final one.
    let st: Vec<u64> = http1_of(&v, c[4], "response")
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(st, [100, 200]);
    assert_eq!(exchanges_of(&v, c[4])[0]["status"], 200);
    let wire: u64 = events
        .iter()
        .filter(|e| e.conn == c[4] && e.role == Role::Client)
        .map(|e| e.len)
        .sum();
    assert_eq!(
        exchanges_of(&v, c[4])[0]["request_bytes"],
        wire,
        "the body sent after the 100 counts"
    );
    assert_eq!(body_of(&v, c[4], "request", 0, "data_b64"), payload);
    // 304: no body.
    assert_eq!(exchanges_of(&v, c[5])[0]["status"], 304);
    assert!(http1_of(&v, c[5], "body").is_empty());
}

/// Keep-alive responses whose heads a small snaplen cuts: after the first
/// cut head the decoder looks for the next message start; the next response
/// begins its write, and is paired with its request from its status line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_by_snaplen_still_answer_their_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, sock) = nginx(dir.path());
    www(dir.path(), "a.txt", b"first file\n");
    www(dir.path(), "b.txt", b"second file\n");
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "cut", &sock, &cap);
    let r = relay.to_str().unwrap();
    let urls = ["/a.txt", "/b.txt", "/a.txt", "/missing", "/b.txt"];
    let mut args = vec!["--unix-socket", r, "-H", "User-Agent:"];
    let full: Vec<String> = urls
        .iter()
        .map(|u| format!("http://localhost{u}"))
        .collect();
    args.extend(full.iter().map(String::as_str));
    curl(&args);
    cap.closed().await;
    // What a 100-byte snaplen captures of each write: the requests whole,
    // the responses' heads (nginx's run to about 240 bytes) cut.
    let events: Vec<Arc<Event>> = cap
        .events()
        .iter()
        .map(|e| {
            let mut e = (**e).clone();
            e.data = e.data.slice(..e.data.len().min(100));
            e.truncated = (e.data.len() as u64) < e.len;
            Arc::new(e)
        })
        .collect();
    assert!(events.iter().any(|e| e.truncated), "some head is cut");
    let v = decode(decoder("type = \"http1\"").as_mut(), &events);
    let x = exchanges_of(&v, 1);
    let got: Vec<(&str, u64)> = x
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap(),
                x["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/a.txt", 200),
            ("/b.txt", 200),
            ("/a.txt", 200),
            ("/missing", 404),
            ("/b.txt", 200)
        ],
        "{x:#?}"
    );
    for x in &x {
        assert_eq!(x["error"], "response head not fully captured");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_pair_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, sock) = nginx(dir.path());
    www(dir.path(), "a.txt", b"first file\n");
    www(dir.path(), "b.txt", b"third file\n");
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "nginx", &sock, &cap);
    let mut s = UnixStream::connect(&relay).await.unwrap();
    // Three requests in one write.
    s.write_all(
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    drop(s);
    cap.closed().await;
    let events = cap.events();
    assert_eq!(
        events.iter().filter(|e| e.role == Role::Client).count(),
        1,
        "the requests went out in one write"
    );
    let v = decode(decoder("type = \"http1\"").as_mut(), &events);
    assert_clean(&v);
    assert_latencies(&v, &events);
    let x = exchanges_of(&v, 1);
    let pairs: Vec<(&str, u64)> = x
        .iter()
        .map(|x| (x["path"].as_str().unwrap(), x["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(pairs, [("/a.txt", 200), ("/missing", 404), ("/b.txt", 200)]);
    assert_eq!(body_of(&v, 1, "response", 0, "data_b64"), b"first file\n");
    assert_eq!(body_of(&v, 1, "response", 2, "data_b64"), b"third file\n");
    // Heads and bodies of the responses add up to what the client read.
    let total: u64 = x
        .iter()
        .map(|x| x["response_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, got.len() as u64);
}

const PY_SERVER: &str = r#"
import gzip, http.server, os, socketserver, sys
DATA = b"".join(b'{"line": %d, "text": "a readable line of JSON"}\n' % i for i in range(3000))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/gzip":
            body = gzip.compress(DATA)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/gzip-close":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(gzip.compress(DATA))
            self.close_connection = True
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(DATA), 7000):
                self.wfile.write(DATA[i:i + 7000])
                self.wfile.flush()
            self.close_connection = True
    def address_string(self):
        return "unix"
    def log_message(self, *a):
        pass
class S(socketserver.UnixStreamServer):
    pass
if os.path.exists(sys.argv[1]):
    os.unlink(sys.argv[1])
S(sys.argv[1], H).serve_forever()
"#;

fn python(dir: &Path, script: &str, name: &str) -> (Server, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let file = write_file(dir, &format!("{name}.py"), script);
    let mut child = Command::new(tool("python3"))
        .arg(&file)
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting python3");
    wait_for(&sock, &mut child);
    (Server(child), sock)
}

fn py_data() -> Vec<u8> {
    (0..3000)
        .flat_map(|i| {
            format!("{{\"line\": {i}, \"text\": \"a readable line of JSON\"}}\n").into_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_close_delimited_and_gzip_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (_py, sock) = python(dir.path(), PY_SERVER, "py");
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "py", &sock, &cap);
    let r = relay.to_str().unwrap();
    let data = py_data();
    assert_eq!(curl(&["--unix-socket", r, "http://localhost/plain"]), data);
    // curl without --compressed: the body arrives as the server sent it.
    curl(&[
        "--unix-socket",
        r,
        "-o",
        "/dev/null",
        "http://localhost/gzip",
    ]);
    curl(&[
        "--unix-socket",
        r,
        "-o",
        "/dev/null",
        "http://localhost/gzip-close",
    ]);
    cap.closed().await;
    let events = cap.events();
    let v = decode(decoder("type = \"http1\"").as_mut(), &events);
    assert_clean(&v);
    assert_latencies(&v, &events);
    // Read until close: the body is complete when the connection ends.
    assert_eq!(http1_of(&v, 1, "response")[0]["body"], "until-close");
    assert_eq!(body_of(&v, 1, "response", 0, "data_b64"), data);
    assert_eq!(exchanges_of(&v, 1)[0]["status"], 200);
    assert!(exchanges_of(&v, 1)[0]["error"].is_null());
    // gzip, with a length and until the close: shown decompressed.
    for conn in [2, 3] {
        assert_eq!(
            body_of(&v, conn, "response", 0, "decoded_b64"),
            data,
            "conn {conn}"
        );
        let gz = body_of(&v, conn, "response", 0, "data_b64");
        assert_eq!(&gz[..2], b"\x1f\x8b");
        assert!(exchanges_of(&v, conn)[0]["error"].is_null());
    }
}

const PY_H2: &str = r#"
import os, socket, sys, threading
import h2.config, h2.connection, h2.events
BODY = b"hello over h2c\n" * 100
def serve(s):
    cfg = h2.config.H2Configuration(client_side=False)
    conn = h2.connection.H2Connection(config=cfg)
    first = s.recv(65535)
    if first.startswith(b"PRI * HTTP/2.0"):
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        data = first
    else:
        while b"\r\n\r\n" not in first:
            first += s.recv(65535)
        head, data = first.split(b"\r\n\r\n", 1)
        settings = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"http2-settings:")][0]
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn.initiate_upgrade_connection(settings_header=settings)
        conn.send_headers(1, [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(BODY)))])
        conn.send_data(1, BODY, end_stream=True)
        s.sendall(conn.data_to_send())
    while True:
        if data:
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(BODY)))])
                    conn.send_data(ev.stream_id, BODY, end_stream=True)
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        data = s.recv(65535)
        if not data:
            break
    s.close()
if os.path.exists(sys.argv[1]):
    os.unlink(sys.argv[1])
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1])
l.listen(16)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn curl_has_http2() -> bool {
    Command::new("curl")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_decoded_as_http1_then_http2() {
    assert!(
        curl_has_http2(),
        "curl without HTTP/2: run scripts/install-deps"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_py, sock) = python(dir.path(), PY_H2, "h2srv");
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "h2", &sock, &cap);
    let body = curl(&[
        "--http2",
        "--unix-socket",
        relay.to_str().unwrap(),
        "http://localhost/up",
    ]);
    assert_eq!(body, b"hello over h2c\n".repeat(100));
    cap.closed().await;
    let events = cap.events();
    let v = decode(decoder("type = \"http1\"").as_mut(), &events);
    let errors: Vec<&Value> = v.iter().filter(|r| r.get("error").is_some()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let req = &http1_of(&v, 1, "request")[0];
    assert_eq!(req["target"], "/up");
    assert!(
        req["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "Upgrade" && h[1] == "h2c")
    );
    assert_eq!(http1_of(&v, 1, "response")[0]["status"], 101);
    assert_eq!(http1_of(&v, 1, "switch")[0]["decoded_as"], "http2");
    assert_eq!(exchanges_of(&v, 1)[0]["status"], 101);
    // From the byte after the 101 on: HTTP/2, the preface first on the
    // client's side, the response on stream 1.
    let h2: Vec<&Value> = v.iter().filter(|r| r["decoder"] == "http2").collect();
    let client_first = h2.iter().find(|r| r["role"] == "client").unwrap();
    assert_eq!(client_first["http2"]["type"], "PREFACE");
    let status = h2.iter().find(|r| {
        r["http2"]["type"] == "HEADERS"
            && r["http2"]["headers"]
                .as_array()
                .is_some_and(|h| h.iter().any(|p| p[0] == ":status" && p[1] == "200"))
    });
    assert_eq!(status.unwrap()["http2"]["stream_id"], 1);
    let data: Vec<u8> = h2
        .iter()
        .filter(|r| r["http2"]["type"] == "DATA" && r["http2"]["stream_id"] == 1)
        .flat_map(|r| b64(r["http2"]["data_b64"].as_str().unwrap()))
        .collect();
    assert_eq!(data, b"hello over h2c\n".repeat(100));
}

/// A server that answers like Docker's attach: 101 UPGRADED, then raw
/// stream bytes both ways (it echoes what the client writes).
async fn hijack_server(l: UnixListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(b[0]);
            }
            s.write_all(
                b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\
                  Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x06ready\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_style_hijack_is_raw_after_the_101() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    tokio::spawn(hijack_server(UnixListener::bind(&sock).unwrap()));
    let cap = Arc::new(Recording::default());
    let relay = front(dir.path(), "docker", &sock, &cap);
    let mut s = UnixStream::connect(&relay).await.unwrap();
    s.write_all(
        b"POST /v1.43/containers/4f2a/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: api\r\n\
          Content-Type: text/plain\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"ready\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // Raw bytes that look like HTTP, and some that do not.
    let stdin: &[&[u8]] = &[b"GET / HTTP/1.1\r\n\r\n", b"\x00\xffbinary\n"];
    for chunk in stdin {
        s.write_all(chunk).await.unwrap();
        let mut echoed = vec![0u8; chunk.len()];
        s.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, chunk);
    }
    drop(s);
    cap.closed().await;
    let events = cap.events();
    for toml in ["type = \"http1\"", "type = \"auto\""] {
        let v = decode(decoder(toml).as_mut(), &events);
        assert_clean(&v);
        assert_eq!(http1_of(&v, 1, "request").len(), 1, "{toml}");
        assert_eq!(http1_of(&v, 1, "response")[0]["reason"], "UPGRADED");
        let sw = &http1_of(&v, 1, "switch")[0];
        assert_eq!(
            (sw["protocol"].as_str(), sw["decoded_as"].as_str()),
            (Some("tcp"), Some("raw"))
        );
        // Everything after the 101's head, each way, as raw records, exactly.
        for (role, want) in [
            (
                "server",
                [
                    &b"\x01\x00\x00\x00\x00\x00\x00\x06ready\n"[..],
                    stdin[0],
                    stdin[1],
                ]
                .concat(),
            ),
            ("client", stdin.concat()),
        ] {
            let raw: Vec<u8> = v
                .iter()
                .filter(|r| r["decoder"] == "raw" && r["role"] == role)
                .flat_map(|r| b64(r["data_b64"].as_str().unwrap()))
                .collect();
            assert_eq!(raw, want, "{toml}: {role}");
        }
    }
}

/// Echoes whatever it reads (RESP replies are not what this is about: the
/// bytes on the wire are).
async fn echo_server(l: UnixListener, reply: Option<&'static [u8]>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let r = reply.unwrap_or(&buf[..n]);
                        if s.write_all(r).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Stands in for a plugin decoder that implements `detect`: claims
/// connections that open with a RESP array.
struct RespLike(Arc<str>);

impl Decoder for RespLike {
    fn name(&self) -> &str {
        &self.0
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        out.push(Record::raw(Arc::clone(event), Arc::clone(&self.0)));
    }

    fn detect(&mut self, data: &[u8], _event: &Event) -> u8 {
        match data {
            [b'*', d, ..] if d.is_ascii_digit() => 80,
            _ => 0,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_detects_each_connection_of_a_mix() {
    assert!(
        curl_has_http2(),
        "curl without HTTP/2: run scripts/install-deps"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_nginx, nginx_sock) = nginx(d);
    let small = br#"{"ok":true}"#;
    let big = test_bytes(300_000, 3);
    www(d, "small.json", small);
    www(d, "big.bin", &big);
    let (_py, h2_sock) = python(d, PY_H2, "h2srv");
    let resp_sock = d.join("redis.sock");
    tokio::spawn(echo_server(
        UnixListener::bind(&resp_sock).unwrap(),
        Some(b"+PONG\r\n"),
    ));
    let junk_sock = d.join("junk.sock");
    tokio::spawn(echo_server(UnixListener::bind(&junk_sock).unwrap(), None));
    let cap = Arc::new(Recording::default());
    let http = front(d, "nginx", &nginx_sock, &cap);
    let h2 = front(d, "h2", &h2_sock, &cap);
    let resp = front(d, "redis", &resp_sock, &cap);
    let junk = front(d, "junk", &junk_sock, &cap);

    // One connection each, one after the other, so their numbers are known.
    let mut kinds = Vec::new();
    curl(&[
        "--unix-socket",
        http.to_str().unwrap(),
        "http://localhost/big.bin",
        "http://localhost/small.json",
        "http://localhost/small.json",
    ]);
    kinds.push("http1");
    curl(&[
        "--http2",
        "--unix-socket",
        h2.to_str().unwrap(),
        "http://localhost/up",
    ]);
    kinds.push("h2c");
    curl(&[
        "--http2-prior-knowledge",
        "--unix-socket",
        h2.to_str().unwrap(),
        "http://localhost/pk",
    ]);
    kinds.push("http2");
    {
        let mut s = UnixStream::connect(&resp).await.unwrap();
        for cmd in [
            &b"*1\r\n$4\r\nPING\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        ] {
            s.write_all(cmd).await.unwrap();
            let mut r = [0u8; 7];
            s.read_exact(&mut r).await.unwrap();
        }
    }
    kinds.push("resp");
    {
        let mut s = UnixStream::connect(&junk).await.unwrap();
        for i in 0..5 {
            let b = test_bytes(700, 100 + i)[256..].to_vec();
            s.write_all(&b).await.unwrap();
            let mut r = vec![0u8; b.len()];
            s.read_exact(&mut r).await.unwrap();
        }
    }
    kinds.push("random");
    cap.closed().await;
    let events = cap.events();
    assert_eq!(by_conn(&events).len(), kinds.len());

    // The example RESP plugin takes part and claims the RESP connection
    // through the ABI's detect entry, alone or next to another claimer.
    let resp_lib = crate::plugins::example("spf_resp", d);
    let plugin =
        spf_pipeline::plugin::PluginDecoderConfig::open(&resp_lib, &serde_json::json!({}), 100)
            .unwrap();
    let ctx = BuildContext::default();
    let with_plugin = AutoConfig {
        plugins: vec![plugin],
        ..AutoConfig::default()
    };
    for (claimer, resp_as) in [(false, "resp"), (true, "resp")] {
        let extra: Vec<Box<dyn Decoder>> = if claimer {
            vec![Box::new(RespLike(Arc::from("resp")))]
        } else {
            Vec::new()
        };
        let mut auto = with_plugin.build_with(&ctx, extra).unwrap();
        let v = decode(&mut auto, &events);
        let errors: Vec<&Value> = v.iter().filter(|r| r.get("error").is_some()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        for (i, kind) in kinds.iter().enumerate() {
            let conn = i as u64 + 1;
            let mut decoders: Vec<&str> = v
                .iter()
                .filter(|r| r["conn"] == conn)
                .map(|r| r["decoder"].as_str().unwrap())
                .collect();
            decoders.dedup();
            let want: &[&str] = match *kind {
                "http1" => &["http1"],
                "h2c" => &["http1", "http2"],
                "http2" => &["http2"],
                "resp" => &[resp_as],
                _ => &["raw"],
            };
            assert_eq!(decoders, want, "connection {conn} ({kind})");
        }
        let x = exchanges_of(&v, 1);
        assert_eq!(x.len(), 3);
        assert_eq!(body_of(&v, 1, "response", 0, "data_b64"), big);
    }

    // Joined midway through the 300 KB body: the next requests are found.
    let conn1: Vec<Arc<Event>> = events.iter().filter(|e| e.conn == 1).cloned().collect();
    let start = conn1
        .iter()
        .position(|e| e.role == Role::Server && e.pos.unwrap() > 100_000)
        .unwrap();
    let mut auto = decoder("type = \"auto\"");
    let v = decode(auto.as_mut(), &conn1[start..]);
    assert!(v.iter().all(|r| r["decoder"] == "http1"), "{v:#?}");
    let paths: Vec<&str> = exchanges_of(&v, 1)
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/small.json", "/small.json"]);
    let skipped = http1_of(&v, 1, "skipped");
    assert!(!skipped.is_empty());
    assert!(v.iter().all(|r| r.get("error").is_none()), "{v:#?}");
}

#[test]
fn http1_and_auto_are_registered_and_auto_is_the_default() {
    let mut reg = Registry::new();
    spf_decoders::register(&mut reg);
    let types = reg.decoder_types();
    assert!(types.contains(&"http1") && types.contains(&"auto"));
    let cfg = spf_pipeline::config::parse(
        &reg,
        "t",
        "[source]\ntype = \"file\"\npath = \"/dev/null\"\n",
    )
    .unwrap();
    assert_eq!(cfg.decoder_type, "auto");
}

/// A capture written with the default decoder replays each byte once: the
/// raw records `auto` makes of a connection it did not recognise are not
/// written again beside the events.
#[test]
fn default_decoder_capture_replays_each_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_bytes(30_000, 9);
    let dump = write_file(dir.path(), "dump.bin", &data);
    let out = dir.path().join("capture.ndjson");
    let o = crate::util::spf_output(&[
        "run",
        "-q",
        "-c",
        write_file(
            dir.path(),
            "c.toml",
            format!(
                "[source]\ntype = \"file\"\npath = \"{}\"\nformat = \"bytes\"\nchunk = 1000\n\
                 [[sink]]\ntype = \"ndjson\"\npath = \"{}\"\nevents = true\n",
                dump.display(),
                out.display()
            ),
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::util::stderr_text(&o));
    // Replayed as it was captured, syscall by syscall: the dump, once.
    let o = crate::util::spf_output(&[
        "run",
        "-q",
        "--replay",
        out.to_str().unwrap(),
        "--view",
        "syscalls",
        "--decoder",
        "raw",
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", crate::util::stderr_text(&o));
    let back: Vec<u8> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["decoder"] == "raw")
        .flat_map(|l| b64(l["data_b64"].as_str().unwrap()))
        .collect();
    assert_eq!(back, data);
}

/// `spf run` with the probe, as users run it (connection view, `auto`):
/// curl against nginx, keep-alive, a 1 MiB file sent with sendfile and an
/// upload. Each exchange comes out once, paired, with the right processes,
/// and the sendfile body arrives whole from curl's receives.
#[test]
fn live_spf_run_curl_against_nginx() {
    let _g = crate::capture::lock();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, sock) = nginx(dir.path());
    let big = test_bytes(1 << 20, 21);
    www(dir.path(), "big.bin", &big);
    www(dir.path(), "small.json", br#"{"ok":true}"#);
    let payload_file = write_file(dir.path(), "payload.bin", test_bytes(50_000, 22));
    // Reads of the 1 MiB body are larger than the default snaplen.
    let args = [
        "--comm",
        "h1canary",
        "--comm",
        "curl",
        "--comm",
        "nginx",
        "--snaplen",
        "1048576",
    ];
    let Some(live) = crate::live::LiveSpf::start(
        "live_spf_run_curl_against_nginx",
        dir.path(),
        "h1canary",
        &args,
    ) else {
        return;
    };
    let s = sock.to_str().unwrap();
    let got = curl(&[
        "--unix-socket",
        s,
        "http://localhost/small.json",
        "http://localhost/big.bin",
    ]);
    assert_eq!(got.len(), 11 + big.len());
    let p = format!("@{}", payload_file.display());
    curl(&[
        "--unix-socket",
        s,
        "--data-binary",
        &p,
        "http://localhost/echo",
    ]);
    let (records, _) = live.stop();
    let mine: Vec<Value> = records
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p == s))
        .collect();
    let bad: Vec<&Value> = mine
        .iter()
        .filter(|r| r.get("error").is_some() || r["http1"]["type"] == "skipped")
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    let x: Vec<&Value> = mine
        .iter()
        .filter(|r| r.get("exchange").is_some())
        .map(|r| &r["exchange"])
        .collect();
    let calls: Vec<(&str, &str, u64)> = x
        .iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap(),
                x["path"].as_str().unwrap(),
                x["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/small.json", 200),
            ("GET", "/big.bin", 200),
            ("POST", "/echo", 200)
        ],
        "each exchange once"
    );
    for x in &x {
        assert_eq!(
            (x["client_comm"].as_str(), x["server_comm"].as_str()),
            (Some("curl"), Some("nginx"))
        );
        assert!(x["latency_ns"].as_u64().unwrap() > 0);
    }
    // The sendfile body, whole and exact, from the records of the decoder.
    let conn = mine.iter().find(|r| r.get("exchange").is_some()).unwrap()["conn"].clone();
    let body: Vec<u8> = mine
        .iter()
        .filter(|r| {
            r["conn"] == conn
                && r["http1"]["type"] == "body"
                && r["http1"]["message"] == "response"
                && r["http1"]["index"] == 1
        })
        .flat_map(|r| b64(r["http1"]["data_b64"].as_str().unwrap()))
        .collect();
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the 1 MiB body differs");
}
