//! Pretty output through the spf binary, on a real capture: curl against
//! nginx through a recording relay, replayed. One line per exchange by
//! default, headers with -v, bodies with -vv, times as --time says.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use spf_pipeline::Record;

use crate::http1::{curl, nginx, www};
use crate::relay::{Recording, front};
use crate::util::{spf, stderr_text, write_file};

/// The body curl posts to nginx's echo location, echoed back.
pub(crate) const POSTED: &str = "hello body";

/// (method, path, status) of the capture's exchanges, in order: four
/// requests on one kept-alive connection, then a POST on a second.
pub(crate) const CALLS: [(&str, &str, u64); 5] = [
    ("GET", "/small.json", 200),
    ("GET", "/missing", 404),
    ("GET", "/fail", 503),
    ("GET", "/small.json", 200),
    ("POST", "/echo", 200),
];

/// The capture, made once per test run: curl against nginx through a relay
/// that records every read as a connection-view event; the events as NDJSON
/// raw records, replayable with `--replay`.
fn capture() -> &'static [u8] {
    static CAPTURE: OnceLock<Vec<u8>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (_nginx, sock) = nginx(dir.path());
            www(dir.path(), "small.json", br#"{"ok":true}"#);
            let cap = Arc::new(Recording::default());
            let relay = front(dir.path(), "nginx", &sock, &cap);
            let r = relay.to_str().unwrap().to_string();
            tokio::task::spawn_blocking(move || {
                let urls: Vec<String> = CALLS[..4]
                    .iter()
                    .map(|(_, p, _)| format!("http://localhost{p}"))
                    .collect();
                let mut args = vec!["--unix-socket", &r];
                args.extend(urls.iter().map(String::as_str));
                curl(&args);
                let echoed = curl(&[
                    "--unix-socket",
                    &r,
                    "--data-binary",
                    POSTED,
                    "http://localhost/echo",
                ]);
                assert_eq!(echoed, POSTED.as_bytes());
            })
            .await
            .unwrap();
            cap.closed().await;
            let mut out = Vec::new();
            for e in cap.events() {
                spf_pipeline::ndjson::encode(&Record::raw(e, "raw".into()), &mut out);
            }
            out
        })
    })
}

/// The capture as a file in `dir`.
pub(crate) fn http1_capture(dir: &Path) -> PathBuf {
    write_file(dir, "http1.ndjson", capture())
}

/// (path, grpc-status) of the gRPC capture's calls, in order: a unary call,
/// a server-streaming one, and one of a method the server does not have.
pub(crate) const GRPC_CALLS: [(&str, u64); 3] = [
    ("/demo.Echo/Say", 0),
    ("/demo.Echo/Count", 0),
    ("/demo.Echo/Nope", 12),
];

/// A tonic client calling a tonic server through the recording relay, made
/// once per test run, as NDJSON raw records.
fn grpc_capture_bytes() -> &'static [u8] {
    static CAPTURE: OnceLock<Vec<u8>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use crate::http2::{EchoReply, EchoRequest, EchoService, tonic_channel};
            use http::uri::PathAndQuery;
            let codec = || tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
            let dir = tempfile::tempdir().unwrap();
            let sock = dir.path().join("grpc.sock");
            let listener = tokio::net::UnixListener::bind(&sock).unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(EchoService {
                        seen: Arc::default(),
                    })
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stop_rx.await;
                        },
                    ),
            );
            let cap = Arc::new(Recording::default());
            let relay = front(dir.path(), "grpc", &sock, &cap);
            let mut grpc = tonic::client::Grpc::new(tonic_channel(relay).await);
            let say = |text: &str, n| {
                tonic::Request::new(EchoRequest {
                    text: text.into(),
                    n,
                })
            };
            grpc.ready().await.unwrap();
            let reply = grpc
                .unary(
                    say("hello", 1),
                    PathAndQuery::from_static(GRPC_CALLS[0].0),
                    codec(),
                )
                .await
                .unwrap();
            assert_eq!(reply.into_inner().text, "echo: hello");
            grpc.ready().await.unwrap();
            let mut items = grpc
                .server_streaming(
                    say("count", 3),
                    PathAndQuery::from_static(GRPC_CALLS[1].0),
                    codec(),
                )
                .await
                .unwrap()
                .into_inner();
            let mut n = 0;
            while items.message().await.unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, 3);
            grpc.ready().await.unwrap();
            let e = grpc
                .unary(
                    say("x", 0),
                    PathAndQuery::from_static(GRPC_CALLS[2].0),
                    codec(),
                )
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unimplemented);
            drop(grpc);
            let _ = stop_tx.send(());
            let _ = server.await;
            cap.closed().await;
            let mut out = Vec::new();
            for e in cap.events() {
                spf_pipeline::ndjson::encode(&Record::raw(e, "raw".into()), &mut out);
            }
            out
        })
    })
}

/// The gRPC capture as a file in `dir`.
pub(crate) fn grpc_capture(dir: &Path) -> PathBuf {
    write_file(dir, "grpc.ndjson", grpc_capture_bytes())
}

/// `spf run -q --replay CAPTURE ARGS` with `TZ` set to `tz` where given.
fn replay(capture: &Path, args: &[&str], tz: Option<&str>) -> Output {
    let mut cmd = spf();
    cmd.args(["run", "-q", "--replay"]).arg(capture).args(args);
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let o = cmd.output().expect("spawning spf");
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    o
}

fn stdout_text(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("pretty output is UTF-8")
}

/// The exchange records of a replay in NDJSON, in order.
pub(crate) fn exchanges(capture: &Path) -> Vec<Value> {
    let o = replay(capture, &["--format", "ndjson"], None);
    stdout_text(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|r| r.get("exchange").cloned())
        .collect()
}

/// What an exchange line says after its time: (client, server, protocol,
/// method, path, status).
fn parts(line: &str, time_words: usize) -> Vec<String> {
    line.split(' ')
        .skip(time_words)
        .take(7)
        .map(str::to_string)
        .collect()
}

#[test]
fn default_pretty_output_is_one_line_per_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let x = exchanges(&cap);
    assert_eq!(x.len(), CALLS.len(), "{x:#?}");
    let text = stdout_text(&replay(&cap, &[], None));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), CALLS.len(), "only the exchanges:\n{text}");
    for ((line, (method, path, status)), x) in lines.iter().zip(CALLS).zip(&x) {
        let client = format!("curl[{}]", x["client_pid"]);
        let server = format!("nginx[{}]", x["server_pid"]);
        // `date`: the date and the time of day come first.
        assert_eq!(
            parts(line, 2),
            [
                client.as_str(),
                "→",
                server.as_str(),
                "http1",
                method,
                path,
                &status.to_string()
            ],
            "{line}"
        );
        // Latency, then request → response sizes.
        let sizes = format!(
            "{} B → {}",
            x["request_bytes"],
            spf_pipeline::runner::human_bytes(x["response_bytes"].as_u64().unwrap())
        );
        assert!(line.ends_with(&sizes), "{line} / {sizes}");
        assert!(line.contains(" ms ") || line.contains(" µs "), "{line}");
    }
}

#[test]
fn verbose_adds_headers_then_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let quiet = stdout_text(&replay(&cap, &[], None));
    let v = stdout_text(&replay(&cap, &["-v"], None));
    let vv = stdout_text(&replay(&cap, &["-vv"], None));
    let exchange_lines = |t: &str| t.lines().filter(|l| l.contains("] http1 ")).count();
    for t in [&quiet, &v, &vv] {
        assert_eq!(exchange_lines(t), CALLS.len(), "{t}");
    }
    for head in [
        "  GET /small.json HTTP/1.1",
        "  Host: localhost",
        "  HTTP/1.1 503 Service Temporarily Unavailable",
        "  Content-Length: 10",
    ] {
        assert!(!quiet.contains(head), "{head} without -v:\n{quiet}");
        assert!(
            v.contains(head) && vv.contains(head),
            "{head} with -v:\n{v}"
        );
    }
    for body in [format!("| {POSTED}"), r#"| {"ok":true}"#.to_string()] {
        assert!(!v.contains(&body), "{body} with -v:\n{v}");
        assert!(vv.contains(&body), "{body} with -vv:\n{vv}");
    }
}

/// `YYYY-MM-DD HH:MM:SS.micros` of `ns`, shifted by `offset_s` seconds.
fn civil(ns: u64, offset_s: u64) -> String {
    let mut t = Vec::new();
    spf_pipeline::ndjson::rfc3339(ns + offset_s * 1_000_000_000, &mut t);
    String::from_utf8(t[..26].to_vec())
        .unwrap()
        .replace('T', " ")
}

#[test]
fn times_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let x = exchanges(&cap);
    let started: Vec<u64> = x
        .iter()
        .map(|x| spf_pipeline::ndjson::parse_rfc3339(x["started"].as_str().unwrap()).unwrap())
        .collect();
    let first_words = |args: &[&str], tz: Option<&str>, n: usize| -> Vec<String> {
        stdout_text(&replay(&cap, args, tz))
            .lines()
            .map(|l| l.split(' ').take(n).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let utc: Vec<String> = started
        .iter()
        .map(|&s| format!("{}Z", civil(s, 0).replace(' ', "T")))
        .collect();
    assert_eq!(first_words(&["--time", "utc"], None, 1), utc);
    // Five hours and a half east, by a POSIX rule: no zone file needed.
    let zone = Some("XST-5:30");
    let date: Vec<String> = started.iter().map(|&s| civil(s, 19_800)).collect();
    assert_eq!(first_words(&[], zone, 2), date);
    assert_eq!(first_words(&["--time", "date"], zone, 2), date);
    let local: Vec<String> = date.iter().map(|d| d[11..].to_string()).collect();
    assert_eq!(first_words(&["--time", "local"], zone, 1), local);
    // Seconds since the first record: the first request's first byte.
    let relative: Vec<String> = started
        .iter()
        .map(|&s| {
            let d = s - started[0];
            format!("{}.{:06}", d / 1_000_000_000, d % 1_000_000_000 / 1_000)
        })
        .collect();
    assert_eq!(first_words(&["--time", "relative"], None, 1), relative);
}

#[test]
fn sinks_keep_the_kinds_of_record_they_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let file = dir.path().join("x.ndjson");
    let cfg = write_file(
        dir.path(),
        "kinds.toml",
        format!(
            "[source]\ntype = \"file\"\npath = {cap:?}\n\
             [[sink]]\ntype = \"stdout\"\nformat = \"ndjson\"\nrecords = [\"exchange\"]\n\
             [[sink]]\ntype = \"ndjson\"\npath = {file:?}\nrecords = [\"frame\", \"error\"]\n"
        ),
    );
    let o = spf().args(["run", "-q", "-c"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let lines: Vec<Value> = stdout_text(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), CALLS.len());
    assert!(lines.iter().all(|l| l.get("exchange").is_some()));
    let frames = crate::util::read_ndjson(&file);
    assert!(!frames.is_empty());
    assert!(
        frames.iter().all(|r| r.get("http1").is_some()),
        "frames only: {frames:#?}"
    );

    // Refused, each naming its key.
    let refused = |sink: &str, needle: &str| {
        let cfg = write_file(
            dir.path(),
            "bad.toml",
            format!("[source]\ntype = \"file\"\npath = {cap:?}\n[[sink]]\n{sink}"),
        );
        let o = spf().args(["validate", "-c"]).arg(&cfg).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{sink}");
        let e = stderr_text(&o);
        assert!(e.contains(needle), "{sink}: {e}");
    };
    refused(
        "type = \"stdout\"\nrecords = [\"frames\"]\n",
        "sink[0].records: unknown kind of record `frames`, expected one of: event, frame, exchange, error, lost",
    );
    refused(
        "type = \"stdout\"\nformat = \"ndjson\"\nverbose = 1\n",
        "sink[0].verbose: only with format = \"pretty\"",
    );
    refused(
        "type = \"stdout\"\ntime = \"utc\"\nformat = \"ndjson\"\n",
        "sink[0].time: only with format = \"pretty\": NDJSON carries `ts_ns` and an RFC 3339 `time` in UTC",
    );
    refused(
        "type = \"stdout\"\ntime = \"gmt\"\n",
        "sink[0].time: unknown variant `gmt`",
    );
    refused(
        "type = \"ndjson\"\npath = \"x.ndjson\"\nevents = true\nrecords = [\"exchange\"]\n",
        "sink[0].records: leaves out `event`, which events = true writes",
    );
    // The flags name themselves.
    let o = spf()
        .args(["run", "--replay"])
        .arg(&cap)
        .args(["--format", "ndjson", "-vv"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_text(&o).contains("command line: -v: only with format = \"pretty\""),
        "{}",
        stderr_text(&o)
    );
}

#[test]
fn grpc_calls_are_lines_and_frames_come_with_v() {
    let dir = tempfile::tempdir().unwrap();
    let cap = grpc_capture(dir.path());
    let x = exchanges(&cap);
    assert_eq!(x.len(), GRPC_CALLS.len(), "{x:#?}");
    let quiet = stdout_text(&replay(&cap, &[], None));
    let lines: Vec<&str> = quiet.lines().collect();
    assert_eq!(lines.len(), GRPC_CALLS.len(), "only the calls:\n{quiet}");
    for (line, (path, grpc_status)) in lines.iter().zip(GRPC_CALLS) {
        let p = parts(line, 2);
        assert_eq!(p[3..], ["grpc", "POST", path, "200"], "{line}");
        assert!(
            line.contains(&format!(" 200 grpc-status {grpc_status}")),
            "{line}"
        );
    }
    let v = stdout_text(&replay(&cap, &["-v"], None));
    let vv = stdout_text(&replay(&cap, &["-vv"], None));
    for t in [&v, &vv] {
        assert_eq!(t.lines().filter(|l| l.contains("] grpc POST ")).count(), 3);
    }
    for frame in [
        "  HEADERS frame <",
        "  DATA frame <",
        "  :path: /demo.Echo/Say",
        "  grpc-status: 12",
    ] {
        assert!(!quiet.contains(frame), "{frame} without -v:\n{quiet}");
        assert!(
            v.contains(frame) && vv.contains(frame),
            "{frame} with -v:\n{v}"
        );
    }
    // Message bodies, decoded as protobuf, only with -vv.
    for body in ["\"echo: hello\"", "\"item 3\""] {
        assert!(!v.contains(body), "{body} with -v:\n{v}");
        assert!(vv.contains(body), "{body} with -vv:\n{vv}");
    }
}
