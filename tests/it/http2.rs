//! Integration tests: the http2 decoder on real traffic between independent
//! HTTP/2 implementations over real Unix sockets.
//!
//! A recording relay sits between client and server: it copies bytes both ways
//! and records each read as an event, as the probe would see the client's sends
//! and receives. What the decoder makes of the recording is compared with what
//! each peer really sent and received: every header of every request and
//! response, including later requests on one connection that use the dynamic
//! table, and every gRPC message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use spf_decoders::http2::{Http2, Http2Config};
use spf_pipeline::{Body, Decoder, Direction, Event, Record, Role, SockKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

type Pairs = Vec<(String, String)>;

/// Events recorded by the relay, in the order they happened.
#[derive(Default)]
struct Capture {
    events: Mutex<Vec<Arc<Event>>>,
    seq: AtomicU64,
    conns: AtomicU64,
    /// Pumps still copying; both of a connection end once each side closed.
    active: AtomicU64,
}

impl Capture {
    fn record(&self, conn: u64, dir: Direction, data: &[u8]) {
        let mut ev = self.events.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        ev.push(Arc::new(Event {
            seq,
            ts_ns: seq,
            time_ns: seq,
            pid: 1,
            tid: 1,
            comm: Arc::from("client"),
            peer_pid: 2,
            path: Arc::from("relay.sock"),
            sock: SockKind::Stream,
            dir,
            conn,
            socket: 0,
            len: data.len() as u64,
            data: Bytes::copy_from_slice(data),
            truncated: false,
            ..Event::default()
        }));
    }

    /// The recording decoded in the syscall view (as the client's end sees
    /// it) and in the connection view.
    fn decode_views(&self) -> [Vec<Record>; 2] {
        let events = self.events.lock().unwrap().clone();
        [decode(&events), decode(&connection_view(&events))]
    }
}

fn decode(events: &[Arc<Event>]) -> Vec<Record> {
    let mut d = Http2::new(Http2Config::default());
    let mut out = Vec::new();
    for e in events {
        d.decode(e, &mut spf_pipeline::Out::collect(&mut out));
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    out
}

/// The relay's recording as the connection stage hands it on: every event
/// seen from its sender (the client's bytes from pid 1, the server's from
/// pid 2), with both sockets, the sender's role, whose syscall captured the
/// bytes, and where they begin in their direction's stream.
fn connection_view(events: &[Arc<Event>]) -> Vec<Arc<Event>> {
    let mut pos: HashMap<(u64, bool), u64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let from_client = e.dir == Direction::Send;
            let at = pos.entry((e.conn, from_client)).or_default();
            let start = *at;
            *at += e.data.len() as u64;
            let (client, server) = (1000 + 2 * e.conn, 1001 + 2 * e.conn);
            let (pid, comm, peer, peer_comm, socket, peer_socket, role) = if from_client {
                (1, "client", 2, "server", client, server, Role::Client)
            } else {
                (2, "server", 1, "client", server, client, Role::Server)
            };
            Arc::new(Event {
                pid,
                tid: pid,
                comm: Arc::from(comm),
                peer_pid: peer,
                peer_comm: Arc::from(peer_comm),
                dir: Direction::Send,
                socket,
                peer_socket,
                role,
                via: Some(if e.seq % 3 == 0 {
                    Direction::Recv
                } else {
                    Direction::Send
                }),
                pos: Some(start),
                ..(**e).clone()
            })
        })
        .collect()
}

/// Which way an event's bytes went, as the client's end sees it: `send` from
/// client to server, `recv` back.
fn way(e: &Event) -> Direction {
    match (e.via, e.role) {
        (Some(_), Role::Server) => Direction::Recv,
        (Some(_), _) => Direction::Send,
        (None, _) => e.dir,
    }
}

/// Exchange records: one per request, in order, each pairing the request
/// the server saw with the status the client got, between the relay's
/// client (pid 1) and the server (pid 2).
/// The exchange records among `recs`, in order.
fn exchanges(recs: &[Record]) -> Vec<&spf_pipeline::Exchange> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Exchange(x) => Some(&**x),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn check_exchange_records(recs: &[Record], seen: &[Seen], received: &[(u16, Pairs)]) {
    let x = exchanges(recs);
    assert_eq!(x.len(), seen.len(), "one exchange per request: {x:?}");
    let last_ts = recs
        .iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => Some(d.event.ts_ns),
            _ => None,
        })
        .max()
        .unwrap();
    for (i, (e, s)) in x.iter().zip(seen).enumerate() {
        assert_eq!(e.method.as_deref(), Some(s.method.as_str()), "exchange {i}");
        assert_eq!(e.path.as_deref(), Some(s.path.as_str()), "exchange {i}");
        assert_eq!(e.status, Some(u32::from(received[i].0)), "exchange {i}");
        assert_eq!(e.error, None, "exchange {i}");
        let latency = e.latency_ns.unwrap();
        assert!(
            latency > 0 && e.started_ns + latency <= last_ts,
            "exchange {i}: {e:?}"
        );
        assert!(e.request_bytes > 0 && e.response_bytes > 0, "exchange {i}");
        assert_eq!(e.client.pid, 1);
        assert_eq!(e.server.pid, 2);
    }
}

/// Accepts on `listen`, connects each client to `upstream`, copies both ways and
/// records every read: client to server as `send`, server to client as `recv`.
async fn relay(listen: UnixListener, upstream: PathBuf, cap: Arc<Capture>) {
    loop {
        let Ok((client, _)) = listen.accept().await else {
            return;
        };
        let server = UnixStream::connect(&upstream)
            .await
            .expect("relay: connect upstream");
        let conn = 1 + cap.conns.fetch_add(1, Ordering::SeqCst);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        cap.active.fetch_add(2, Ordering::SeqCst);
        tokio::spawn(pump(cr, sw, conn, Direction::Send, Arc::clone(&cap)));
        tokio::spawn(pump(sr, cw, conn, Direction::Recv, Arc::clone(&cap)));
    }
}

async fn pump(
    mut r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    conn: u64,
    dir: Direction,
    cap: Arc<Capture>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cap.record(conn, dir, &buf[..n]);
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    cap.active.fetch_sub(1, Ordering::SeqCst);
}

/// A server socket, a relay socket in front of it, and the capture.
struct Setup {
    _dir: tempfile::TempDir,
    front: PathBuf,
    cap: Arc<Capture>,
}

fn setup() -> (Setup, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("server.sock");
    let front = dir.path().join("relay.sock");
    let cap = Arc::new(Capture::default());
    let server_listener = UnixListener::bind(&server).unwrap();
    let relay_listener = UnixListener::bind(&front).unwrap();
    tokio::spawn(relay(relay_listener, server.clone(), Arc::clone(&cap)));
    (
        Setup {
            _dir: dir,
            front,
            cap,
        },
        server_listener,
    )
}

/// One decoded HEADERS frame (with its CONTINUATIONs).
#[derive(Debug, Clone)]
struct Hdr {
    dir: Direction,
    conn: u64,
    stream: u64,
    length: u64,
    end_stream: bool,
    headers: Pairs,
    grpc: Option<Value>,
}

fn http2_of(r: &Record) -> Option<(&Arc<Event>, Value)> {
    match r {
        Record::Decoded(d) => Some((&d.event, d.body.json()?.remove("http2")?)),
        _ => None,
    }
}

fn headers_frames(recs: &[Record]) -> Vec<Hdr> {
    recs.iter()
        .filter_map(http2_of)
        .filter(|(_, h)| h["type"] == "HEADERS")
        .map(|(e, h)| Hdr {
            dir: way(e),
            conn: e.conn,
            stream: h["stream_id"].as_u64().unwrap(),
            length: h["length"].as_u64().unwrap(),
            end_stream: h["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "END_STREAM"),
            headers: h["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            grpc: h.get("grpc").cloned(),
        })
        .collect()
}

fn assert_clean(recs: &[Record]) {
    let errs: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Error { code, message } => Some(format!("{code:?}: {message}")),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(errs.is_empty(), "decoder errors: {errs:?}");
    for h in headers_frames(recs) {
        for (n, _) in &h.headers {
            assert!(
                !n.starts_with("<unknown"),
                "placeholder in a capture seen from its start: {n}"
            );
        }
    }
}

fn regular(h: &Pairs) -> Pairs {
    let mut v: Pairs = h
        .iter()
        .filter(|(n, _)| !n.starts_with(':'))
        .cloned()
        .collect();
    v.sort();
    v
}

fn pseudo<'a>(h: &'a Pairs, name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn header_map_pairs(m: &http::HeaderMap) -> Pairs {
    let mut v: Pairs = m
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// What a server saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    method: String,
    path: String,
    headers: Pairs,
}

fn path_of(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default()
}

/// A hyper HTTP/2 server on `listener` that records each request it gets and
/// answers with a few headers, some the same every time, some not.
fn hyper_server(listener: UnixListener) -> Arc<Mutex<Vec<Seen>>> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let log = Arc::clone(&log);
                        async move {
                            let n = {
                                let mut l = log.lock().unwrap();
                                l.push(Seen {
                                    method: req.method().to_string(),
                                    path: path_of(req.uri()),
                                    headers: header_map_pairs(req.headers()),
                                });
                                l.len()
                            };
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(if n % 2 == 0 { 201 } else { 200 })
                                    .header("content-type", "text/plain")
                                    .header("cache-control", "no-cache")
                                    .header("x-served", format!("response-{n}"))
                                    .header("x-constant", "same-every-time")
                                    .body(Full::new(Bytes::from(format!("hello {n}"))))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    seen
}

/// Checks every request and response header list the decoder produced against
/// what the server received and what the client received.
fn check_exchange(recs: &[Record], seen: &[Seen], received: &[(u16, Pairs)], expect_shrink: bool) {
    let frames = headers_frames(recs);
    let reqs: Vec<&Hdr> = frames.iter().filter(|h| h.dir == Direction::Send).collect();
    assert_eq!(reqs.len(), seen.len(), "one request HEADERS per request");
    for (i, (h, s)) in reqs.iter().zip(seen).enumerate() {
        assert_eq!(
            pseudo(&h.headers, ":method"),
            Some(s.method.as_str()),
            "request {i}"
        );
        assert_eq!(
            pseudo(&h.headers, ":path"),
            Some(s.path.as_str()),
            "request {i}"
        );
        assert_eq!(regular(&h.headers), s.headers, "request {i} headers");
        let resp = frames
            .iter()
            .find(|r| r.dir == Direction::Recv && r.conn == h.conn && r.stream == h.stream)
            .unwrap_or_else(|| panic!("no response HEADERS on stream {}", h.stream));
        let (status, got) = &received[i];
        assert_eq!(
            pseudo(&resp.headers, ":status"),
            Some(status.to_string().as_str()),
            "response {i}"
        );
        assert_eq!(&regular(&resp.headers), got, "response {i} headers");
    }
    // Later requests reuse the dynamic table, so their header blocks shrink
    // (unless, as with a header too large for the table, nothing was indexed).
    if expect_shrink && reqs.len() > 1 && reqs[1].conn == reqs[0].conn {
        assert!(
            reqs[1].length < reqs[0].length,
            "second request block ({}) not smaller than the first ({})",
            reqs[1].length,
            reqs[0].length
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_and_server() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (s, listener) = setup();
    let seen = hyper_server(listener);
    let stream = UnixStream::connect(&s.front).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let mut received = Vec::new();
    for i in 0..6 {
        let req = http::Request::builder()
            .method(if i % 2 == 0 { "GET" } else { "POST" })
            .uri(format!("http://localhost/items/{i}?q={}", i * 7))
            .header("user-agent", "spf-test-hyper/1.0")
            .header("x-request", format!("value-{i}"))
            .header("x-constant", "same-every-time")
            .header("accept", "*/*")
            .body(Full::new(Bytes::from(vec![b'x'; i * 100])))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = header_map_pairs(resp.headers());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("hello {}", i + 1));
        received.push((status, headers));
    }
    drop(sender);
    let _ = driver.await;
    closed(&s.cap).await;
    let seen = seen.lock().unwrap().clone();
    for recs in s.cap.decode_views() {
        assert_clean(&recs);
        check_exchange(&recs, &seen, &received, true);
        check_exchange_records(&recs, &seen, &received);
        // DATA payloads arrive intact.
        let data: Vec<u8> = recs
            .iter()
            .filter_map(http2_of)
            .filter(|(e, h)| {
                way(e) == Direction::Send && h["type"] == "DATA" && h["stream_id"] == 11
            })
            .flat_map(|(_, h)| b64(h["data_b64"].as_str().unwrap()))
            .collect();
        assert_eq!(data, vec![b'x'; 500]);
    }
}

/// Waits until every relayed connection has closed both ways, so that the
/// recording holds every byte either peer sent.
async fn closed(cap: &Capture) {
    for _ in 0..600 {
        if cap.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("relayed connections still open after 30 s");
}

/// Waits until the relay has been quiet for a moment: used to mark a point
/// between requests on a connection that stays open.
async fn settle(cap: &Capture) {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let n = cap.events.lock().unwrap().len();
        if n == last {
            return;
        }
        last = n;
    }
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn curl_has_http2() -> bool {
    std::process::Command::new("curl")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
        .unwrap_or(false)
}

/// Parses `curl -D` output: one (status, sorted headers) per response.
fn parse_curl_dump(text: &str) -> Vec<(u16, Pairs)> {
    let mut out = Vec::new();
    let mut cur: Option<(u16, Pairs)> = None;
    for line in text.split("\r\n") {
        if let Some(rest) = line.strip_prefix("HTTP/2 ") {
            if let Some(c) = cur.take() {
                out.push(c);
            }
            cur = Some((rest.trim().parse().unwrap(), Vec::new()));
        } else if let Some((n, v)) = line.split_once(": ")
            && let Some(c) = cur.as_mut()
        {
            c.1.push((n.to_string(), v.to_string()));
        }
    }
    out.extend(cur);
    for c in &mut out {
        c.1.sort();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_against_hyper_server() {
    if !curl_has_http2() {
        eprintln!("skipping curl_against_hyper_server: curl without HTTP/2 support");
        return;
    }
    let (s, listener) = setup();
    let seen = hyper_server(listener);
    // One connection per curl run: curl 7.88 cannot reuse a prior-knowledge
    // HTTP/2 connection for a second URL (curl issue 10634), so reuse of the
    // dynamic table across requests is covered by the hyper and tonic tests.
    let runs: [(&str, &[&str]); 3] = [
        (
            "http://localhost/a",
            &["x-curl-test: first", "x-trace-id: 0123456789abcdef"],
        ),
        (
            "http://localhost/b/c?x=1",
            &["x-curl-test: second", "accept: application/json"],
        ),
        (
            "http://localhost/d",
            &["x-many: 1", "x-many: 2", "cookie: a=b"],
        ),
    ];
    let mut received = Vec::new();
    for (i, (url, headers)) in runs.iter().enumerate() {
        let dump = s.front.with_file_name(format!("headers-{i}.txt"));
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "--http2-prior-knowledge",
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-D",
        ])
        .arg(&dump)
        .arg("--unix-socket")
        .arg(&s.front);
        for h in *headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(url);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        received.extend(parse_curl_dump(&std::fs::read_to_string(&dump).unwrap()));
    }
    closed(&s.cap).await;
    assert_eq!(received.len(), 3);
    assert_eq!(s.cap.conns.load(Ordering::SeqCst), 3);
    let seen = seen.lock().unwrap().clone();
    for recs in s.cap.decode_views() {
        assert_clean(&recs);
        check_exchange(&recs, &seen, &received, false);
        check_exchange_records(&recs, &seen, &received);
        let first = &headers_frames(&recs)[0];
        assert!(pseudo(&first.headers, "user-agent").is_some_and(|u| u.starts_with("curl/")));
    }
}

/// Attaching after a connection started: the relay's events from the middle of
/// a real hyper conversation on. Headers decode; entries inserted before show
/// as placeholders; no header is ever wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_mid_connection_on_real_traffic() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (s, listener) = setup();
    let seen = hyper_server(listener);
    let stream = UnixStream::connect(&s.front).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let mut received = Vec::new();
    let mut marks = Vec::new();
    for i in 0..8 {
        settle(&s.cap).await;
        marks.push(s.cap.events.lock().unwrap().len());
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("http://localhost/r/{}", i % 3))
            .header("x-tenant", format!("tenant-{}", i % 2))
            .header("x-constant", "same-every-time")
            .header("x-unique", format!("u{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        received.push((resp.status().as_u16(), header_map_pairs(resp.headers())));
        let _ = resp.into_body().collect().await;
    }
    drop(sender);
    let _ = driver.await;
    closed(&s.cap).await;
    let events = s.cap.events.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    let mut placeholders = 0;
    for (k, &mark) in marks.iter().enumerate().skip(1) {
        let attached = &events[mark..];
        for recs in [decode(attached), decode(&connection_view(attached))] {
            let frames = headers_frames(&recs);
            let reqs: Vec<&Hdr> = frames.iter().filter(|h| h.dir == Direction::Send).collect();
            assert_eq!(reqs.len(), seen.len() - k, "attached before request {k}");
            for (j, h) in reqs.iter().enumerate() {
                let s = &seen[k + j];
                let mut want = vec![
                    (":method".to_string(), s.method.clone()),
                    (":path".to_string(), s.path.clone()),
                ];
                want.extend(s.headers.iter().cloned());
                for (n, v) in &h.headers {
                    if n.starts_with("<unknown index ") {
                        placeholders += 1;
                        continue;
                    }
                    if n == ":scheme" || n == ":authority" {
                        assert!(v == "http" || v == "localhost", "{n}: {v}");
                        continue;
                    }
                    assert!(
                        want.contains(&(n.clone(), v.clone())),
                        "wrong header {n}: {v} in request {}",
                        k + j
                    );
                }
                assert_eq!(
                    h.headers.len(),
                    want.len() + 2,
                    "every field shown, none skipped"
                );
                let resp = frames
                    .iter()
                    .find(|r| r.dir == Direction::Recv && r.stream == h.stream)
                    .unwrap();
                let (status, got) = &received[k + j];
                for (n, v) in &resp.headers {
                    if n.starts_with("<unknown index ") {
                        placeholders += 1;
                    } else if n == ":status" {
                        assert_eq!(v, &status.to_string());
                    } else {
                        assert!(
                            got.contains(&(n.clone(), v.clone())),
                            "wrong response header {n}: {v}"
                        );
                    }
                }
                assert_eq!(resp.headers.len(), got.len() + 1);
            }
            // Every request after the attach is an exchange with its response's
            // status, its path shown where the path's table entry is known.
            let x = exchanges(&recs);
            assert_eq!(x.len(), seen.len() - k, "exchanges, attached before {k}");
            for (j, e) in x.iter().enumerate() {
                let s = &seen[k + j];
                assert_eq!(e.method.as_deref(), Some(s.method.as_str()));
                assert!(
                    e.path.is_none() || e.path.as_deref() == Some(s.path.as_str()),
                    "exchange {}: {e:?}",
                    k + j
                );
                // 201 is no static table entry: after the attach it may be
                // an index spf never saw.
                assert!(
                    e.status.is_none() || e.status == Some(u32::from(received[k + j].0)),
                    "exchange {}: {e:?}",
                    k + j
                );
                assert_eq!(e.error, None, "exchange {}", k + j);
            }
            // The value sent last is there, under its name or, when the name came
            // from a table entry inserted before the attach, under a placeholder.
            let last = reqs.last().unwrap();
            assert!(
                last.headers.iter().any(
                    |(n, v)| v == "u7" && (n == "x-unique" || n.starts_with("<unknown index "))
                ),
                "{:?}",
                last.headers
            );
        }
    }
    assert!(
        placeholders > 0,
        "attaching mid-connection must show table entries from before as placeholders"
    );
}

/// A client that indexes every header (Python's h2, as gRPC's C core does for
/// `:path`): three GETs of one path on one connection, each after a line on
/// stdin, each answered by a line on stdout with the response's status.
const PY_H2_CLIENT: &str = r#"
import socket, sys
import h2.connection, h2.events
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
conn = h2.connection.H2Connection()
conn.initiate_connection()
s.sendall(conn.data_to_send())
for i in range(3):
    sys.stdin.readline()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", "/same/path/every/time"),
                            (":scheme", "http"), (":authority", "localhost")], end_stream=True)
    s.sendall(conn.data_to_send())
    status, done = None, False
    while not done:
        data = s.recv(65535)
        if not data:
            sys.exit("server closed early")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"].decode()
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                done = True
        s.sendall(conn.data_to_send())
    print(status, flush=True)
conn.close_connection()
s.sendall(conn.data_to_send())
s.close()
"#;

/// Attaching after a request's `:path` went into the client's HPACK table:
/// later requests name it by an index spf never saw. They are exchanges
/// still, paired with their responses, the path left out (not guessed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_path_is_an_unseen_table_entry_are_exchanges() {
    use std::io::{BufRead as _, Write as _};
    let (s, listener) = setup();
    let seen = hyper_server(listener);
    let script = s._dir.path().join("client.py");
    std::fs::write(&script, PY_H2_CLIENT).unwrap();
    // Debian's python3, which has python3-h2.
    let mut child = std::process::Command::new(crate::http1::tool("python3"))
        .arg(&script)
        .arg(&s.front)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut statuses = Vec::new();
    let mut marks = Vec::new();
    for _ in 0..3 {
        // The relay records bytes before it passes them on: once the client
        // has its response, the recording holds all of it.
        marks.push(s.cap.events.lock().unwrap().len());
        writeln!(stdin, "go").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        statuses.push(line.trim().parse::<u32>().expect("a status line"));
    }
    assert!(child.wait().unwrap().success());
    closed(&s.cap).await;
    assert_eq!(seen.lock().unwrap().len(), 3);
    let events = s.cap.events.lock().unwrap().clone();
    for (k, &mark) in marks.iter().enumerate().skip(1) {
        let attached = &events[mark..];
        for recs in [decode(attached), decode(&connection_view(attached))] {
            let frames = headers_frames(&recs);
            let reqs: Vec<&Hdr> = frames.iter().filter(|h| h.dir == Direction::Send).collect();
            assert_eq!(reqs.len(), 3 - k);
            // The scenario: the path is a placeholder in every request seen.
            for h in &reqs {
                assert!(pseudo(&h.headers, ":path").is_none(), "{:?}", h.headers);
                assert!(
                    h.headers
                        .iter()
                        .any(|(n, _)| n.starts_with("<unknown index ")),
                    "{:?}",
                    h.headers
                );
            }
            let x = exchanges(&recs);
            assert_eq!(x.len(), 3 - k, "one exchange per request after the attach");
            for (j, e) in x.iter().enumerate() {
                assert_eq!(e.method.as_deref(), Some("GET"));
                assert_eq!(e.path, None);
                assert!(
                    e.status.is_none() || e.status == Some(statuses[k + j]),
                    "{e:?}"
                );
                assert_eq!(e.error, None);
                assert!(e.latency_ns.is_some() && e.response_bytes > 0, "{e:?}");
            }
        }
    }
}

/// The h2 crate on both ends: a request header too large for one frame (sent
/// as HEADERS plus CONTINUATION frames), a response with a body and trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_and_trailers() {
    let (s, listener) = setup();
    let big = "v".repeat(40_000);
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = Arc::clone(&seen);
    let trailers_sent = {
        let mut t = http::HeaderMap::new();
        t.insert("x-checksum", "abc123".parse().unwrap());
        t.insert("x-rows", "42".parse().unwrap());
        t
    };
    let t2 = trailers_sent.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::Builder::new()
            .max_header_list_size(1 << 20)
            .handshake::<_, Bytes>(stream)
            .await
            .unwrap();
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            log.lock().unwrap().push(Seen {
                method: req.method().to_string(),
                path: path_of(req.uri()),
                headers: header_map_pairs(req.headers()),
            });
            let resp = http::Response::builder()
                .status(200)
                .header("x-kind", "h2")
                .body(())
                .unwrap();
            let mut send = respond.send_response(resp, false).unwrap();
            send.send_data(Bytes::from_static(b"payload"), false)
                .unwrap();
            send.send_trailers(t2.clone()).unwrap();
        }
    });
    let stream = UnixStream::connect(&s.front).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .max_header_list_size(1 << 20)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut received = Vec::new();
    let mut got_trailers = Vec::new();
    for i in 0..2 {
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("http://localhost/big/{i}"))
            .header("x-big", big.as_str())
            .header("x-n", i.to_string())
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        received.push((resp.status().as_u16(), header_map_pairs(resp.headers())));
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        got_trailers.push(header_map_pairs(&body.trailers().await.unwrap().unwrap()));
        client = client.ready().await.unwrap();
    }
    drop(client);
    let _ = driver.await;
    closed(&s.cap).await;
    let seen = seen.lock().unwrap().clone();
    for recs in s.cap.decode_views() {
        assert_clean(&recs);
        check_exchange(&recs, &seen, &received, false);
        check_exchange_records(&recs, &seen, &received);
        // The big block really was split, and came out whole.
        let conts = recs
            .iter()
            .filter_map(http2_of)
            .filter(|(e, h)| way(e) == Direction::Send && h["type"] == "CONTINUATION")
            .count();
        assert!(
            conts >= 1,
            "the 40 kB header block must have needed CONTINUATION frames"
        );
        // Trailers, as the client received them.
        let frames = headers_frames(&recs);
        for (i, want) in got_trailers.iter().enumerate() {
            let stream = frames
                .iter()
                .filter(|h| h.dir == Direction::Send)
                .nth(i)
                .unwrap()
                .stream;
            let t = frames
                .iter()
                .find(|h| h.dir == Direction::Recv && h.stream == stream && h.end_stream)
                .unwrap();
            assert_eq!(&regular(&t.headers), want);
            assert_eq!(want, &header_map_pairs(&trailers_sent));
        }
    }
}

// ---- a 64 KiB header table ----

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Response headers too big for the default 4096-byte table, the same in
/// every response: an encoder with a 64 KiB table sends them once.
fn big_response_headers() -> Pairs {
    (0..40)
        .map(|i| {
            (
                format!("x-table-{i:02}"),
                format!("{i:02}-{}", "t".repeat(480)),
            )
        })
        .collect()
}

/// A server whose HPACK encoder uses the 64 KiB table its client allows:
/// hand-encoded (the h2 crate's encoder stops at 4096 bytes). It answers
/// each request with `:status 200` and [`big_response_headers`], inserted
/// into the table by the first response (after a size update to 65536) and
/// indexed by the later ones, then a DATA frame. Returns the
/// SETTINGS_HEADER_TABLE_SIZE the client announced.
async fn big_table_server(listener: UnixListener) -> Option<u32> {
    use spf_decoders::http2::frame as f;
    use spf_decoders::http2::hpack::encode as henc;
    let (mut io, _) = listener.accept().await.unwrap();
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, f::PREFACE);
    io.write_all(&frame(f::SETTINGS, 0, 0, &[])).await.unwrap();
    let headers = big_response_headers();
    let mut announced = None;
    let mut answered = 0;
    loop {
        let mut h = [0u8; 9];
        if io.read_exact(&mut h).await.is_err() {
            return announced;
        }
        let h = f::Header::parse(&h).unwrap();
        let mut payload = vec![0u8; h.length as usize];
        io.read_exact(&mut payload).await.unwrap();
        match h.kind {
            f::SETTINGS if !h.has(f::ACK) => {
                for p in payload.chunks(6) {
                    if p[..2] == [0, 1] {
                        announced = Some(u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
                    }
                }
                io.write_all(&frame(f::SETTINGS, f::ACK, 0, &[]))
                    .await
                    .unwrap();
            }
            f::HEADERS => {
                let mut block = Vec::new();
                if answered == 0 {
                    assert_eq!(announced, Some(65536), "the client allows 64 KiB");
                    henc::size_update(&mut block, 65536);
                    henc::indexed(&mut block, 8);
                    for (n, v) in &headers {
                        henc::literal_indexed(&mut block, n.as_bytes(), v.as_bytes(), false);
                    }
                } else {
                    henc::indexed(&mut block, 8);
                    for i in (0..headers.len()).rev() {
                        henc::indexed(&mut block, 62 + i);
                    }
                }
                // Frames of at most 16384 bytes: HEADERS, then CONTINUATIONs.
                let mut out = Vec::new();
                let chunks: Vec<&[u8]> = block.chunks(16384).collect();
                for (i, c) in chunks.iter().enumerate() {
                    let last = if i + 1 == chunks.len() {
                        f::END_HEADERS
                    } else {
                        0
                    };
                    let kind = if i == 0 { f::HEADERS } else { f::CONTINUATION };
                    out.extend(frame(kind, last, h.stream_id, c));
                }
                out.extend(frame(f::DATA, f::END_STREAM, h.stream_id, b"ok"));
                io.write_all(&out).await.unwrap();
                answered += 1;
            }
            f::GOAWAY => return announced,
            _ => {}
        }
    }
}

/// SETTINGS_HEADER_TABLE_SIZE = 65536 from an h2 client, and a server
/// whose encoder really uses it (later responses are a few bytes of
/// indexes into 21 KB of table): every header exact in both views, in
/// blocks spread over CONTINUATION frames, and not flagged, since the
/// SETTINGS that allowed it were seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_table_of_64_kib() {
    let (s, listener) = setup();
    let server = tokio::spawn(big_table_server(listener));
    let stream = UnixStream::connect(&s.front).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .header_table_size(65536)
        .max_header_list_size(1 << 20)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut received = Vec::new();
    for i in 0..3 {
        let req = http::Request::builder()
            .uri(format!("http://localhost/table/{i}"))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        received.push(header_map_pairs(resp.headers()));
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.unwrap().len());
        }
        client = client.ready().await.unwrap();
    }
    drop(client);
    let _ = driver.await;
    assert_eq!(server.await.unwrap(), Some(65536));
    closed(&s.cap).await;
    let mut want = big_response_headers();
    want.sort();
    for r in &received {
        assert_eq!(r, &want, "what the h2 client decoded");
    }
    for recs in s.cap.decode_views() {
        assert_clean(&recs);
        let frames = headers_frames(&recs);
        let resps: Vec<&Hdr> = frames.iter().filter(|h| h.dir == Direction::Recv).collect();
        assert_eq!(resps.len(), 3);
        for r in &resps {
            assert_eq!(pseudo(&r.headers, ":status"), Some("200"));
            assert_eq!(regular(&r.headers), want);
        }
        // The table really is bigger than 4096 bytes: the later blocks
        // index every entry.
        assert!(
            resps[0].length > 14_000 && resps[1].length < 100,
            "{resps:?}"
        );
        let all: Vec<String> = recs
            .iter()
            .filter_map(http2_of)
            .map(|(_, h)| h.to_string())
            .collect();
        assert!(
            all.iter()
                .all(|h| !h.contains("table_size_update_unannounced"))
        );
        assert!(all.iter().any(|h| h.contains("\"type\":\"CONTINUATION\"")));
    }
}

// ---- tonic ----

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoRequest {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    #[prost(int32, tag = "2")]
    pub(crate) n: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoReply {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    #[prost(int32, tag = "2")]
    pub(crate) n: i32,
}

/// A gRPC service written the way tonic's generated code is: `demo.Echo` with a
/// unary `Say` and a server-streaming `Count`.
#[derive(Clone)]
pub(crate) struct EchoService {
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "demo.Echo";
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            path: path_of(req.uri()),
            headers: header_map_pairs(req.headers()),
        });
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<EchoReply, EchoRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            let resp = match req.uri().path() {
                "/demo.Echo/Say" => {
                    let svc = tower::service_fn(|r: tonic::Request<EchoRequest>| async move {
                        let m = r.into_inner();
                        let mut resp = tonic::Response::new(EchoReply {
                            text: format!("echo: {}", m.text),
                            n: m.n * 2,
                        });
                        resp.metadata_mut()
                            .insert("x-reply", "yes".parse().unwrap());
                        Ok::<_, tonic::Status>(resp)
                    });
                    grpc.unary(svc, req).await
                }
                "/demo.Echo/Count" => {
                    let svc = tower::service_fn(|r: tonic::Request<EchoRequest>| async move {
                        let m = r.into_inner();
                        let items: Vec<Result<EchoReply, tonic::Status>> = (1..=m.n)
                            .map(|k| {
                                Ok(EchoReply {
                                    text: format!("item {k}"),
                                    n: k,
                                })
                            })
                            .collect();
                        Ok::<_, tonic::Status>(tonic::Response::new(tokio_stream::iter(items)))
                    });
                    grpc.server_streaming(svc, req).await
                }
                _ => tonic::Status::unimplemented("no such method").into_http(),
            };
            Ok(resp)
        })
    }
}

pub(crate) async fn tonic_channel(front: PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let p = front.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(UnixStream::connect(p).await?))
            }
        }))
        .await
        .unwrap()
}

/// gRPC messages decoded from DATA frames of one direction and stream, as
/// (text, n) from their protobuf view.
fn grpc_messages(recs: &[Record], dir: Direction, stream: u64) -> Vec<(String, i64)> {
    recs.iter()
        .filter_map(http2_of)
        .filter(|(e, h)| way(e) == dir && h["type"] == "DATA" && h["stream_id"] == stream)
        .flat_map(|(_, h)| {
            h["grpc"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|m| {
            let pb = m["protobuf"].as_array().unwrap();
            let text = pb
                .iter()
                .find(|f| f["field"] == 1)
                .map(|f| f["string"].as_str().unwrap().to_string())
                .unwrap_or_default();
            let n = pb
                .iter()
                .find(|f| f["field"] == 2)
                .map(|f| f["value"].as_i64().unwrap())
                .unwrap_or(0);
            (text, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_unary_and_streaming() {
    let (s, listener) = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = EchoService {
        seen: Arc::clone(&seen),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let channel = tonic_channel(s.front.clone()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut replies = Vec::new();
    let mut metadata = Vec::new();
    for (text, n) in [("hello world", 21), ("hello again", 5)] {
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(EchoRequest {
            text: text.into(),
            n,
        });
        req.metadata_mut()
            .insert("x-caller", "integration-test".parse().unwrap());
        let resp = grpc
            .unary(
                req,
                http::uri::PathAndQuery::from_static("/demo.Echo/Say"),
                tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
            .unwrap();
        metadata.push(resp.metadata().clone().into_headers());
        replies.push(resp.into_inner());
    }
    grpc.ready().await.unwrap();
    let resp = grpc
        .server_streaming(
            tonic::Request::new(EchoRequest {
                text: "count".into(),
                n: 5,
            }),
            http::uri::PathAndQuery::from_static("/demo.Echo/Count"),
            tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let mut items = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        items.push(m);
    }
    assert_eq!(items.len(), 5);
    assert_eq!(replies[0].text, "echo: hello world");
    drop(grpc);
    let _ = stop_tx.send(());
    let _ = server.await;
    closed(&s.cap).await;

    let seen = seen.lock().unwrap().clone();
    for recs in s.cap.decode_views() {
        assert_clean(&recs);
        let frames = headers_frames(&recs);
        let reqs: Vec<&Hdr> = frames.iter().filter(|h| h.dir == Direction::Send).collect();
        assert_eq!(reqs.len(), 3);
        for (h, s) in reqs.iter().zip(&seen) {
            assert_eq!(pseudo(&h.headers, ":method"), Some("POST"));
            assert_eq!(pseudo(&h.headers, ":path"), Some(s.path.as_str()));
            assert_eq!(
                regular(&h.headers),
                s.headers,
                "request headers of {}",
                s.path
            );
            assert_eq!(h.grpc.as_ref().unwrap()["method"], s.path.as_str());
        }
        // Request messages, as sent.
        assert_eq!(
            grpc_messages(&recs, Direction::Send, reqs[0].stream),
            vec![("hello world".to_string(), 21)]
        );
        assert_eq!(
            grpc_messages(&recs, Direction::Send, reqs[1].stream),
            vec![("hello again".to_string(), 5)]
        );
        // Replies, as received.
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(
                grpc_messages(&recs, Direction::Recv, reqs[i].stream),
                vec![(r.text.clone(), r.n as i64)]
            );
            // Every header and trailer the client received is in the decoded
            // response HEADERS and trailers of that stream.
            let mut decoded: Pairs = frames
                .iter()
                .filter(|f| f.dir == Direction::Recv && f.stream == reqs[i].stream)
                .flat_map(|f| regular(&f.headers))
                .collect();
            decoded.sort();
            assert_eq!(
                decoded,
                header_map_pairs(&metadata[i]),
                "response metadata of call {i}"
            );
            let trailers = frames
                .iter()
                .find(|f| f.dir == Direction::Recv && f.stream == reqs[i].stream && f.end_stream)
                .unwrap();
            let g = trailers.grpc.as_ref().unwrap();
            assert_eq!(g["status"], 0);
            assert_eq!(g["status_name"], "OK");
            assert_eq!(g["method"], "/demo.Echo/Say");
        }
        let streamed = grpc_messages(&recs, Direction::Recv, reqs[2].stream);
        let want: Vec<(String, i64)> = items.iter().map(|m| (m.text.clone(), m.n as i64)).collect();
        assert_eq!(streamed, want);
        // Every call is one gRPC exchange, OK.
        let x: Vec<&spf_pipeline::Exchange> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Decoded(d) => match &d.body {
                    Body::Exchange(x) => Some(&**x),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(x.len(), 3);
        for (e, s) in x.iter().zip(&seen) {
            assert_eq!(&*e.protocol, "grpc");
            assert_eq!(e.path.as_deref(), Some(s.path.as_str()));
            assert_eq!(
                (e.status, e.grpc_status, e.error.as_deref()),
                (Some(200), Some(0), None)
            );
            assert_eq!((e.client.pid, e.server.pid), (1, 2));
        }
    }
}

/// The CLI's registry offers the decoder by its config name.
#[test]
fn http2_is_registered() {
    let mut reg = spf_pipeline::config::Registry::new();
    spf_decoders::register(&mut reg);
    assert!(reg.decoder_types().contains(&"http2"));
}

// ---- live capture with the real probe ----

/// curl (its own process) against a hyper server in this process, captured by
/// the eBPF probe: both ends' views decode to exactly what each peer sent.
#[test]
fn live_probe_curl_against_hyper() {
    let _g = crate::capture::lock();
    if !curl_has_http2() {
        eprintln!("skipping live_probe_curl_against_hyper: curl without HTTP/2 support");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("live-h2.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = {
        let _e = rt.enter();
        UnixListener::bind(&sock).unwrap()
    };
    let cfg = spf_probes::UnixConfig {
        paths: vec![spf_probes::PathFilter::parse(sock.to_str().unwrap()).unwrap()],
        ..spf_probes::UnixConfig::default()
    };
    let Some(live) = crate::capture::start("live_probe_curl_against_hyper", cfg) else {
        return;
    };
    let seen = {
        let _e = rt.enter();
        hyper_server(listener)
    };
    let mut received = Vec::new();
    let mut curl_pids = Vec::new();
    for (i, extra) in ["x-live: one", "x-live: two"].iter().enumerate() {
        let dump = dir.path().join(format!("live-{i}.txt"));
        let child = std::process::Command::new("curl")
            .args([
                "--http2-prior-knowledge",
                "-s",
                "-S",
                "-o",
                "/dev/null",
                "-D",
            ])
            .arg(&dump)
            .arg("--unix-socket")
            .arg(&sock)
            .args(["-H", extra, &format!("http://localhost/live/{i}")])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        curl_pids.push(child.id());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        received.extend(parse_curl_dump(&std::fs::read_to_string(&dump).unwrap()));
    }
    let captured = live.finish();
    captured.assert_no_loss();
    let events = captured.events;
    drop(rt);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let me = std::process::id();
    for (i, &pid) in curl_pids.iter().enumerate() {
        // curl's own view: its sends are the request, its receives the response.
        let client: Vec<Arc<Event>> = events.iter().filter(|e| e.pid == pid).cloned().collect();
        assert!(!client.is_empty(), "no events of curl pid {pid}");
        let conn = client[0].conn;
        let recs = decode(&client);
        assert_clean(&recs);
        check_exchange(&recs, &seen[i..=i], &received[i..=i], false);
        // The server's view of the same connection: the same headers, the
        // other way round.
        let server: Vec<Arc<Event>> = events
            .iter()
            .filter(|e| e.pid == me && e.conn == conn)
            .map(|e| {
                let mut e = (**e).clone();
                e.dir = match e.dir {
                    Direction::Send => Direction::Recv,
                    Direction::Recv => Direction::Send,
                };
                Arc::new(e)
            })
            .collect();
        let recs = decode(&server);
        assert_clean(&recs);
        check_exchange(&recs, &seen[i..=i], &received[i..=i], false);
    }
}

/// `spf demo`: a real tonic server and client in their own processes, captured
/// by the probe, decoded: every call's method, messages and status come out,
/// with no error and no placeholder.
#[test]
fn spf_demo_shows_the_grpc_conversation() {
    let _g = crate::capture::lock();
    if !crate::capture::bpf_ready("spf_demo_shows_the_grpc_conversation") {
        return;
    }
    let out = crate::util::spf_output(&["demo", "--ndjson"]);
    assert!(
        out.status.success(),
        "spf demo failed: {}",
        crate::util::stderr_text(&out)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().all(|l| l.get("error").is_none()),
        "error records in the demo"
    );
    let h2: Vec<&Value> = lines.iter().filter_map(|l| l.get("http2")).collect();
    let paths: Vec<&str> = h2
        .iter()
        .filter(|h| h["type"] == "HEADERS")
        .flat_map(|h| h["headers"].as_array().unwrap())
        .filter(|p| p[0] == ":path")
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/demo.Echo/Say", "/demo.Echo/Say", "/demo.Echo/Count"]
    );
    for h in h2.iter().filter(|h| h["type"] == "HEADERS") {
        for p in h["headers"].as_array().unwrap() {
            assert!(
                !p[0].as_str().unwrap().starts_with("<unknown"),
                "placeholder: {p}"
            );
        }
    }
    let texts: Vec<&str> = h2
        .iter()
        .filter_map(|h| h.get("grpc")?.get("messages")?.as_array())
        .flatten()
        .filter_map(|m| m["protobuf"][0]["string"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "hello, spf",
            "echo: hello, spf",
            "hello again",
            "echo: hello again",
            "count",
            "item 1",
            "item 2",
            "item 3"
        ]
    );
    let ok = h2
        .iter()
        .filter(|h| h.get("grpc").and_then(|g| g.get("status")) == Some(&Value::from(0)))
        .count();
    assert_eq!(ok, 3, "three calls ended with grpc-status 0");
}

/// The real `spf run` binary, live, in the default connection view: a hyper
/// client and server (threads of this process named `spfh2live`) talk over
/// a Unix socket; each request and response HEADERS comes out once, exact,
/// seen from its sender, and each request is one exchange record.
#[test]
fn live_connection_view_through_spf_run() {
    use std::io::Write as _;
    use std::time::{Duration, Instant};
    const COMM: &str = "spfh2live";
    let _g = crate::capture::lock();
    if !crate::capture::bpf_ready("live_connection_view_through_spf_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.ndjson");
    let err = dir.path().join("live.err");
    let mut child = crate::util::spf()
        .args([
            "run",
            "--format",
            "ndjson",
            "--quiet",
            "--decoder",
            "http2",
            "--comm",
            COMM,
        ])
        .args(crate::capture::hook_args())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until spf captures: a canary thread sends an HTTP/2 preface and
    // PINGs whose data spells "spfcanar" until they show up decoded.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let canary = std::thread::spawn(move || {
        crate::live::name_thread(COMM);
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(spf_decoders::http2::frame::PREFACE).unwrap();
        while rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
            a.write_all(&frame(6, 0, 0, b"spfcanar")).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("\"opaque_data\":\"73706663616e6172\"")
    {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = tx.send(());
            panic!(
                "spf exited with {status}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "spf captured nothing within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = tx.send(());
    canary.join().unwrap();

    // The conversation, on threads named COMM.
    let sock = dir.path().join("live-conn.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(COMM)
        .enable_all()
        .build()
        .unwrap();
    let front = sock.clone();
    let (seen, received) = rt.block_on(async move { rt_conversation(front).await });
    drop(rt);
    // Stop spf as Ctrl-C would.
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = crate::util::wait_stopped(&mut child);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let records = crate::util::read_ndjson(&out);
    let path = sock.to_str().unwrap();
    let ours: Vec<&Value> = records.iter().filter(|r| r["path"] == path).collect();
    assert!(ours.iter().all(|r| r["via"].is_string()), "connection view");
    assert!(ours.iter().all(|r| r.get("error").is_none()), "{ours:?}");
    let headers: Vec<(&str, Pairs)> = ours
        .iter()
        .filter_map(|r| {
            let h = r.get("http2")?.get("headers")?.as_array()?;
            Some((
                r["role"].as_str().unwrap_or(""),
                h.iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap().to_string(),
                            p[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect(),
            ))
        })
        .collect();
    let requests: Vec<&Pairs> = headers
        .iter()
        .filter(|h| h.0 == "client")
        .map(|h| &h.1)
        .collect();
    let responses: Vec<&Pairs> = headers
        .iter()
        .filter(|h| h.0 == "server")
        .map(|h| &h.1)
        .collect();
    assert_eq!(
        requests.len(),
        seen.len(),
        "each request HEADERS once: {headers:?}"
    );
    assert_eq!(
        responses.len(),
        received.len(),
        "each response HEADERS once"
    );
    for (i, (h, s)) in requests.iter().zip(&seen).enumerate() {
        assert_eq!(pseudo(h, ":method"), Some(s.method.as_str()), "request {i}");
        assert_eq!(pseudo(h, ":path"), Some(s.path.as_str()), "request {i}");
        assert_eq!(regular(h), s.headers, "request {i}");
    }
    for (i, (h, (status, got))) in responses.iter().zip(&received).enumerate() {
        assert_eq!(
            pseudo(h, ":status"),
            Some(status.to_string().as_str()),
            "response {i}"
        );
        assert_eq!(&regular(h), got, "response {i}");
    }
    let me = u64::from(std::process::id());
    let x: Vec<&Value> = ours.iter().filter_map(|r| r.get("exchange")).collect();
    assert_eq!(x.len(), seen.len(), "{x:?}");
    for (e, s) in x.iter().zip(&seen) {
        assert_eq!(e["protocol"], "http2");
        assert_eq!(e["path"], s.path.as_str());
        assert_eq!(e["error"], Value::Null);
        assert_eq!(
            (e["client_pid"].as_u64(), e["server_pid"].as_u64()),
            (Some(me), Some(me))
        );
        assert!(e["latency_ns"].as_u64().unwrap() > 0);
    }
}

/// A hyper server and client over `sock`: three requests on one connection.
/// Returns what the server saw and what the client received.
async fn rt_conversation(sock: PathBuf) -> (Vec<Seen>, Vec<(u16, Pairs)>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = UnixListener::bind(&sock).unwrap();
    let seen = hyper_server(listener);
    // The client on a worker thread too, so that its writes are captured.
    let received = tokio::spawn(async move {
        let stream = UnixStream::connect(&sock).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let mut received = Vec::new();
        for i in 0..3 {
            let req = http::Request::builder()
                .method("GET")
                .uri(format!("http://localhost/live/{i}"))
                .header("x-live", format!("request-{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            received.push((resp.status().as_u16(), header_map_pairs(resp.headers())));
            let _ = resp.into_body().collect().await;
        }
        drop(sender);
        let _ = driver.await;
        received
    })
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    (seen, received)
}
