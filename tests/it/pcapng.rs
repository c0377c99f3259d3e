//! Integration tests: the pcapng sink (`spf run -w`), read by the real tshark.
//!
//! Real peers talk through a recording relay that records what each of them
//! sent as connection view events (each byte once, seen from its sender, with
//! its place in its direction's stream). The recording is replayed through
//! the `spf` binary with `-w`, and tshark (Wireshark's command line, Debian
//! package `tshark`) reads the file with no options but the fields asked
//! for. What tshark dissects is compared with what the peers sent and with
//! spf's own decode of the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use spf_pipeline::{Direction, Event, Record, Role, SockKind, View};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::relay::{Recording, front};
use crate::util::{read_ndjson, spf, stderr_text};

// ---- tshark ----

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running tshark: {e} (scripts/install-deps installs the Debian package)")
        });
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        stderr_text(&out)
    );
    String::from_utf8(out.stdout).expect("tshark output is UTF-8")
}

/// The fields of every packet `filter` selects, as tshark's JSON gives them:
/// one list of values per field.
fn fields(file: &Path, filter: &str, names: &[&str]) -> Vec<BTreeMap<String, Vec<String>>> {
    let mut args = vec!["-r", file.to_str().unwrap(), "-Y", filter, "-T", "json"];
    for n in names {
        args.extend(["-e", n]);
    }
    let v: Value = serde_json::from_str(&tshark(&args)).expect("tshark JSON");
    v.as_array()
        .expect("a list of packets")
        .iter()
        .map(|p| {
            let layers = p["_source"]["layers"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            layers
                .into_iter()
                .map(|(k, v)| {
                    let vals = v
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap().to_string())
                        .collect();
                    (k, vals)
                })
                .collect()
        })
        .collect()
}

fn one<'a>(p: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    p.get(name)
        .and_then(|v| v.first())
        .unwrap_or_else(|| panic!("no {name} in {p:?}"))
}

/// spf's connection id of a packet, from its comment.
fn conn_of(p: &BTreeMap<String, Vec<String>>) -> u64 {
    let c = one(p, "frame.comment");
    let at = c.find("conn=").unwrap_or_else(|| panic!("no conn in {c}")) + 5;
    c[at..].split(' ').next().unwrap().parse().unwrap()
}

/// tshark's TCP stream number of each spf connection.
fn tcp_streams(file: &Path) -> BTreeMap<u64, u64> {
    fields(file, "tcp.len > 0", &["tcp.stream", "frame.comment"])
        .iter()
        .map(|p| (conn_of(p), one(p, "tcp.stream").parse().unwrap()))
        .collect()
}

/// "Follow TCP stream": each direction's bytes, client (node 0) first.
fn follow(file: &Path, stream: u64) -> [Vec<u8>; 2] {
    let text = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-q",
        "-z",
        &format!("follow,tcp,raw,{stream}"),
    ]);
    let mut out: [Vec<u8>; 2] = Default::default();
    let body = text
        .split_once("Node 1:")
        .expect("follow output")
        .1
        .split_once('\n')
        .unwrap()
        .1;
    for line in body.lines().take_while(|l| !l.starts_with("====")) {
        let (side, hex) = match line.strip_prefix('\t') {
            Some(h) => (1, h),
            None => (0, line),
        };
        out[side].extend(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()),
        );
    }
    out
}

// ---- what the relay recorded ----

/// Each connection's bytes by direction: (conn, from client) → bytes.
fn sent(rec: &Recording) -> BTreeMap<(u64, bool), Vec<u8>> {
    let mut out: BTreeMap<(u64, bool), Vec<u8>> = BTreeMap::new();
    for e in rec.events() {
        out.entry((e.conn, e.role == Role::Client))
            .or_default()
            .extend_from_slice(&e.data);
    }
    out
}

/// The recording as a capture `spf run --replay` reads: as recorded (the
/// connection view), or as the client end's syscalls would show it (sends
/// and receives, no positions).
fn write_recording(rec: &Recording, path: &Path, view: View) {
    let events: Vec<Event> = rec
        .events()
        .iter()
        .map(|e| match view {
            View::Connection => (**e).clone(),
            View::Syscalls => {
                let from_client = e.role == Role::Client;
                let (client, server) = if from_client {
                    ((e.pid, &e.comm), (e.peer_pid, &e.peer_comm))
                } else {
                    ((e.peer_pid, &e.peer_comm), (e.pid, &e.comm))
                };
                Event {
                    pid: client.0,
                    tid: client.0,
                    comm: Arc::clone(client.1),
                    peer_pid: server.0,
                    peer_comm: Arc::from(""),
                    dir: if from_client {
                        Direction::Send
                    } else {
                        Direction::Recv
                    },
                    socket: e.conn * 2,
                    peer_socket: 0,
                    // The end that connected: hyper's server speaks first
                    // (its SETTINGS), so without it the first sender would
                    // be taken for the client.
                    role: Role::Client,
                    pos: None,
                    via: None,
                    ..(**e).clone()
                }
            }
        })
        .collect();
    write_events(path, &events);
}

/// A server socket with a relay in front of it.
struct Setup {
    dir: tempfile::TempDir,
    front: PathBuf,
    rec: Arc<Recording>,
}

fn setup() -> (Setup, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("server.sock");
    let rec = Arc::new(Recording::default());
    let listener = UnixListener::bind(&server).unwrap();
    let front = front(dir.path(), "server", &server, &rec);
    (Setup { dir, front, rec }, listener)
}

/// Replays the recording, seen in `view`, through `spf run -w` with
/// `decoder`; returns the pcapng file and spf's records of the same run.
fn replay(s: &Setup, view: View, decoder: &str) -> (PathBuf, Vec<Value>) {
    let name = view.as_str();
    let cap = s.dir.path().join(format!("{name}.ndjson"));
    write_recording(&s.rec, &cap, view);
    let pcap = s.dir.path().join(format!("{name}.pcapng"));
    let records = s.dir.path().join(format!("{name}.records.ndjson"));
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .args(["--view", name, "--decoder", decoder, "--output"])
        .arg(&records)
        .arg("-w")
        .arg(&pcap)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    (pcap, read_ndjson(&records))
}

/// Every relayed byte is in the file, each direction in its TCP stream.
fn assert_streams_are_what_was_sent(pcap: &Path, rec: &Recording) {
    let streams = tcp_streams(pcap);
    let sent = sent(rec);
    let conns = rec.connections();
    assert_eq!(streams.len() as u64, conns, "one TCP stream per connection");
    for (conn, stream) in streams {
        let [up, down] = follow(pcap, stream);
        assert_eq!(up, sent[&(conn, true)], "client bytes of connection {conn}");
        let empty = Vec::new();
        let want = sent.get(&(conn, false)).unwrap_or(&empty);
        assert_eq!(&down, want, "server bytes of connection {conn}");
    }
}

/// No packet with a bad checksum, every one verified.
fn assert_checksums(pcap: &Path) {
    let out = tshark(&[
        "-r",
        pcap.to_str().unwrap(),
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "ip.checksum.status",
        "-e",
        "tcp.checksum.status",
        "-e",
        "udp.checksum.status",
    ]);
    assert!(!out.is_empty());
    for line in out.lines() {
        // 1: good (0 bad, 2 unverified).
        let verdicts: Vec<&str> = line.split('\t').filter(|s| !s.is_empty()).collect();
        assert_eq!(verdicts, ["1", "1"], "checksums: {line}");
    }
}

// ---- HTTP/2 ----

type Pairs = Vec<(String, String)>;

/// A hyper HTTP/2 server answering every request.
fn hyper_h2_server(listener: UnixListener) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(200)
                                .header("content-type", "text/plain")
                                .header("x-served", format!("{n}{path}"))
                                .body(Full::new(Bytes::from(format!("hello {path}"))))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(1 << 20)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// Per (conn, from client): how many HEADERS frames, and every header of
/// them in order.
type Headers = BTreeMap<(u64, bool), (usize, Pairs)>;

/// What spf decoded (from the client end's syscalls).
fn spf_headers(records: &[Value]) -> Headers {
    let mut out = Headers::new();
    for r in records {
        let h = &r["http2"];
        if h["type"] != "HEADERS" {
            continue;
        }
        let e = out
            .entry((r["conn"].as_u64().unwrap(), r["dir"] == "send"))
            .or_default();
        e.0 += 1;
        for p in h["headers"].as_array().unwrap() {
            e.1.push((p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()));
        }
    }
    out
}

/// What tshark dissected (it lists a header block's fields under the frame
/// that carried them: HEADERS, then each CONTINUATION).
fn tshark_headers(pcap: &Path) -> Headers {
    let mut out = Headers::new();
    let pkts = fields(
        pcap,
        "http2",
        &[
            "frame.comment",
            "tcp.srcport",
            "http2.type",
            "http2.header.name",
            "http2.header.value",
        ],
    );
    for p in &pkts {
        let from_client = one(p, "tcp.srcport") != "8080";
        let e = out.entry((conn_of(p), from_client)).or_default();
        let none = Vec::new();
        let types = p.get("http2.type").unwrap_or(&none);
        e.0 += types.iter().filter(|t| *t == "1").count();
        let names = p.get("http2.header.name").unwrap_or(&none);
        let values = p.get("http2.header.value").unwrap_or(&none);
        assert_eq!(names.len(), values.len());
        e.1.extend(names.iter().cloned().zip(values.iter().cloned()));
    }
    out.retain(|_, v| v.0 > 0);
    out
}

/// Equal header lists, or a message naming the first difference (values
/// shortened: some are 40 kB).
fn assert_same_headers(theirs: &Headers, ours: &Headers, what: &str) {
    let short = |p: Option<&(String, String)>| {
        p.map(|(n, v)| format!("{n}: {}", v.chars().take(60).collect::<String>()))
    };
    assert_eq!(
        theirs.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, (frames, pairs)) in ours {
        let (tf, tp) = &theirs[k];
        assert_eq!(tf, frames, "{what}: HEADERS frames of {k:?}");
        if let Some(i) = (0..pairs.len().max(tp.len())).find(|&i| tp.get(i) != pairs.get(i)) {
            panic!(
                "{what}: header {i} of {k:?}: tshark {:?}, spf {:?}",
                short(tp.get(i)),
                short(pairs.get(i))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_dissects_h2c_headers_as_spf_decodes_them() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (s, listener) = setup();
    hyper_h2_server(listener);
    // Two connections: the second reuses its dynamic table across requests,
    // and sends a header too big for one frame (HEADERS + CONTINUATION).
    for c in 0..2 {
        let stream = UnixStream::connect(&s.front).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        for i in 0..4 {
            let mut req = http::Request::builder()
                .method(if i % 2 == 0 { "GET" } else { "POST" })
                .uri(format!("http://localhost/items/{c}/{i}?q={}", i * 7))
                .header("user-agent", "spf-test-hyper/1.0")
                .header("x-request", format!("value-{i}"));
            if c == 1 && i == 2 {
                req = req.header("x-big", "v".repeat(40_000));
            }
            let req = req
                .body(Full::new(Bytes::from(vec![b'x'; i * 700])))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("hello /items/{c}/{i}"));
        }
        drop(sender);
        let _ = driver.await;
    }
    s.rec.closed().await;
    // `auto` names each connection's protocol in its records: port 8080.
    let (pcap, _) = replay(&s, View::Connection, "auto");
    let (from_syscalls, records) = replay(&s, View::Syscalls, "http2");

    let ours = spf_headers(&records);
    assert_eq!(ours.len(), 4, "requests and responses of two connections");
    assert!(ours.values().all(|v| v.0 == 4));
    assert!(
        ours[&(2, true)]
            .1
            .iter()
            .any(|(n, v)| n == "x-big" && v.len() == 40_000)
    );
    for file in [&pcap, &from_syscalls] {
        let what = format!("tshark against spf ({})", file.display());
        assert_same_headers(&tshark_headers(file), &ours, &what);
        assert_streams_are_what_was_sent(file, &s.rec);
        assert_checksums(file);
    }
    // Every packet as Wireshark sees it with no settings: HTTP/2 on port 8080.
    let summary = tshark(&["-r", pcap.to_str().unwrap()]);
    assert!(summary.contains("HTTP2"), "{summary}");
    assert!(!summary.contains("Malformed"), "{summary}");
    // Names: the socket path and the processes, from the Name Resolution Blocks.
    let hosts = tshark(&["-r", pcap.to_str().unwrap(), "-q", "-z", "hosts"]);
    let me = std::process::id();
    assert!(
        hosts.contains(&format!("\t{}\n", s.front.display())),
        "{hosts}"
    );
    assert!(hosts.contains(&format!("[{me}]")), "{hosts}");
    let named = tshark(&["-r", pcap.to_str().unwrap(), "-N", "n", "-c", "1"]);
    assert!(named.contains(&s.front.display().to_string()), "{named}");
}

// ---- HTTP/1 ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_dissects_http1_requests_from_curl() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let (s, listener) = setup();
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
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
                            let uri = req.uri().to_string();
                            log.lock().unwrap().push((req.method().to_string(), uri));
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .status(if body.is_empty() { 200 } else { 201 })
                                    .body(Full::new(Bytes::from(format!(
                                        "got {} bytes",
                                        body.len()
                                    ))))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let front = s.front.clone();
    // Two requests on one kept-alive connection, then a POST on another.
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            Command::new("curl")
                .args(["-s", "-S", "--unix-socket"])
                .arg(&front)
                .args(args)
                .output()
                .expect("curl")
        };
        [
            run(&["http://localhost/one", "http://localhost/two?x=1"]),
            run(&["-d", "payload=abc", "http://localhost/three"]),
        ]
    })
    .await
    .unwrap();
    for o in &out {
        assert!(o.status.success(), "curl: {}", stderr_text(o));
    }
    s.rec.closed().await;
    let (pcap, _) = replay(&s, View::Connection, "auto");

    let reqs = fields(
        &pcap,
        "http.request",
        &[
            "http.request.method",
            "http.request.uri",
            "tcp.dstport",
            "frame.comment",
        ],
    );
    let got: Vec<(String, String)> = reqs
        .iter()
        .map(|p| {
            (
                one(p, "http.request.method").to_string(),
                one(p, "http.request.uri").to_string(),
            )
        })
        .collect();
    let want = seen.lock().unwrap().clone();
    assert_eq!(got, want);
    assert_eq!(got.len(), 3);
    // `auto` recognised HTTP/1: its port.
    let ports: Vec<String> = reqs
        .iter()
        .map(|p| one(p, "tcp.dstport").to_string())
        .collect();
    assert_eq!(ports, ["80", "80", "80"]);
    let codes: Vec<String> = fields(&pcap, "http.response", &["http.response.code"])
        .iter()
        .map(|p| one(p, "http.response.code").to_string())
        .collect();
    assert_eq!(codes, ["200", "200", "201"]);
    assert_streams_are_what_was_sent(&pcap, &s.rec);
    assert_checksums(&pcap);
}

// ---- Redis ----

#[test]
fn tshark_dissects_redis_commands_of_a_real_capture() {
    let dir = tempfile::tempdir().unwrap();
    let resp = crate::plugins::example("spf_resp", dir.path());
    let pcap = dir.path().join("redis.pcapng");
    let out = dir.path().join("records.ndjson");
    let capture = crate::plugins::redis_capture();
    // The capture holds one end's syscalls without socket inodes, and one of
    // its connections is a process talking to itself: only the syscall view
    // can tell that connection's two directions apart.
    let toml = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
    let cfg = dir.path().join("spf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\ntype = \"file\"\npath = {}\nview = \"syscalls\"\n\n\
             [decoder]\ntype = \"plugin\"\npath = {}\n\n\
             [[sink]]\ntype = \"ndjson\"\npath = {}\n\n\
             [[sink]]\ntype = \"pcapng\"\npath = {}\n",
            toml(&capture),
            toml(&resp),
            toml(&out),
            toml(&pcap)
        ),
    )
    .unwrap();
    let o = spf().args(["run", "-q", "-c"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let records = read_ndjson(&out);

    // The capture is the server end's syscalls (a relay in front of
    // redis-server): its receives are the requests, its sends the replies.
    let mut sent: BTreeMap<(u64, bool), Vec<u8>> = BTreeMap::new();
    for e in read_ndjson(&capture) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(e["data_b64"].as_str().unwrap())
            .unwrap();
        sent.entry((e["conn"].as_u64().unwrap(), e["dir"] == "recv"))
            .or_default()
            .extend(data);
    }
    let streams = tcp_streams(&pcap);
    assert_eq!(streams.len(), 13);
    for (&conn, &stream) in &streams {
        let [up, down] = follow(&pcap, stream);
        assert_eq!(up, sent[&(conn, true)], "requests of connection {conn}");
        assert_eq!(down, sent[&(conn, false)], "replies of connection {conn}");
    }
    assert_checksums(&pcap);

    // On port 6379 with no settings, as RESP: every command the plugin
    // decoded is there, in its connection's stream.
    let shown = fields(
        &pcap,
        "resp && tcp.dstport == 6379",
        &["_ws.col.Info", "frame.comment"],
    );
    let mut checked = 0;
    for r in &records {
        let req = &r["resp"];
        if req["role"] != "request" || req["inline"] == true {
            // Wireshark's RESP dissector reads arrays only, not inline commands.
            continue;
        }
        let conn = r["conn"].as_u64().unwrap();
        if conn == 7 {
            // Read by the relay 3 bytes at a time: tshark's RESP dissector does
            // not reassemble commands from such segments (the stream itself is
            // exact, as followed above).
            continue;
        }
        let mut words = vec![req["command"].as_str().unwrap().to_string()];
        for a in req["args"].as_array().unwrap() {
            match a.as_str() {
                Some(a) if a.len() < 64 && a.bytes().all(|b| b.is_ascii_graphic()) => {
                    words.push(a.to_string())
                }
                _ => break,
            }
        }
        let want = words.join(" ");
        assert!(
            shown
                .iter()
                .any(|p| conn_of(p) == conn && one(p, "_ws.col.Info").contains(&want)),
            "connection {conn}: `{want}` not dissected"
        );
        checked += 1;
    }
    assert!(checked >= 12, "{checked} commands checked");
}

// ---- gaps, datagrams, stdout ----

/// The `seq`th event of connection 1 (path /run/gap.sock), connection view.
fn gap_event(seq: u64, from_client: bool, pos: u64, data: &[u8], len: u64) -> Event {
    Event {
        seq,
        ts_ns: 1_000_000 + seq * 1000,
        time_ns: 1_764_000_000_000_000_000 + seq * 1000,
        pid: if from_client { 4242 } else { 1234 },
        tid: 1,
        comm: Arc::from(if from_client { "ctr" } else { "containerd" }),
        peer_pid: if from_client { 1234 } else { 4242 },
        peer_comm: Arc::from(if from_client { "containerd" } else { "ctr" }),
        path: Arc::from("/run/gap.sock"),
        conn: 1,
        socket: if from_client { 10 } else { 11 },
        peer_socket: if from_client { 11 } else { 10 },
        role: if from_client {
            Role::Client
        } else {
            Role::Server
        },
        pos: Some(pos),
        len,
        truncated: (data.len() as u64) < len,
        data: Bytes::copy_from_slice(data),
        via: Some(Direction::Send),
        ..Event::default()
    }
}

fn write_events(path: &Path, events: &[Event]) {
    let mut buf = Vec::new();
    for e in events {
        spf_pipeline::ndjson::encode(&Record::raw(Arc::new(e.clone()), "raw".into()), &mut buf);
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn a_gap_shows_as_a_tcp_gap_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("gap.ndjson");
    // 1000 bytes sent, 100 captured (cut at snaplen), then more, which the
    // other side's next packet acknowledges ("Follow" shows bytes after a gap
    // once they are acknowledged). Bytes no dissector claims: one reassembling
    // its messages would hold those after the gap back too.
    write_events(
        &cap,
        &[
            gap_event(1, true, 0, b"\x00\x01hello", 7),
            gap_event(2, false, 0, &[b'a'; 100], 1000),
            gap_event(3, false, 1000, b"tail", 4),
            gap_event(4, true, 7, b"bye", 3),
        ],
    );
    let pcap = dir.path().join("gap.pcapng");
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .arg("-w")
        .arg(&pcap)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let lost = fields(
        &pcap,
        "tcp.analysis.lost_segment",
        &["tcp.seq", "tcp.len", "frame.comment"],
    );
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(one(&lost[0], "tcp.seq"), "1001");
    assert_eq!(
        lost[0]["frame.comment"][1],
        "gap: 900 bytes before this segment were not captured (an event was truncated: cut at the capture length (snaplen) or lost in the kernel)"
    );
    let [_, down] = follow(&pcap, 0);
    let mut want = vec![b'a'; 100];
    want.extend_from_slice(b"[900 bytes missing in capture file]\0tail");
    assert_eq!(down, want);
    // The comment names both processes and the socket.
    let first = fields(&pcap, "tcp.len > 0", &["frame.comment"]);
    assert_eq!(
        first[0]["frame.comment"][0],
        "pid=4242 comm=ctr peer_pid=1234 peer_comm=containerd path=/run/gap.sock sock=stream conn=1"
    );
    let hosts = tshark(&["-r", pcap.to_str().unwrap(), "-q", "-z", "hosts"]);
    assert!(
        hosts.contains("\t/run/gap.sock\n") && hosts.contains("\tctr[4242]\n"),
        "{hosts}"
    );
}

#[test]
fn datagrams_are_udp_for_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("dgram.ndjson");
    let dgram = |seq: u64, pid: u32, socket: u64, data: &[u8], len: u64| Event {
        sock: SockKind::Dgram,
        path: Arc::from("/dev/log"),
        conn: 99,
        pid,
        comm: Arc::from("logger"),
        socket,
        peer_socket: 99,
        role: Role::Unknown,
        ..gap_event(seq, true, 0, data, len)
    };
    write_events(
        &cap,
        &[
            dgram(1, 300, 31, b"<13>Dec  1 10:00:00 test: first!", 32),
            dgram(2, 301, 32, b"<13>Dec  1 10:00:01 test: second", 32),
            dgram(3, 300, 31, b"<13>cut", 40),
        ],
    );
    let pcap = dir.path().join("dgram.pcapng");
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .arg("-w")
        .arg(&pcap)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let pkts = fields(
        &pcap,
        "udp",
        &[
            "ip.src",
            "ip.dst",
            "udp.length",
            "frame.cap_len",
            "frame.comment",
        ],
    );
    let got: Vec<(&str, &str, &str, &str)> = pkts
        .iter()
        .map(|p| {
            (
                one(p, "ip.src"),
                one(p, "ip.dst"),
                one(p, "udp.length"),
                one(p, "frame.cap_len"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.128.1.44", "10.0.0.1", "40", "60"),
            ("10.128.1.45", "10.0.0.1", "40", "60"),
            ("10.128.1.44", "10.0.0.1", "48", "35"),
        ]
    );
    assert_eq!(
        pkts[2]["frame.comment"][1],
        "datagram cut: 7 of its 40 bytes were captured"
    );
    assert_checksums_udp(&pcap);

    // A pcapng file given to --replay is named for what it is, not read as
    // lines of bad JSON.
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr_text(&o);
    assert!(err.contains("is a pcapng file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// UDP checksums of whole datagrams verify; a cut one carries none.
fn assert_checksums_udp(pcap: &Path) {
    let out = tshark(&[
        "-r",
        pcap.to_str().unwrap(),
        "-o",
        "udp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "udp.checksum.status",
    ]);
    // 1: good, 3: not present.
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "1", "3"]);
}

#[test]
fn pcapng_on_stdout_pipes_into_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("pipe.ndjson");
    write_events(
        &cap,
        &[
            gap_event(1, true, 0, b"GET /piped HTTP/1.1\r\nHost: x\r\n\r\n", 33),
            gap_event(2, false, 0, b"HTTP/1.1 204 No Content\r\n\r\n", 27),
        ],
    );
    let mut spf_child = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .args(["-w", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = spf_child.stdout.take().unwrap();
    let t = Command::new("tshark")
        .args([
            "-r",
            "-",
            "-Y",
            "http",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
            "-e",
            "http.response.code",
        ])
        .stdin(pipe)
        .output()
        .expect("tshark");
    assert!(spf_child.wait().unwrap().success());
    assert!(t.status.success(), "{}", stderr_text(&t));
    assert_eq!(String::from_utf8_lossy(&t.stdout), "/piped\t\n\t204\n");

    // Records and pcapng cannot share stdout.
    let o = spf()
        .args(["run", "--replay"])
        .arg(&cap)
        .args(["-w", "-", "--format", "ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_text(&o).contains("--format"), "{}", stderr_text(&o));
    // A bad -w path is named by its flag.
    let o = spf()
        .args(["run", "--replay"])
        .arg(&cap)
        .args(["-w", "/no/such/dir/x.pcapng"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_text(&o).contains("-w: directory `/no/such/dir` does not exist"),
        "{}",
        stderr_text(&o)
    );
}

// ---- live ----

/// `spf run -w` with the probe: a hyper h2c client and server, captured live
/// (the connection view and the `auto` decoder, the defaults), read by
/// tshark. The headers of every request and response are there as the peers
/// sent them, each in its direction, on HTTP/2's port.
#[test]
fn a_live_capture_written_with_w_is_dissected() {
    let name = "a_live_capture_written_with_w_is_dissected";
    let _g = crate::capture::lock();
    if !crate::capture::bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("live.pcapng");
    let mut child = spf()
        .args(["run", "-q", "--path"])
        .arg(format!("{}/*", dir.path().display()))
        .arg("-w")
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The probe is attached once a canary's bytes reach the file.
    let canary = dir.path().join("canary.sock");
    let ready = rt.block_on(async {
        let listener = UnixListener::bind(&canary).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let mut c = UnixStream::connect(&canary).await.unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            c.write_all(b"spf-canary").await.unwrap();
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).await.unwrap();
            let file = std::fs::read(&pcap).unwrap_or_default();
            if file.windows(10).any(|w| w == b"spf-canary") {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    });
    if !ready {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!("the capture never started: {}", stderr_text(&o));
    }

    let socket = dir.path().join("h2.sock");
    let responses = rt.block_on(async {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        hyper_h2_server(UnixListener::bind(&socket).unwrap());
        let stream = UnixStream::connect(&socket).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let mut got = Vec::new();
        for i in 0..5 {
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost/live/{i}"))
                .header("x-request", format!("live-{i}"))
                .body(Full::new(Bytes::from(vec![b'z'; i * 1000])))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let served = resp.headers()["x-served"].to_str().unwrap().to_string();
            let _ = resp.into_body().collect().await.unwrap();
            got.push(served);
        }
        drop(sender);
        let _ = driver.await;
        got
    });
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));

    let h2 = format!("path={}", socket.display());
    let pkts = fields(
        &pcap,
        "http2.header",
        &[
            "frame.comment",
            "tcp.dstport",
            "http2.header.name",
            "http2.header.value",
        ],
    );
    let mut paths = Vec::new();
    let mut served = Vec::new();
    for p in pkts
        .iter()
        .filter(|p| one(p, "frame.comment").contains(&h2))
    {
        let to_server = one(p, "tcp.dstport") == "8080";
        let pairs: Vec<(&String, &String)> = p["http2.header.name"]
            .iter()
            .zip(&p["http2.header.value"])
            .collect();
        for (n, v) in pairs {
            match n.as_str() {
                ":path" if to_server => paths.push(v.clone()),
                "x-served" if !to_server => served.push(v.clone()),
                _ => {}
            }
        }
    }
    let want: Vec<String> = (0..5).map(|i| format!("/live/{i}")).collect();
    assert_eq!(paths, want);
    assert_eq!(served, responses);
    assert_checksums(&pcap);
    let streams: Vec<u64> = fields(&pcap, "tcp.len > 0", &["tcp.stream", "frame.comment"])
        .iter()
        .filter(|p| one(p, "frame.comment").contains(&h2))
        .map(|p| one(p, "tcp.stream").parse().unwrap())
        .collect();
    assert!(
        streams.windows(2).all(|w| w[0] == w[1]),
        "one TCP stream for the connection"
    );
    // Each byte once, in order: no gap, retransmission or duplicate for
    // Wireshark to flag, and the bodies whole in the stream.
    let flagged = fields(
        &pcap,
        &format!("tcp.stream == {} && tcp.analysis.flags", streams[0]),
        &["frame.number", "_ws.expert.message"],
    );
    assert!(flagged.is_empty(), "{flagged:?}");
    let [up, _] = follow(&pcap, streams[0]);
    let body = vec![b'z'; 4000];
    assert!(
        up.windows(4000).any(|w| w == body),
        "the last request's body"
    );
}
