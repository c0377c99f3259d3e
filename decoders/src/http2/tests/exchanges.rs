//! Exchange records: one per stream, when its response completes, is reset,
//! or the connection ends first.

use super::conn_view::{exchanges, run_cv};
use super::*;

fn prefaces() -> Vec<(usize, Vec<u8>)> {
    let mut c = frame::PREFACE.to_vec();
    c.extend(frame(frame::SETTINGS, 0, 0, &[]));
    vec![(0, c), (1, frame(frame::SETTINGS, 0, 0, &[]))]
}

fn block(e: &mut Enc, h: &[(&str, &str)]) -> Vec<u8> {
    e.block(h)
}

fn grpc_request(e: &mut Enc, sid: u32, method: &str) -> Vec<u8> {
    let mut w = frame(
        frame::HEADERS,
        frame::END_HEADERS,
        sid,
        &block(
            e,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", method),
                (":authority", "svc"),
                ("content-type", "application/grpc"),
            ],
        ),
    );
    w.extend(frame(
        frame::DATA,
        frame::END_STREAM,
        sid,
        &grpc_msg(b"\x08\x01"),
    ));
    w
}

/// A failing call answered with headers only (status in the one HEADERS
/// frame, "Trailers-Only"), and one failing in its trailers.
#[test]
fn failing_grpc_calls_carry_their_status() {
    let (mut ce, mut se) = (Enc::default(), Enc::default());
    let mut w = prefaces();
    w.push((0, grpc_request(&mut ce, 1, "/pkg.Svc/Find")));
    w.push((
        1,
        frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &block(
                &mut se,
                &[
                    (":status", "200"),
                    ("content-type", "application/grpc"),
                    ("grpc-status", "5"),
                    ("grpc-message", "no%20such%20thing"),
                ],
            ),
        ),
    ));
    w.push((0, grpc_request(&mut ce, 3, "/pkg.Svc/Put")));
    let mut resp = frame(
        frame::HEADERS,
        frame::END_HEADERS,
        3,
        &block(
            &mut se,
            &[(":status", "200"), ("content-type", "application/grpc")],
        ),
    );
    resp.extend(frame(frame::DATA, 0, 3, &grpc_msg(b"")));
    resp.extend(frame(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        3,
        &block(&mut se, &[("grpc-status", "13"), ("grpc-message", "boom")]),
    ));
    w.push((1, resp));
    let recs = run_cv(&mut decoder(), &w);
    assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
    let x = exchanges(&recs);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].path.as_deref(), Some("/pkg.Svc/Find"));
    assert_eq!(&*x[0].protocol, "grpc");
    assert_eq!((x[0].status, x[0].grpc_status), (Some(200), Some(5)));
    assert_eq!(x[0].grpc_message.as_deref(), Some("no such thing"));
    assert_eq!(x[1].path.as_deref(), Some("/pkg.Svc/Put"));
    assert_eq!((x[1].status, x[1].grpc_status), (Some(200), Some(13)));
    assert_eq!(x[1].grpc_message.as_deref(), Some("boom"));
    assert!(
        x.iter()
            .all(|e| e.error.is_none() && e.latency_ns.is_some())
    );
}

/// Plain HTTP/2 (not gRPC): protocol `http2`, the HTTP status, bytes.
#[test]
fn plain_http2_exchange() {
    let (mut ce, mut se) = (Enc::default(), Enc::default());
    let mut w = prefaces();
    let req = block(
        &mut ce,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/missing"),
            (":authority", "localhost"),
        ],
    );
    w.push((
        0,
        frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &req,
        ),
    ));
    let resp = block(
        &mut se,
        &[(":status", "404"), ("content-type", "text/plain")],
    );
    let mut r = frame(frame::HEADERS, frame::END_HEADERS, 1, &resp);
    r.extend(frame(frame::DATA, frame::END_STREAM, 1, b"not found"));
    w.push((1, r));
    let recs = run_cv(&mut decoder(), &w);
    let x = exchanges(&recs);
    assert_eq!(x.len(), 1);
    assert_eq!(&*x[0].protocol, "http2");
    assert_eq!(x[0].method.as_deref(), Some("GET"));
    assert_eq!(x[0].path.as_deref(), Some("/missing"));
    assert_eq!(x[0].status, Some(404));
    assert_eq!(x[0].grpc_status, None);
    assert_eq!(x[0].request_bytes, req.len() as u64);
    assert_eq!(x[0].response_bytes, (resp.len() + 9) as u64);
}

/// RST_STREAM ends the exchange with the code; a connection that closes
/// before a response completes ends its exchanges unanswered.
#[test]
fn resets_and_unanswered_requests() {
    let (mut ce, mut se) = (Enc::default(), Enc::default());
    let mut w = prefaces();
    w.push((0, grpc_request(&mut ce, 1, "/a.B/Reset")));
    w.push((1, frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8])));
    w.push((0, grpc_request(&mut ce, 3, "/a.B/Never")));
    w.push((0, grpc_request(&mut ce, 5, "/a.B/Half")));
    w.push((
        1,
        frame(
            frame::HEADERS,
            frame::END_HEADERS,
            5,
            &block(
                &mut se,
                &[(":status", "200"), ("content-type", "application/grpc")],
            ),
        ),
    ));
    let mut d = decoder();
    let mut out = Vec::new();
    for (i, (side, bytes)) in w.iter().enumerate() {
        d.decode(
            &super::conn_view::cev(i as u64, *side, bytes),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    let x = exchanges(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].error.as_deref(), Some("RST_STREAM CANCEL"));
    assert!(x[0].latency_ns.is_some());
    out.clear();
    d.closed(1, &mut spf_pipeline::Out::collect(&mut out));
    let x = exchanges(&out);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].path.as_deref(), Some("/a.B/Never"));
    assert_eq!(x[0].error.as_deref(), Some("no response"));
    assert_eq!((x[0].status, x[0].latency_ns), (None, None));
    assert_eq!(x[1].path.as_deref(), Some("/a.B/Half"));
    assert_eq!(x[1].error.as_deref(), Some("response incomplete"));
    assert_eq!(x[1].status, Some(200));
    assert_eq!(d.view_count(), 0);
}

/// The syscall view: each end's state pairs what it sent and received, with
/// the client and server told apart by direction.
#[test]
fn syscall_view_exchanges_from_either_end() {
    let (c, s, _) = conversation(2, true);
    let writes = super::conn_view::sides(&c, &s);
    // The server's end: it receives the requests and sends the responses.
    let mut out = Vec::new();
    let mut d = decoder();
    for (i, (side, w)) in writes.iter().enumerate() {
        let mut e = (*event(
            i as u64,
            if *side == 0 {
                Direction::Recv
            } else {
                Direction::Send
            },
            w,
        ))
        .clone();
        (e.pid, e.comm, e.peer_pid) = (20, Arc::from("server"), 10);
        d.decode(&Arc::new(e), &mut spf_pipeline::Out::collect(&mut out));
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    let x = exchanges(&out);
    assert_eq!(x.len(), 2);
    assert!(x.iter().all(|e| e.client.pid == 10 && e.server.pid == 20));
    assert!(
        x.iter()
            .all(|e| &*e.server.comm == "server" && e.error.is_none())
    );
}

/// `exchanges = false`: frames only.
#[test]
fn exchanges_can_be_turned_off() {
    let (c, s, _) = conversation(2, true);
    let cfg = Http2Config {
        exchanges: false,
        ..Http2Config::default()
    };
    let recs = run_cv(&mut Http2::new(cfg), &super::conn_view::sides(&c, &s));
    assert!(exchanges(&recs).is_empty());
    assert_eq!(headers_of(&recs).len(), 6);
    assert!(errors(&recs).is_empty());
}
