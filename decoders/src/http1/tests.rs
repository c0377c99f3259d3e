//! The decoder on hand-made conversations: framing, pairing, upgrades,
//! errors and resynchronisation, limits, and random and mutated input.

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use spf_pipeline::{
    Body, BuildContext, Decoder, Direction, Event, Limits, Out, Record, Role, SockKind,
};

use super::{DataMode, Http1, Http1Config};
use crate::http2::Http2Config;

const CLIENT: usize = 0;
const SERVER: usize = 1;

/// Builds connection-view events of one connection: side 0 the client
/// (pid 10, `curl`), side 1 the server (pid 20, `nginx`).
struct Conv {
    conn: u64,
    seq: u64,
    pos: [u64; 2],
    events: Vec<Arc<Event>>,
}

impl Conv {
    fn new(conn: u64) -> Self {
        Conv {
            conn,
            seq: 0,
            pos: [0, 0],
            events: Vec::new(),
        }
    }

    fn event(&mut self, side: usize, data: &[u8], missing: u64) -> Arc<Event> {
        self.seq += 1;
        let (pid, comm, peer, peer_comm, role) = if side == CLIENT {
            (10, "curl", 20, "nginx", Role::Client)
        } else {
            (20, "nginx", 10, "curl", Role::Server)
        };
        let e = Arc::new(Event {
            seq: self.seq,
            ts_ns: 1000 * self.seq,
            time_ns: 1_700_000_000_000_000_000 + 1000 * self.seq,
            pid,
            tid: pid,
            comm: comm.into(),
            peer_pid: peer,
            peer_comm: peer_comm.into(),
            path: "/run/test.sock".into(),
            sock: SockKind::Stream,
            dir: Direction::Send,
            conn: self.conn,
            socket: 100 + side as u64,
            peer_socket: 101 - side as u64,
            role,
            pos: Some(self.pos[side]),
            len: data.len() as u64 + missing,
            data: Bytes::copy_from_slice(data),
            truncated: missing > 0,
            via: Some(Direction::Send),
            ..Event::default()
        });
        self.pos[side] += e.len;
        self.events.push(Arc::clone(&e));
        e
    }

    fn send(&mut self, side: usize, data: &[u8]) -> &mut Self {
        self.event(side, data, 0);
        self
    }

    /// Sends `data` in pieces of `step` bytes.
    fn send_in(&mut self, side: usize, data: &[u8], step: usize) -> &mut Self {
        for c in data.chunks(step) {
            self.event(side, c, 0);
        }
        self
    }
}

fn decoder_with(limits: Limits, data: DataMode) -> Http1 {
    let ctx = BuildContext::new(limits);
    Http1::new(&Http1Config { data }, Http2Config::default(), &ctx)
}

fn decoder() -> Http1 {
    decoder_with(Limits::default(), DataMode::B64)
}

/// Runs events through a decoder, closing the connection at the end when
/// `close` is set, else finishing the input.
fn run_with(d: &mut dyn Decoder, events: &[Arc<Event>], close: Option<u64>) -> Vec<Record> {
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    for e in events {
        d.decode(e, &mut out);
    }
    match close {
        Some(c) => d.closed(c, &mut out),
        None => d.finish(&mut out),
    }
    recs
}

fn run(events: &[Arc<Event>]) -> Vec<Record> {
    run_with(&mut decoder(), events, None)
}

/// Each record as one JSON value: `{"decoder", "http1"|"http2"|"exchange"|"error"|"raw"}`.
fn view(recs: &[Record]) -> Vec<Value> {
    recs.iter()
        .map(|r| {
            let Record::Decoded(d) = r else {
                return json!({"lost": true});
            };
            let body = match &d.body {
                Body::Raw => json!({"raw": String::from_utf8_lossy(&d.event.data)}),
                Body::Error { code, message } => json!({"error": {"code": code, "message": message}}),
                Body::Exchange(x) => json!({"exchange": {
                    "method": x.method.as_deref(), "path": x.path.as_deref(), "authority": x.authority.as_deref(),
                    "status": x.status, "error": x.error, "request_bytes": x.request_bytes,
                    "response_bytes": x.response_bytes, "latency_ns": x.latency_ns,
                    "started_ns": x.started_ns,
                    "client": [x.client.pid, &*x.client.comm], "server": [x.server.pid, &*x.server.comm],
                }}),
                b => Value::Object(b.json().unwrap()),
            };
            let mut v = body;
            v["decoder"] = json!(&*d.decoder);
            v["seq"] = json!(d.event.seq);
            v
        })
        .collect()
}

fn of_type<'a>(v: &'a [Value], t: &str) -> Vec<&'a Value> {
    v.iter().filter(|r| r["http1"]["type"] == t).collect()
}

fn exchanges(v: &[Value]) -> Vec<&Value> {
    v.iter()
        .filter(|r| r.get("exchange").is_some())
        .map(|r| &r["exchange"])
        .collect()
}

fn errors(v: &[Value]) -> Vec<&Value> {
    v.iter().filter(|r| r.get("error").is_some()).collect()
}

fn body_bytes(v: &[Value], message: &str, index: u64) -> Vec<u8> {
    use base64::Engine as _;
    of_type(v, "body")
        .into_iter()
        .filter(|r| r["http1"]["message"] == message && r["http1"]["index"] == index)
        .flat_map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r["http1"]["data_b64"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

fn assert_clean(v: &[Value]) {
    let e = errors(v);
    assert!(e.is_empty(), "errors: {e:#?}");
    let s = of_type(v, "skipped");
    assert!(s.is_empty(), "skipped: {s:#?}");
}

const GET: &[u8] = b"GET /containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
const OK_JSON: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n[{\"Id\":\"ab\"}]";

#[test]
fn a_request_and_its_response_make_an_exchange() {
    let mut c = Conv::new(1);
    c.send(CLIENT, GET).send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    assert_clean(&v);
    let req = &of_type(&v, "request")[0]["http1"];
    assert_eq!(req["method"], "GET");
    assert_eq!(req["target"], "/containers/json?all=1");
    assert_eq!(req["version"], "HTTP/1.1");
    assert_eq!(
        req["headers"],
        json!([
            ["Host", "docker"],
            ["User-Agent", "curl/8"],
            ["Accept", "*/*"]
        ])
    );
    assert_eq!(req["body"], "none");
    assert_eq!(req["index"], 0);
    let resp = &of_type(&v, "response")[0]["http1"];
    assert_eq!(
        (resp["status"].as_u64(), resp["index"].as_u64()),
        (Some(200), Some(0))
    );
    assert_eq!(resp["content_length"], 13);
    assert_eq!(body_bytes(&v, "response", 0), b"[{\"Id\":\"ab\"}]");
    let x = exchanges(&v);
    assert_eq!(x.len(), 1);
    assert_eq!(
        *x[0],
        json!({"method": "GET", "path": "/containers/json?all=1", "authority": "docker",
            "status": 200, "error": null, "request_bytes": GET.len(),
            "response_bytes": OK_JSON.len(), "latency_ns": 1000, "started_ns": 1000,
            "client": [10, "curl"], "server": [20, "nginx"]})
    );
    // The exchange comes with the response's last byte, every record from
    // the event that completed it.
    let last = v.last().unwrap();
    assert!(last.get("exchange").is_some());
    assert_eq!(last["seq"], 2);
}

#[test]
fn keep_alive_and_pipelined_requests_pair_in_order() {
    let mut c = Conv::new(1);
    let reqs: Vec<u8> = (0..3)
        .flat_map(|i| format!("GET /r{i} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes())
        .collect();
    let resps: Vec<u8> = (0..3)
        .flat_map(|i| {
            format!("HTTP/1.1 {} X\r\nContent-Length: 2\r\n\r\nr{i}", 200 + i).into_bytes()
        })
        .collect();
    // All three requests in one write, the responses one byte at a time.
    c.send(CLIENT, &reqs).send_in(SERVER, &resps, 1);
    // Then a keep-alive request/response in separate writes.
    c.send(
        CLIENT,
        b"POST /more HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    )
    .send(SERVER, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let v = view(&run(&c.events));
    assert_clean(&v);
    let x = exchanges(&v);
    let got: Vec<(String, u64)> = x
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap().to_string(),
                x["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/r0".to_string(), 200),
            ("/r1".into(), 201),
            ("/r2".into(), 202),
            ("/more".into(), 201)
        ]
    );
    for i in 0..3 {
        assert_eq!(body_bytes(&v, "response", i), format!("r{i}").as_bytes());
    }
    assert_eq!(body_bytes(&v, "request", 3), b"abc");
    // Latencies are positive and within the capture.
    for x in &x {
        let l = x["latency_ns"].as_u64().unwrap();
        assert!(l > 0 && l <= 1000 * c.seq, "{x}");
    }
}

#[test]
fn no_body_for_head_1xx_204_and_304() {
    let mut c = Conv::new(1);
    c.send(CLIENT, b"HEAD /f HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\nGET /h HTTP/1.1\r\nIf-None-Match: x\r\n\r\n")
        .send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
        .send(SERVER, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        .send(SERVER, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    let v = view(&run(&c.events));
    assert_clean(&v);
    let st: Vec<u64> = exchanges(&v)
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(st, [200, 204, 304]);
    assert!(of_type(&v, "body").is_empty());
    assert!(
        of_type(&v, "response")
            .iter()
            .all(|r| r["http1"]["body"] == "none")
    );
}

#[test]
fn expect_100_continue() {
    let put = b"PUT /up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut c = Conv::new(1);
    c.send(CLIENT, put)
        .send(SERVER, cont)
        .send(CLIENT, b"hello")
        .send(SERVER, ok);
    // A server that refuses before the body: the client goes on without it.
    c.send(
        CLIENT,
        b"PUT /big HTTP/1.1\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n",
    )
    .send(
        SERVER,
        b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n",
    )
    .send(CLIENT, b"GET /after HTTP/1.1\r\n\r\n")
    .send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let v = view(&run(&c.events));
    assert_clean(&v);
    let x = exchanges(&v);
    assert_eq!(x.len(), 3, "{v:#?}");
    assert_eq!(
        (x[0]["status"].as_u64(), x[0]["path"].as_str()),
        (Some(200), Some("/up"))
    );
    // The interim response counts towards the response's bytes.
    assert_eq!(x[0]["response_bytes"], cont.len() + ok.len());
    assert_eq!(x[0]["request_bytes"], put.len() + 5);
    assert_eq!(x[1]["status"], 417);
    assert_eq!(x[2]["path"], "/after");
    let interim = of_type(&v, "response");
    assert_eq!(interim[0]["http1"]["status"], 100);
    assert_eq!(body_bytes(&v, "request", 0), b"hello");
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_in_any_pieces() {
    let req =
        b"POST /chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
                4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Checksum: abc\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok!\r\n0\r\n\r\n";
    for step in [1, 2, 5, 17, 1000] {
        let mut c = Conv::new(1);
        c.send_in(CLIENT, req, step).send_in(SERVER, resp, step);
        let v = view(&run(&c.events));
        assert_clean(&v);
        assert_eq!(body_bytes(&v, "request", 0), b"Wikipedia", "step {step}");
        assert_eq!(body_bytes(&v, "response", 0), b"ok!", "step {step}");
        let ext: Vec<&Value> = of_type(&v, "body")
            .into_iter()
            .filter_map(|r| r["http1"].get("chunk_ext"))
            .collect();
        assert_eq!(ext, [";ext=1"], "step {step}");
        let t = of_type(&v, "trailers");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["http1"]["headers"], json!([["X-Checksum", "abc"]]));
        let x = exchanges(&v);
        assert_eq!(x[0]["request_bytes"], req.len());
        assert_eq!(x[0]["response_bytes"], resp.len());
    }
}

#[test]
fn read_until_close_completes_at_the_close() {
    let mut c = Conv::new(7);
    c.send(CLIENT, b"GET / HTTP/1.0\r\n\r\n")
        .send(
            SERVER,
            b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\npart one,",
        )
        .send(SERVER, b" part two");
    let mut d = decoder();
    let v = view(&run_with(&mut d, &c.events, Some(7)));
    assert_clean(&v);
    assert_eq!(body_bytes(&v, "response", 0), b"part one, part two");
    let x = exchanges(&v);
    assert_eq!(
        (x[0]["status"].as_u64(), &x[0]["error"]),
        (Some(200), &Value::Null)
    );
    assert_eq!(d.connection_count(), 0);
}

#[test]
fn requests_without_response_at_the_close() {
    let mut c = Conv::new(3);
    c.send(CLIENT, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        .send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf");
    let v = view(&run_with(&mut decoder(), &c.events, Some(3)));
    let x = exchanges(&v);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0]["status"], 200);
    assert!(
        x[0]["error"]
            .as_str()
            .unwrap()
            .contains("connection closed"),
        "{x:?}"
    );
    assert_eq!(x[1]["error"], "no response");
    assert_eq!(x[1]["latency_ns"], Value::Null);
    let e = errors(&v);
    assert_eq!(e.len(), 1);
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response body incomplete (4 bytes received)"),
        "{e:?}"
    );
}

#[test]
fn gzip_and_deflate_bodies_are_shown_decompressed() {
    let text = br#"{"status":"ok","items":[1,2,3]}"#.repeat(50);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&text).unwrap();
    let gz = gz.finish().unwrap();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    resp.extend_from_slice(&gz);
    let mut c = Conv::new(1);
    c.send(CLIENT, GET).send_in(SERVER, &resp, 33);
    let recs = run(&c.events);
    let v = view(&recs);
    assert_clean(&v);
    use base64::Engine as _;
    let decoded: Vec<u8> = of_type(&v, "body")
        .iter()
        .flat_map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r["http1"]["decoded_b64"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(decoded, text);
    assert_eq!(body_bytes(&v, "response", 0), gz);
    // Pretty output at -vv previews the decompressed JSON.
    let text_of: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => d.body.text(2),
            _ => None,
        })
        .collect();
    assert!(
        text_of.iter().any(|t| t.contains("| {\"status\":\"ok\"")),
        "{text_of:#?}"
    );
}

#[test]
fn decompression_is_bounded() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'a'; 8 << 20]).unwrap();
    let gz = gz.finish().unwrap();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    resp.extend_from_slice(&gz);
    let mut c = Conv::new(1);
    c.send(CLIENT, GET)
        .send(SERVER, &resp)
        .send(CLIENT, GET)
        .send(SERVER, OK_JSON);
    let limits = Limits {
        decompressed_size: 100_000,
        ..Limits::default()
    };
    let v = view(&run_with(
        &mut decoder_with(limits, DataMode::B64),
        &c.events,
        None,
    ));
    let e = errors(&v);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0]["error"]["code"], "LIMIT");
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.decompressed_size (100000)")
    );
    let total: usize = of_type(&v, "body")
        .iter()
        .filter_map(|r| r["http1"]["decoded_b64"].as_str())
        .map(|s| s.len() * 3 / 4)
        .sum();
    assert!(total <= 100_000 + 3, "{total}");
    // The connection goes on.
    assert_eq!(exchanges(&v).len(), 2);
}

#[test]
fn data_none_keeps_lengths_only() {
    let mut c = Conv::new(1);
    c.send(CLIENT, GET).send(SERVER, OK_JSON);
    let v = view(&run_with(
        &mut decoder_with(Limits::default(), DataMode::None),
        &c.events,
        None,
    ));
    let b = of_type(&v, "body");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["http1"]["length"], 13);
    assert!(b[0]["http1"].get("data_b64").is_none());
}

#[test]
fn h2c_upgrade_hands_the_connection_to_http2_from_the_right_byte() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let settings_ack = [0u8, 0, 0, 4, 1, 0, 0, 0, 0];
    let mut c = Conv::new(1);
    c.send(
        CLIENT,
        b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    );
    // The client's preface arrives before the server's 101 is decoded: it is
    // held, then handed on.
    let mut client2 = preface.to_vec();
    client2.extend_from_slice(&settings);
    c.send(CLIENT, &client2);
    let mut server =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    server.extend_from_slice(&settings);
    // The response to the upgraded request, on stream 1: `:status: 200`
    // (HPACK static index 8), END_STREAM and END_HEADERS.
    let response = [0u8, 0, 1, 1, 5, 0, 0, 0, 1, 0x88];
    c.send(SERVER, &server)
        .send(SERVER, &settings_ack)
        .send(SERVER, &response);
    let v = view(&run(&c.events));
    assert_clean(&v);
    let x = exchanges(&v);
    assert_eq!(
        (x[0]["status"].as_u64(), x[0]["path"].as_str()),
        (Some(101), Some("/up"))
    );
    // The request's answer, in HTTP/2: one exchange more, the request's.
    assert_eq!(x.len(), 2, "{x:#?}");
    let h2x: Vec<&Value> = v
        .iter()
        .filter(|r| r.get("exchange").is_some() && r["decoder"] == "http2")
        .map(|r| &r["exchange"])
        .collect();
    assert_eq!(h2x.len(), 1, "{x:#?}");
    assert_eq!(
        (
            h2x[0]["method"].as_str(),
            h2x[0]["path"].as_str(),
            h2x[0]["status"].as_u64(),
            h2x[0]["request_bytes"].as_u64()
        ),
        (
            Some("GET"),
            Some("/up"),
            Some(200),
            x[0]["request_bytes"].as_u64()
        ),
        "{h2x:#?}"
    );
    assert!(h2x[0]["error"].is_null(), "{h2x:#?}");
    let sw = of_type(&v, "switch");
    assert_eq!(
        sw[0]["http1"],
        json!({"type": "switch", "protocol": "h2c", "decoded_as": "http2"})
    );
    let h2: Vec<&Value> = v.iter().filter(|r| r["decoder"] == "http2").collect();
    let types: Vec<&str> = h2
        .iter()
        .filter_map(|r| r["http2"]["type"].as_str())
        .collect();
    // The client's preface and SETTINGS, the server's SETTINGS and its ACK:
    // nothing before or in between is taken for HTTP/2.
    assert_eq!(
        types,
        ["PREFACE", "SETTINGS", "SETTINGS", "SETTINGS", "HEADERS"],
        "{h2:#?}"
    );
    assert!(v.iter().all(|r| r.get("error").is_none()), "{v:#?}");
}

#[test]
fn other_upgrades_and_hijacks_go_raw_from_the_byte_after_the_response() {
    // Docker attach: 101 UPGRADED with Upgrade: tcp, then the raw stream.
    let mut c = Conv::new(1);
    c.send(
        CLIENT,
        b"POST /v1.43/containers/x/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
    )
    .send(
        SERVER,
        b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x03hi\n",
    )
    .send(CLIENT, b"ls -l\n")
    .send(SERVER, b"HTTP/1.1 200 this is not a response\r\n\r\n");
    let v = view(&run(&c.events));
    assert_clean(&v);
    let sw = of_type(&v, "switch");
    assert_eq!(sw[0]["http1"]["protocol"], "tcp");
    assert_eq!(sw[0]["http1"]["decoded_as"], "raw");
    let raw: Vec<&str> = v
        .iter()
        .filter(|r| r["decoder"] == "raw")
        .map(|r| r["raw"].as_str().unwrap())
        .collect();
    assert_eq!(
        raw,
        [
            "\u{1}\0\0\0\0\0\0\u{3}hi\n",
            "ls -l\n",
            "HTTP/1.1 200 this is not a response\r\n\r\n"
        ]
    );
    assert_eq!(exchanges(&v).len(), 1);
    assert_eq!(of_type(&v, "request").len(), 1);
    assert_eq!(of_type(&v, "response").len(), 1);

    // A declined upgrade: the connection stays HTTP/1.
    let mut c = Conv::new(2);
    c.send(
        CLIENT,
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .send(CLIENT, b"GET /next HTTP/1.1\r\n\r\n")
    .send(
        SERVER,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    )
    .send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let v = view(&run(&c.events));
    assert_clean(&v);
    let paths: Vec<&str> = exchanges(&v)
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/ws", "/next"]);
    assert!(of_type(&v, "switch").is_empty());
}

#[test]
fn malformed_input_is_named_then_decoding_resumes() {
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "BAD_HEADER",
            "no colon",
        ),
        (
            b"G\x01T / HTTP/1.1\r\n\r\n",
            "BAD_START_LINE",
            "not a token",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "BAD_CHUNK",
            "bad chunk size line `zz`",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabcdef",
            "BAD_START_LINE",
            "request head",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "BAD_CONTENT_LENGTH",
            "Content-Length `x`",
        ),
    ];
    for (bad, code, what) in cases {
        let mut c = Conv::new(1);
        c.send(CLIENT, GET)
            .send(SERVER, OK_JSON)
            .send(CLIENT, bad)
            .send(CLIENT, b"GET /good HTTP/1.1\r\n\r\n")
            .send(SERVER, OK_JSON);
        let v = view(&run(&c.events));
        let e = errors(&v);
        assert_eq!(e.len(), 1, "{v:#?}");
        assert_eq!(e[0]["error"]["code"], *code, "{e:?}");
        let msg = e[0]["error"]["message"].as_str().unwrap();
        assert!(msg.contains(what), "{msg}");
        let skipped = of_type(&v, "skipped");
        assert_eq!(skipped.len(), 1, "{v:#?}");
        // The next request is found and paired.
        let paths: Vec<&str> = exchanges(&v)
            .iter()
            .filter_map(|x| x["path"].as_str())
            .collect();
        assert!(paths.contains(&"/good"), "{paths:?} for {code}");
    }
}

#[test]
fn a_malformed_first_request_is_an_error_not_a_midstream_join() {
    // Bare LF line ends are allowed; the header without a colon is not.
    let mut c = Conv::new(1);
    c.send(CLIENT, b"GET /lf HTTP/1.1\nHost: x\nBadHeaderNoColon\n\n")
        .send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    let e = errors(&v);
    assert_eq!(e.len(), 1, "{v:#?}");
    assert_eq!(e[0]["error"]["code"], "BAD_HEADER", "{e:?}");
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("header line 3 has no colon"),
        "{e:?}"
    );
    // Without the bad line, the same bytes are a request.
    let mut c = Conv::new(1);
    c.send(CLIENT, b"GET /lf HTTP/1.1\nHost: x\n\n")
        .send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    assert_clean(&v);
    assert_eq!(exchanges(&v)[0]["path"], "/lf");
}

#[test]
fn joining_mid_stream_starts_at_the_first_message_and_says_what_was_skipped() {
    // The tail of a response body, then a keep-alive request and response.
    let mut c = Conv::new(1);
    c.send(SERVER, b"d\":\"tail of an earlier body\"}")
        .send(
            CLIENT,
            b"ntent-Length: 0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n",
        )
        .send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    assert!(errors(&v).is_empty(), "{v:#?}");
    let skipped = of_type(&v, "skipped");
    assert_eq!(skipped.len(), 2, "{v:#?}");
    let client_skip = skipped
        .iter()
        .find(|s| s["http1"]["message"] == "request")
        .unwrap();
    assert_eq!(client_skip["http1"]["length"], 19);
    assert_eq!(client_skip["http1"]["reason"], super::conn::MIDSTREAM);
    // The response side found no start in the body tail before the next
    // response: its bytes are skipped too, counted where its message begins.
    let server_skip = skipped
        .iter()
        .find(|s| s["http1"]["message"] == "response")
        .unwrap();
    assert_eq!(server_skip["http1"]["length"], 29);
    let x = exchanges(&v);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0]["path"], "/next");
    // A body glued to the next request without a newline.
    let mut c = Conv::new(2);
    c.send(
        CLIENT,
        b"\"id\":3}PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    let v = view(&run(&c.events));
    assert_eq!(of_type(&v, "request")[0]["http1"]["method"], "PUT");
    assert_eq!(of_type(&v, "skipped")[0]["http1"]["length"], 7);
}

#[test]
fn gaps_inside_bodies_are_stepped_over_and_elsewhere_resynchronised() {
    let mut c = Conv::new(1);
    c.send(CLIENT, GET);
    // 100 bytes of body, 60 captured.
    c.event(
        SERVER,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        50,
    );
    c.send(SERVER, &[b'x'; 40]);
    c.send(CLIENT, GET).send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    assert!(errors(&v).is_empty(), "{v:#?}");
    let s = of_type(&v, "skipped");
    assert_eq!(s[0]["http1"]["length"], 50);
    assert_eq!(s[0]["http1"]["reason"], super::conn::IN_BODY);
    let x = exchanges(&v);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0]["error"], Value::Null);
    assert_eq!(x[0]["response_bytes"], 40 + 100);
    // A gap inside a head: an error, then the next message.
    let mut c = Conv::new(2);
    c.event(CLIENT, b"GET /lost HTTP/1.1\r\nHo", 30);
    c.send(CLIENT, b"more: x\r\n\r\nGET /found HTTP/1.1\r\n\r\n")
        .send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    let e = errors(&v);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["error"]["code"], "GAP");
    assert_eq!(exchanges(&v)[0]["path"], "/found");
    // A response head cut after its status line (a small snaplen): the
    // exchange still has its status, and says what is missing.
    let mut c = Conv::new(3);
    c.send(CLIENT, GET);
    c.event(SERVER, b"HTTP/1.1 404 Not Found\r\nServer: x\r\nCont", 80);
    c.send(CLIENT, GET).send(SERVER, OK_JSON);
    let v = view(&run(&c.events));
    assert_eq!(errors(&v)[0]["error"]["code"], "GAP");
    let x = exchanges(&v);
    assert_eq!(x[0]["status"], 404, "{x:#?}");
    assert_eq!(x[0]["error"], "response head not fully captured");
    assert!(x[0]["latency_ns"].is_u64());
    // Cut inside the status line itself: nothing to say but that.
    let mut c = Conv::new(4);
    c.send(CLIENT, GET);
    c.event(SERVER, b"HTTP/1.1 20", 80);
    let v = view(&run(&c.events));
    assert_eq!(exchanges(&v)[0]["status"], Value::Null);
}

#[test]
fn a_final_status_is_read_only_from_a_whole_status_line() {
    use super::conn::final_status;
    assert_eq!(final_status(b"HTTP/1.1 200 OK\r\nServ"), Some(200));
    assert_eq!(final_status(b"HTTP/1.0 503 x\n"), Some(503));
    assert_eq!(final_status(b"HTTP/1.1 200 OK"), None);
    assert_eq!(final_status(b"HTTP/1.1 100 Continue\r\n"), None);
    assert_eq!(final_status(b"HTTP/1.1 2x0 OK\r\n"), None);
    assert_eq!(final_status(b"GET / HTTP/1.1\r\n"), None);
    assert_eq!(final_status(b"HTTP/2 200\r\n"), None);
}

#[test]
fn limits_give_an_error_and_the_run_goes_on() {
    // A header section past limits.header_list_size.
    let limits = Limits {
        header_list_size: 1000,
        ..Limits::default()
    };
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        big.extend_from_slice(format!("X-Header-{i}: some value here\r\n").as_bytes());
    }
    let mut c = Conv::new(1);
    c.send_in(CLIENT, &big, 100)
        .send(CLIENT, b"\r\nGET /ok HTTP/1.1\r\n\r\n")
        .send(SERVER, OK_JSON);
    let v = view(&run_with(
        &mut decoder_with(limits, DataMode::B64),
        &c.events,
        None,
    ));
    let e = errors(&v);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.header_list_size (1000)")
    );
    assert_eq!(exchanges(&v).last().unwrap()["path"], "/ok");

    // Pipelined requests past limits.streams_per_connection.
    let limits = Limits {
        streams_per_connection: 4,
        ..Limits::default()
    };
    let mut c = Conv::new(1);
    c.send(CLIENT, &b"GET / HTTP/1.1\r\n\r\n".repeat(6));
    let v = view(&run_with(
        &mut decoder_with(limits, DataMode::B64),
        &c.events,
        None,
    ));
    let e = errors(&v);
    assert_eq!(e.len(), 1);
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.streams_per_connection (4)")
    );
    let x = exchanges(&v);
    assert_eq!(x.len(), 6);
    assert_eq!(
        x.iter()
            .filter(|x| x["error"] == "dropped: limits.streams_per_connection")
            .count(),
        4
    );

    // A long line.
    let limits = Limits {
        line_length: 100,
        ..Limits::default()
    };
    let mut c = Conv::new(1);
    c.send(CLIENT, GET)
        .send(SERVER, OK_JSON)
        .send(
            CLIENT,
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200)).as_bytes(),
        )
        .send(CLIENT, b"GET /after HTTP/1.1\r\n\r\n");
    let v = view(&run_with(
        &mut decoder_with(limits, DataMode::B64),
        &c.events,
        None,
    ));
    let e = errors(&v);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.line_length (100)")
    );
    assert!(
        of_type(&v, "request")
            .iter()
            .any(|r| r["http1"]["target"] == "/after")
    );
}

#[test]
fn connections_past_the_limit_are_dropped_longest_idle_first() {
    let limits = Limits {
        connections: 8,
        ..Limits::default()
    };
    let mut d = decoder_with(limits, DataMode::B64);
    let mut events = Vec::new();
    for conn in 0..20 {
        let mut c = Conv::new(conn);
        c.seq = conn * 10;
        c.send(CLIENT, b"GET /x HTTP/1.1\r\n\r\n");
        events.extend(c.events);
    }
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    for e in &events {
        d.decode(e, &mut out);
        assert!(d.connection_count() <= 8);
    }
    let v = view(&recs);
    let x = exchanges(&v);
    assert!(x.len() >= 12, "evicted connections report their requests");
    assert!(x.iter().all(|x| x["error"] == "no response"));
}

#[test]
fn the_memory_budget_bounds_what_connections_hold() {
    let limits = Limits {
        memory: 64 << 10,
        ..Limits::default()
    };
    let ctx = BuildContext::new(limits);
    let mut d = Http1::new(&Http1Config::default(), Http2Config::default(), &ctx);
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    // Many connections each holding an unfinished head of 10 KiB.
    for conn in 0..20 {
        let mut c = Conv::new(conn);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"X-A: 0123456789\r\n", 600).flatten());
        c.send(CLIENT, &head);
        for e in &c.events {
            d.decode(e, &mut out);
        }
        assert!(ctx.budget.used() <= 64 << 10);
    }
    d.finish(&mut out);
    assert_eq!(ctx.budget.used(), 0, "everything is given back");
    let v = view(&recs);
    assert!(
        errors(&v).iter().any(|e| e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.memory")),
        "{v:#?}"
    );
}

#[test]
fn the_syscall_view_decodes_one_end_alike() {
    // The client's own view: sends are requests, receives responses.
    let mut c = Conv::new(1);
    c.send(CLIENT, GET)
        .send(SERVER, OK_JSON)
        .send(CLIENT, GET)
        .send(SERVER, OK_JSON);
    let syscall: Vec<Arc<Event>> = c
        .events
        .iter()
        .map(|e| {
            let client = e.pid == 10;
            Arc::new(Event {
                pid: 10,
                tid: 10,
                comm: "curl".into(),
                peer_pid: 20,
                peer_comm: "nginx".into(),
                socket: 100,
                peer_socket: 101,
                role: Role::Client,
                dir: if client {
                    Direction::Send
                } else {
                    Direction::Recv
                },
                via: None,
                ..(**e).clone()
            })
        })
        .collect();
    let a = view(&run(&c.events));
    let b = view(&run(&syscall));
    assert_eq!(exchanges(&a), exchanges(&b));
    assert_eq!(exchanges(&b).len(), 2);
    assert_eq!(exchanges(&b)[0]["server"], json!([20, "nginx"]));
}

#[test]
fn lost_events_reset_every_connection() {
    let mut c = Conv::new(1);
    c.send(CLIENT, GET);
    let mut d = decoder();
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    for e in &c.events {
        d.decode(e, &mut out);
    }
    d.lost(3, &mut out);
    let mut c2 = Conv::new(1);
    c2.seq = 10;
    c2.send(
        SERVER,
        b"rest of something\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    for e in &c2.events {
        d.decode(e, &mut out);
    }
    d.finish(&mut out);
    let v = view(&recs);
    let x = exchanges(&v);
    assert_eq!(x.len(), 1);
    assert!(x[0]["error"].as_str().unwrap().contains("events were lost"));
    let s = of_type(&v, "skipped");
    assert_eq!(s[0]["http1"]["reason"], super::conn::AFTER_LOSS);
    assert!(errors(&v).is_empty());
}

#[test]
fn detect_says_how_sure_it_is() {
    let mut d = decoder();
    let e = Event::default();
    assert_eq!(d.detect(GET, &e), 95);
    assert_eq!(d.detect(OK_JSON, &e), 95);
    assert_eq!(d.detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &e), 0);
    assert_eq!(d.detect(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", &e), 0);
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A valid conversation to mutate: every framing, an upgrade, compression.
fn corpus() -> Vec<(usize, Vec<u8>)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"compressed body compressed body").unwrap();
    let gz = gz.finish().unwrap();
    let mut gz_resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    gz_resp.extend_from_slice(&gz);
    vec![
        (CLIENT, GET.to_vec()),
        (SERVER, OK_JSON.to_vec()),
        (
            CLIENT,
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                .to_vec(),
        ),
        (SERVER, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        (CLIENT, b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n".to_vec()),
        (SERVER, gz_resp),
        (
            CLIENT,
            b"HEAD / HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        ),
        (
            SERVER,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec(),
        ),
        (
            SERVER,
            b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\n\x81\x05hello".to_vec(),
        ),
        (CLIENT, b"\x81\x85abcd\x00\x00\x00\x00\x00".to_vec()),
    ]
}

/// Random, mutated and re-cut input: no panic, memory within the limits.
#[test]
fn robustness_against_random_and_mutated_input() {
    let limits = Limits {
        header_list_size: 4096,
        line_length: 512,
        connection_buffer: 64 << 10,
        memory: 1 << 20,
        decompressed_size: 4096,
        streams_per_connection: 8,
        connections: 16,
        ..Limits::default()
    };
    let base = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..3000 {
        let ctx = BuildContext::new(limits.clone());
        let mut d = Http1::new(&Http1Config::default(), Http2Config::default(), &ctx);
        let mut c = Conv::new(case % 5);
        let mut recs = Vec::new();
        let mut out = Out::collect(&mut recs);
        let pieces: Vec<(usize, Vec<u8>)> = match case % 3 {
            // Pure random bytes, either side.
            0 => (0..rng.below(8) + 1)
                .map(|_| {
                    let n = rng.below(600);
                    (rng.below(2), (0..n).map(|_| rng.next() as u8).collect())
                })
                .collect(),
            // The corpus with bytes flipped, inserted and removed.
            1 => base
                .iter()
                .map(|(side, b)| {
                    let mut b = b.clone();
                    for _ in 0..rng.below(4) {
                        let at = rng.below(b.len());
                        match rng.below(3) {
                            0 if !b.is_empty() => b[at] = rng.next() as u8,
                            1 => b.insert(at, rng.next() as u8),
                            _ if !b.is_empty() => {
                                b.remove(at);
                            }
                            _ => {}
                        }
                    }
                    (*side, b)
                })
                .collect(),
            // The corpus, a random piece of it dropped (joined midway).
            _ => base.iter().skip(rng.below(base.len())).cloned().collect(),
        };
        for (side, bytes) in pieces {
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + rng.below(bytes.len() - at);
                let gap = if rng.below(20) == 0 {
                    rng.below(50) as u64
                } else {
                    0
                };
                let e = c.event(side, &bytes[at..at + n], gap);
                d.decode(&e, &mut out);
                assert!(ctx.budget.used() <= 1 << 20);
                at += n;
            }
            if rng.below(30) == 0 {
                d.lost(1, &mut out);
            }
        }
        if case % 2 == 0 {
            d.closed(c.conn, &mut out);
        }
        d.finish(&mut out);
        assert_eq!(ctx.budget.used(), 0, "case {case}");
        // Every record writes valid JSON.
        for r in &recs {
            let mut buf = Vec::new();
            spf_pipeline::ndjson::encode(r, &mut buf);
            let _: Value = serde_json::from_slice(&buf)
                .unwrap_or_else(|e| panic!("case {case}: {e}: {}", String::from_utf8_lossy(&buf)));
        }
    }
}

/// A request taken from the server's receive before the client's own send
/// was seen names its sender by pid only; the exchange takes the client's
/// comm from the response, which names its receiver.
#[test]
fn exchange_learns_the_client_comm_from_the_response() {
    let mut c = Conv::new(7);
    let req = c.event(CLIENT, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    let mut first = (*req).clone();
    first.comm = "".into();
    first.via = Some(Direction::Recv);
    c.events[0] = Arc::new(first);
    c.send(SERVER, b"HTTP/1.1 204 No Content\r\n\r\n");
    let recs = view(&run(&c.events));
    let x: Vec<&Value> = recs.iter().filter_map(|r| r.get("exchange")).collect();
    assert_eq!(x.len(), 1, "{recs:#?}");
    assert_eq!(x[0]["client"], json!([10, "curl"]));
    assert_eq!(x[0]["server"], json!([20, "nginx"]));
}
