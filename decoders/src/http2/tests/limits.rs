//! Each `[limits]` key the decoder obeys: hitting it gives one error record
//! naming it, drops what it guarded, and decoding goes on.

use spf_pipeline::{BuildContext, Limits};

use super::conn_view::{cev, exchanges, run_cv, sides};
use super::*;

fn limited(limits: Limits) -> (Http2, Arc<spf_pipeline::Budget>) {
    let ctx = BuildContext::new(limits);
    (
        Http2::with_context(Http2Config::default(), &ctx),
        Arc::clone(&ctx.budget),
    )
}

fn limit_errors(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Error {
                    code: Some(c),
                    message,
                } if c == "LIMIT" => Some(message.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Client preface with SETTINGS_MAX_FRAME_SIZE = 2^24 - 1, so that the
/// server may send frames of any size.
fn big_frames_allowed() -> Vec<u8> {
    let mut c = frame::PREFACE.to_vec();
    c.extend(frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]));
    c
}

/// A 4 KiB header inserted once and then referenced by a million 1-byte
/// indexes: the list stops at limits.header_list_size, the table stays
/// right, and the next block decodes exactly.
#[test]
fn header_list_size() {
    let (mut d, _) = limited(Limits::default());
    let mut first = Vec::new();
    henc::indexed(&mut first, 8);
    henc::literal_indexed(&mut first, b"x-big", &[b'b'; 4000], false);
    let bomb = vec![0xbe; 1 << 20];
    let mut after = Vec::new();
    henc::indexed(&mut after, 8);
    henc::indexed(&mut after, 62);
    let mut server = frame(frame::SETTINGS, 0, 0, &[]);
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &first));
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 3, &bomb));
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 5, &after));
    let recs = run_cv(&mut d, &[(0, big_frames_allowed()), (1, server)]);
    let errs = limit_errors(&recs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("limits.header_list_size (262144)") && errs[0].contains("connection 1"),
        "{errs:?}"
    );
    assert_eq!(errors(&recs).len(), 1);
    let h = headers_of(&recs);
    assert_eq!(h.len(), 2, "the bomb's HEADERS record has no headers");
    assert_eq!(h[1].1[1], ("x-big".to_string(), "b".repeat(4000)));
}

/// A HEADERS frame and a flood of empty CONTINUATIONs: past
/// limits.continuation_frames the block is dropped and nothing is kept per
/// CONTINUATION, and a later block on the connection decodes.
#[test]
fn continuation_frames() {
    let limits = Limits {
        continuation_frames: 16,
        ..Limits::default()
    };
    let (mut d, budget) = limited(limits);
    let mut out = Vec::new();
    let mut seq = 0;
    let mut feed = |d: &mut Http2, side, bytes: &[u8], out: &mut Vec<Record>| {
        d.decode(&cev(seq, side, bytes), &mut spf_pipeline::Out::collect(out));
        seq += 1;
    };
    feed(&mut d, 0, &big_frames_allowed(), &mut out);
    let mut e = Enc::default();
    let head = e.block(&[(":method", "GET"), (":path", "/flood")]);
    feed(&mut d, 0, &frame(frame::HEADERS, 0, 1, &head), &mut out);
    let cont = frame(frame::CONTINUATION, 0, 1, &[]);
    let mut peak = 0;
    for _ in 0..2000 {
        feed(&mut d, 0, &cont, &mut out);
        peak = peak.max(budget.used());
    }
    assert!(
        peak < 64 * 1024,
        "held {peak} bytes for empty CONTINUATIONs"
    );
    let errs = limit_errors(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("limits.continuation_frames (16)"),
        "{errs:?}"
    );
    // One record per frame still: HEADERS and 2000 CONTINUATIONs.
    let conts = lines(&out)
        .iter()
        .filter(|l| l.contains("\"type\":\"CONTINUATION\""))
        .count();
    assert_eq!(conts, 2000);
    feed(
        &mut d,
        0,
        &frame(frame::CONTINUATION, frame::END_HEADERS, 1, &[]),
        &mut out,
    );
    out.clear();
    let next = [0x82, 0x84];
    feed(
        &mut d,
        0,
        &frame(frame::HEADERS, frame::END_HEADERS, 3, &next),
        &mut out,
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    assert_eq!(
        headers_of(&out)[0].1,
        vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/".to_string())
        ]
    );
}

/// More concurrent streams than limits.streams_per_connection: the oldest
/// go, their exchanges unanswered, and the state stays bounded.
#[test]
fn streams_per_connection() {
    let limits = Limits {
        streams_per_connection: 8,
        ..Limits::default()
    };
    let (mut d, _) = limited(limits);
    let mut e = Enc::default();
    // The server spoke: its responses could have been seen.
    let mut w = vec![
        (0, big_frames_allowed()),
        (1, frame(frame::SETTINGS, 0, 0, &[])),
    ];
    for i in 0..40u32 {
        let b = e.block(&[
            (":method", "GET"),
            (":path", &format!("/s/{i}")),
            (":scheme", "http"),
        ]);
        w.push((
            0,
            frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                1 + 2 * i,
                &b,
            ),
        ));
    }
    let recs = run_cv(&mut d, &w);
    let errs = limit_errors(&recs);
    assert!(!errs.is_empty());
    assert!(
        errs.iter()
            .all(|e| e.contains("limits.streams_per_connection (8)")),
        "{errs:?}"
    );
    // At most a quarter of the limit's worth of errors per eviction.
    assert!(errs.len() <= 40 / 2, "{errs:?}");
    let x = exchanges(&recs);
    assert_eq!(x.len(), 40, "every request gets its exchange record");
    assert!(x.iter().all(|e| e.error.as_deref() == Some("no response")));
}

/// A gRPC message larger than limits.message_size: one error, the stream's
/// messages are no longer reassembled, the connection decodes on.
#[test]
fn message_size() {
    let limits = Limits {
        message_size: 100,
        ..Limits::default()
    };
    let (mut d, budget) = limited(limits);
    let (c, s, _) = conversation(2, false);
    let mut w = sides(&c, &s);
    // The first call's request message, replaced by a big one split in two.
    let big = grpc_msg(&[7; 1000]);
    let i = w
        .iter()
        .position(|(side, b)| *side == 0 && b[3] == frame::DATA)
        .unwrap();
    w[i].1 = frame(frame::DATA, 0, 1, &big[..500]);
    w[i + 1].1 = frame(frame::DATA, frame::END_STREAM, 1, &big[500..]);
    let recs = run_cv(&mut d, &w);
    let errs = limit_errors(&recs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("limits.message_size (100)"), "{errs:?}");
    // The second call is decoded whole.
    assert!(lines(&recs).join("\n").contains("1: \"hello 1\""));
    assert_eq!(budget.used(), 0, "everything given back after the end");
}

/// A message with more protobuf fields than limits.protobuf_fields: shown
/// without its protobuf view, with an error naming the limit.
#[test]
fn protobuf_fields() {
    let limits = Limits {
        protobuf_fields: 10,
        ..Limits::default()
    };
    let (mut d, _) = limited(limits);
    let mut e = Enc::default();
    let mut c = big_frames_allowed();
    c.extend(frame(
        frame::HEADERS,
        frame::END_HEADERS,
        1,
        &e.block(&[
            (":method", "POST"),
            (":path", "/a.B/C"),
            ("content-type", "application/grpc"),
        ]),
    ));
    let many: Vec<u8> = (0..50).flat_map(|_| [0x08, 0x01]).collect();
    c.extend(frame(frame::DATA, frame::END_STREAM, 1, &grpc_msg(&many)));
    c.extend(frame(
        frame::DATA,
        frame::END_STREAM,
        3,
        &grpc_msg(&[0x08, 0x01]),
    ));
    let recs = run_cv(&mut d, &[(0, c)]);
    let errs = limit_errors(&recs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("limits.protobuf_fields (10)"), "{errs:?}");
    let all = lines(&recs).join("\n");
    assert_eq!(all.matches("\"protobuf\"").count(), 1, "{all}");
}

/// A frame longer than limits.connection_buffer is skipped without being
/// held; the frames after it decode.
#[test]
fn connection_buffer() {
    let limits = Limits {
        connection_buffer: 4096,
        ..Limits::default()
    };
    let (mut d, budget) = limited(limits);
    // The server sends a 100 KB frame (the client allowed frames that big),
    // in pieces, so that it would have to be held.
    let mut s = frame(frame::SETTINGS, 0, 0, &[]);
    s.extend(frame(frame::DATA, 0, 1, &[1; 100_000]));
    s.extend(frame(frame::PING, 0, 0, &[9; 8]));
    let mut w = vec![(0, big_frames_allowed())];
    w.extend(s.chunks(1000).map(|p| (1, p.to_vec())));
    let mut out = Vec::new();
    let mut peak = 0;
    for (i, (side, b)) in w.iter().enumerate() {
        d.decode(
            &cev(i as u64, *side, b),
            &mut spf_pipeline::Out::collect(&mut out),
        );
        peak = peak.max(budget.used());
    }
    assert!(peak <= 16 * 1024, "held {peak}");
    let errs = limit_errors(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("limits.connection_buffer (4096)"),
        "{errs:?}"
    );
    assert!(lines(&out).iter().any(|l| l.contains("\"type\":\"PING\"")));
    assert_eq!(errors(&out).len(), 1);
}

/// Past limits.connections, the longest idle go with an error naming the
/// limit and their exchanges unanswered; a new connection decodes right.
#[test]
fn connections() {
    let limits = Limits {
        connections: 4,
        ..Limits::default()
    };
    let (mut d, _) = limited(limits);
    let mut out = Vec::new();
    let mut e = Enc::default();
    let mut req = frame::PREFACE.to_vec();
    req.extend(frame(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &e.block(&[(":method", "GET"), (":path", "/idle"), (":scheme", "http")]),
    ));
    let settings = frame(frame::SETTINGS, 0, 0, &[]);
    for conn in 0..10u64 {
        for (side, bytes) in [(0, &req), (1, &settings)] {
            let mut ev = (*cev(conn * 2 + side as u64, side, bytes)).clone();
            ev.conn = 100 + conn;
            d.decode(&Arc::new(ev), &mut spf_pipeline::Out::collect(&mut out));
        }
        assert!(d.view_count() <= 4);
    }
    let errs = limit_errors(&out);
    assert!(!errs.is_empty());
    assert!(
        errs.iter().all(|e| e.contains("limits.connections (4)")),
        "{errs:?}"
    );
    let x = exchanges(&out);
    assert_eq!(x.len(), errs.len());
    assert!(x.iter().all(|e| e.error.as_deref() == Some("no response")));
    let last = headers_of(&out);
    assert_eq!(last.len(), 10);
    assert!(last.iter().all(|(_, h)| h[1].1 == "/idle"));
}

/// The memory budget: a connection asking for more than is left loses its
/// state (one error naming limits.memory), decodes on as joined midway, and
/// every byte taken is given back.
#[test]
fn memory() {
    let limits = Limits {
        memory: 64 * 1024,
        ..Limits::default()
    };
    let (mut d, budget) = limited(limits);
    // A 100 KB frame from the server, sent in pieces: holding it would pass
    // the budget. Then two PINGs in one write, where decoding finds frames
    // again.
    let mut s = frame(frame::SETTINGS, 0, 0, &[]);
    s.extend(frame(frame::DATA, 0, 1, &[0; 100_000]));
    let mut w = vec![(0, big_frames_allowed())];
    w.extend(s.chunks(1000).map(|p| (1, p.to_vec())));
    let mut pings = frame(frame::PING, 0, 0, &[9; 8]);
    pings.extend(frame(frame::PING, frame::ACK, 0, &[9; 8]));
    w.push((1, pings));
    let mut out = Vec::new();
    for (i, (side, b)) in w.iter().enumerate() {
        d.decode(
            &cev(i as u64, *side, b),
            &mut spf_pipeline::Out::collect(&mut out),
        );
        assert!(budget.used() <= 64 * 1024);
    }
    let errs = limit_errors(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("limits.memory"), "{errs:?}");
    // Found again: the PING after the frame.
    assert!(lines(&out).iter().any(|l| l.contains("\"type\":\"PING\"")));
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    drop(d);
    assert_eq!(budget.used(), 0);
}

/// A header table larger than limits.header_table_size: the oldest entries
/// become placeholders (reported once), never a COMPRESSION_ERROR.
#[test]
fn header_table_size() {
    let limits = Limits {
        header_table_size: 2048,
        ..Limits::default()
    };
    let (mut d, _) = limited(limits);
    let mut client = frame::PREFACE.to_vec();
    client.extend(frame(frame::SETTINGS, 0, 0, &[0, 1, 0, 1, 0, 0]));
    let mut first = Vec::new();
    henc::size_update(&mut first, 65536);
    henc::indexed(&mut first, 8);
    for i in 0..20 {
        henc::literal_indexed(
            &mut first,
            format!("x-{i:02}").as_bytes(),
            &[b'v'; 200],
            false,
        );
    }
    let mut second = Vec::new();
    henc::indexed(&mut second, 62);
    henc::indexed(&mut second, 62 + 19);
    let mut server = frame(frame::SETTINGS, 0, 0, &[]);
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &first));
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 3, &second));
    server.extend(frame(frame::HEADERS, frame::END_HEADERS, 5, &second));
    let recs = run_cv(&mut d, &[(0, client), (1, server)]);
    let errs = errors(&recs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("limits.header_table_size (2048)"),
        "{errs:?}"
    );
    let h = headers_of(&recs);
    assert_eq!(h[1].1[0], ("x-19".to_string(), "v".repeat(200)));
    assert_eq!(h[1].1[1].0, "<unknown index 81>");
    assert_eq!(h[2].1, h[1].1);
}

/// Everything a whole conversation held (split frames, header blocks over
/// CONTINUATIONs, gRPC messages across DATA frames) is given back.
#[test]
fn budget_is_given_back() {
    let (mut d, budget) = limited(Limits::default());
    let (c, s, _) = conversation(3, true);
    let mut w = Vec::new();
    for (side, bytes) in sides(&c, &s) {
        for piece in bytes.chunks(7) {
            w.push((side, piece.to_vec()));
        }
    }
    let mut e = Enc::default();
    let b = e.block(&[
        (":method", "GET"),
        (":path", "/cont"),
        ("x-long", &"y".repeat(3000)),
    ]);
    let mut cont = frame(frame::HEADERS, 0, 101, &b[..1000]);
    cont.extend(frame(frame::CONTINUATION, 0, 101, &b[1000..2000]));
    cont.extend(frame(
        frame::CONTINUATION,
        frame::END_HEADERS,
        101,
        &b[2000..],
    ));
    for piece in cont.chunks(500) {
        w.push((0, piece.to_vec()));
    }
    let recs = run_cv(&mut d, &w);
    assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
    assert_eq!(budget.used(), 0);
    drop(d);
    assert_eq!(budget.used(), 0);
}

/// A state that never saw a byte the other way (one end whose receives are
/// not captured) cannot tell an unanswered request from one whose response
/// it could not see: its streams go without exchange records or errors.
#[test]
fn one_way_capture_ends_streams_quietly() {
    let limits = Limits {
        streams_per_connection: 8,
        ..Limits::default()
    };
    let (mut d, _) = limited(limits);
    let mut e = Enc::default();
    let mut w = vec![(0, big_frames_allowed())];
    for i in 0..40u32 {
        let b = e.block(&[(":method", "GET"), (":path", &format!("/s/{i}"))]);
        w.push((
            0,
            frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                1 + 2 * i,
                &b,
            ),
        ));
    }
    let recs = run_cv(&mut d, &w);
    assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
    assert!(exchanges(&recs).is_empty());
    assert_eq!(headers_of(&recs).len(), 40);
}
