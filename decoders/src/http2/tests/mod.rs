//! Decoder tests on byte streams built frame by frame: reassembly at every split,
//! mid-stream attach, gaps, gRPC, malformed input.

use std::sync::Arc;

use serde_json::Value;
use spf_pipeline::{Body, Decoder, Direction, Event, Record, SockKind};

use super::hpack::encode as henc;
use super::*;

pub(crate) fn event(seq: u64, dir: Direction, data: &[u8]) -> Arc<Event> {
    Arc::new(Event {
        seq,
        ts_ns: seq,
        time_ns: seq,
        pid: 7,
        tid: 7,
        comm: Arc::from("test"),
        peer_pid: 8,
        path: Arc::from("/tmp/x.sock"),
        sock: SockKind::Stream,
        dir,
        conn: 1,
        socket: 0,
        len: data.len() as u64,
        data: bytes::Bytes::copy_from_slice(data),
        truncated: false,
        ..Event::default()
    })
}

pub(crate) fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A small HPACK encoder with a real dynamic table, so that later blocks refer
/// to entries earlier ones inserted.
#[derive(Default)]
pub(crate) struct Enc {
    table: Vec<(Vec<u8>, Vec<u8>)>,
    pub huffman: bool,
}

impl Enc {
    pub(crate) fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in headers {
            let (n, v) = (n.as_bytes(), v.as_bytes());
            if let Some(i) = hpack::table::STATIC
                .iter()
                .position(|(sn, sv)| sn.as_bytes() == n && sv.as_bytes() == v)
            {
                henc::indexed(&mut out, i + 1);
            } else if let Some(i) = self.table.iter().position(|(tn, tv)| tn == n && tv == v) {
                henc::indexed(&mut out, 62 + i);
            } else if n == b"x-secret" {
                henc::literal_plain(&mut out, 0, n, v, self.huffman);
            } else {
                match hpack::table::STATIC
                    .iter()
                    .position(|(sn, _)| sn.as_bytes() == n)
                {
                    Some(i) => henc::literal_indexed_name(&mut out, i + 1, v, self.huffman),
                    None => henc::literal_indexed(&mut out, n, v, self.huffman),
                }
                self.table.insert(0, (n.to_vec(), v.to_vec()));
                while self
                    .table
                    .iter()
                    .map(|(a, b)| a.len() + b.len() + 32)
                    .sum::<usize>()
                    > 4096
                {
                    self.table.pop();
                }
            }
        }
        out
    }
}

pub(crate) fn grpc_msg(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

type Hdrs = Vec<(String, String)>;

fn req(i: usize) -> Vec<(String, String)> {
    vec![
        (":method".into(), "POST".into()),
        (":scheme".into(), "http".into()),
        (":path".into(), "/demo.Echo/Say".into()),
        (":authority".into(), "localhost".into()),
        ("content-type".into(), "application/grpc".into()),
        ("te".into(), "trailers".into()),
        ("user-agent".into(), "test-client/1.0".into()),
        ("x-request-id".into(), format!("req-{i}")),
        ("x-secret".into(), "hunter2".into()),
    ]
}

fn as_refs(h: &Hdrs) -> Vec<(&str, &str)> {
    h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A gRPC conversation: `n` unary calls on one connection, both directions.
/// Returns the client's bytes and the server's bytes, each a list of writes
/// (one write per frame, as most implementations do), and the header lists sent.
fn conversation(n: usize, huffman: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Hdrs>) {
    let mut c = Vec::new();
    let mut s = Vec::new();
    let mut sent = Vec::new();
    let mut ce = Enc {
        huffman,
        ..Enc::default()
    };
    let mut se = Enc {
        huffman,
        ..Enc::default()
    };
    let mut pre = frame::PREFACE.to_vec();
    pre.extend(frame(
        frame::SETTINGS,
        0,
        0,
        &[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0],
    ));
    c.push(pre);
    s.push(frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0, 0x40, 0]));
    s.push(frame(frame::SETTINGS, frame::ACK, 0, &[]));
    c.push(frame(frame::SETTINGS, frame::ACK, 0, &[]));
    c.push(frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]));
    for i in 0..n {
        let sid = 1 + 2 * i as u32;
        let h = req(i);
        c.push(frame(
            frame::HEADERS,
            frame::END_HEADERS,
            sid,
            &ce.block(&as_refs(&h)),
        ));
        sent.push(h);
        // field 1: "hello i", field 2: i
        let mut pb = vec![0x0a, 7];
        pb.extend_from_slice(format!("hello {i}").as_bytes());
        pb.extend_from_slice(&[0x10, i as u8]);
        let msg = grpc_msg(&pb);
        // The message split over two DATA frames.
        c.push(frame(frame::DATA, 0, sid, &msg[..4]));
        c.push(frame(frame::DATA, frame::END_STREAM, sid, &msg[4..]));
        let rh: Hdrs = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/grpc".into()),
            ("x-served-by".into(), format!("s{}", i % 2)),
        ];
        s.push(frame(
            frame::HEADERS,
            frame::END_HEADERS,
            sid,
            &se.block(&as_refs(&rh)),
        ));
        sent.push(rh);
        s.push(frame(
            frame::DATA,
            0,
            sid,
            &grpc_msg(&[0x0a, 2, b'o', b'k']),
        ));
        let th: Hdrs = vec![
            ("grpc-status".into(), "0".into()),
            ("grpc-message".into(), "all%20good".into()),
        ];
        s.push(frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            sid,
            &se.block(&as_refs(&th)),
        ));
        sent.push(th);
    }
    s.push(frame(frame::PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]));
    c.push(frame(
        frame::GOAWAY,
        0,
        0,
        &[0, 0, 0, 0, 0, 0, 0, 0, b'b', b'y', b'e'],
    ));
    (c, s, sent)
}

fn decoder() -> Http2 {
    Http2::new(Http2Config::default())
}

/// Records as comparable JSON lines (errors included).
fn lines(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Fields { json, text } => {
                    format!("{}|{}|{text}", d.event.dir, Value::Object(json.clone()))
                }
                Body::Error { code, message } => {
                    format!("{}|ERROR {code:?} {message}", d.event.dir)
                }
                Body::Raw => "raw".into(),
                // Timing depends on how the bytes were split into events.
                Body::Exchange(x) => format!(
                    "{}|EXCHANGE {} {:?} {:?} {:?} status={:?} grpc={:?}/{:?} bytes={}/{} error={:?} {}[{}] -> {}[{}]",
                    d.event.dir,
                    x.protocol,
                    x.method,
                    x.path,
                    x.authority,
                    x.status,
                    x.grpc_status,
                    x.grpc_message,
                    x.request_bytes,
                    x.response_bytes,
                    x.error,
                    x.client.comm,
                    x.client.pid,
                    x.server.comm,
                    x.server.pid
                ),
                Body::Typed(_) => format!(
                    "{}|{}|{}",
                    d.event.dir,
                    Value::Object(d.body.json().unwrap_or_default()),
                    d.body.text(2).unwrap_or_default()
                ),
            },
            Record::Lost(l) => format!("lost {}", l.count),
        })
        .collect()
}

fn run(d: &mut Http2, writes: &[(Direction, Vec<u8>)]) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, (dir, w)) in writes.iter().enumerate() {
        d.decode(
            &event(i as u64, *dir, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    out
}

fn interleave(c: &[Vec<u8>], s: &[Vec<u8>]) -> Vec<(Direction, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..c.len().max(s.len()) {
        if let Some(x) = c.get(i) {
            v.push((Direction::Send, x.clone()));
        }
        if let Some(x) = s.get(i) {
            v.push((Direction::Recv, x.clone()));
        }
    }
    v
}

fn headers_of(recs: &[Record]) -> Vec<(Direction, Hdrs)> {
    let mut v = Vec::new();
    for r in recs {
        if let Record::Decoded(d) = r
            && let Some(json) = d.body.json()
            && let Some(h) = json["http2"].get("headers")
        {
            let list = h
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            v.push((d.event.dir, list));
        }
    }
    v
}

fn errors(recs: &[Record]) -> Vec<String> {
    lines(recs)
        .into_iter()
        .filter(|l| l.contains("|ERROR "))
        .collect()
}

#[test]
fn whole_conversation_decodes_exactly() {
    for huffman in [false, true] {
        let (c, s, sent) = conversation(3, huffman);
        let recs = run(&mut decoder(), &interleave(&c, &s));
        assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
        let got = headers_of(&recs);
        let want_client: Vec<&Hdrs> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|x| x.1)
            .collect();
        let got_client: Vec<&Hdrs> = got
            .iter()
            .filter(|(d, _)| *d == Direction::Send)
            .map(|x| &x.1)
            .collect();
        assert_eq!(got_client, want_client);
        let want_server: Vec<&Hdrs> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|x| x.1)
            .collect();
        let got_server: Vec<&Hdrs> = got
            .iter()
            .filter(|(d, _)| *d == Direction::Recv)
            .map(|x| &x.1)
            .collect();
        assert_eq!(got_server, want_server);
        let all = lines(&recs).join("\n");
        assert!(all.contains("\"type\":\"PREFACE\""));
        assert!(all.contains("[\"SETTINGS_MAX_CONCURRENT_STREAMS\",100]"));
        assert!(all.contains("\"method\":\"/demo.Echo/Say\""));
        assert!(all.contains("\"status\":0,\"status_name\":\"OK\",\"message\":\"all good\""));
        assert!(all.contains("1: \"hello 2\"\n    2: 2"), "{all}");
        assert!(all.contains("\"error_code\":\"NO_ERROR\",\"debug_data\":\"bye\""));
        assert!(all.contains("\"opaque_data\":\"0102030405060708\""));
    }
}

#[test]
fn split_at_every_byte_boundary_decodes_the_same() {
    let (c, s, _) = conversation(2, true);
    let whole_c: Vec<u8> = c.concat();
    let whole_s: Vec<u8> = s.concat();
    let reference = lines(&run(
        &mut decoder(),
        &[
            (Direction::Send, whole_c.clone()),
            (Direction::Recv, whole_s.clone()),
        ],
    ));
    // Strip the event-dependent part: only the record content matters here.
    assert!(
        reference.iter().all(|l| !l.contains("|ERROR ")),
        "{reference:?}"
    );
    for (dir, whole) in [(Direction::Send, &whole_c), (Direction::Recv, &whole_s)] {
        let other = if dir == Direction::Send {
            &whole_s
        } else {
            &whole_c
        };
        for cut in 0..=whole.len() {
            // The client's bytes go first, as in the reference, so that the
            // request headers are known when the response arrives.
            let mut writes = vec![(dir, whole[..cut].to_vec()), (dir, whole[cut..].to_vec())];
            if dir == Direction::Send {
                writes.push((Direction::Recv, other.clone()));
            } else {
                writes.insert(0, (Direction::Send, other.clone()));
            }
            let mut got = lines(&run(&mut decoder(), &writes));
            let mut want = reference.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "split at {cut} of {dir}");
        }
    }
    // And one byte per write.
    let mut writes: Vec<(Direction, Vec<u8>)> = whole_c
        .iter()
        .map(|b| (Direction::Send, vec![*b]))
        .collect();
    writes.extend(whole_s.iter().map(|b| (Direction::Recv, vec![*b])));
    let mut got = lines(&run(&mut decoder(), &writes));
    let mut want = reference;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn continuation_and_padding() {
    let mut e = Enc::default();
    let block = e.block(&[
        (":method", "GET"),
        (":path", "/a/long/path"),
        ("x-a", "1"),
        ("x-b", "2"),
    ]);
    let mut w = frame::PREFACE.to_vec();
    // HEADERS padded with priority, the block split over two CONTINUATIONs.
    let mut p = vec![3, 0x80, 0, 0, 0, 9];
    p.extend_from_slice(&block[..3]);
    p.extend_from_slice(&[0, 0, 0]);
    w.extend(frame(
        frame::HEADERS,
        frame::PADDED | frame::PRIORITY_FLAG,
        1,
        &p,
    ));
    w.extend(frame(frame::CONTINUATION, 0, 1, &block[3..8]));
    w.extend(frame(
        frame::CONTINUATION,
        frame::END_HEADERS,
        1,
        &block[8..],
    ));
    w.extend(frame(
        frame::DATA,
        frame::PADDED | frame::END_STREAM,
        1,
        &[2, b'h', b'i', 0, 0],
    ));
    w.extend(frame(0x42, 0x3, 1, b"whatever"));
    let recs = run(&mut decoder(), &[(Direction::Send, w)]);
    assert!(errors(&recs).is_empty(), "{:?}", lines(&recs));
    let l = lines(&recs);
    assert!(l[1].contains("\"type\":\"HEADERS\""), "{}", l[1]);
    assert!(l[1].contains("[\"x-b\",\"2\"]"));
    assert!(l[1].contains("\"priority\":{\"exclusive\":true,\"depends_on\":0,\"weight\":10}"));
    assert!(l[1].contains("\"pad_length\":3"));
    assert!(l[2].contains("\"type\":\"CONTINUATION\""));
    assert!(l[3].contains("\"type\":\"CONTINUATION\"") && l[3].contains("END_HEADERS"));
    assert!(l[4].contains("\"data_b64\":\"aGk=\""), "{}", l[4]);
    assert!(l[4].ends_with("\n  | hi"), "{}", l[4]);
    assert!(
        l[5].contains("\"type\":\"UNKNOWN\",\"type_code\":66"),
        "{}",
        l[5]
    );
}

/// Feeds a conversation from the frame where request `from` begins, as if the
/// capture began there: headers decode, references to entries inserted before
/// show as placeholders, nothing is wrong.
#[test]
fn attach_mid_stream_shows_placeholders_and_nothing_wrong() {
    let (c, s, sent) = conversation(4, true);
    // Client writes: [preface+settings, ack, window_update, then per call 3 writes].
    // Server writes: [settings, ack, then per call 3 writes].
    for skip_calls in 1..4 {
        for misalign in [0usize, 5] {
            let c_from = 3 + 3 * skip_calls;
            let s_from = 2 + 3 * skip_calls;
            let mut cw: Vec<u8> = c[c_from..].concat();
            let mut sw: Vec<u8> = s[s_from..].concat();
            // Joining mid-frame: a few bytes of the previous frame come first.
            if misalign > 0 {
                let prev_c = &c[c_from - 1];
                let prev_s = &s[s_from - 1];
                cw.splice(0..0, prev_c[prev_c.len() - misalign..].iter().copied());
                sw.splice(0..0, prev_s[prev_s.len() - misalign..].iter().copied());
            }
            let recs = run(
                &mut decoder(),
                &[(Direction::Send, cw), (Direction::Recv, sw)],
            );
            let got = headers_of(&recs);
            let want: Vec<&Hdrs> = sent[3 * skip_calls..].iter().collect();
            let mut gc = got
                .iter()
                .filter(|(d, _)| *d == Direction::Send)
                .map(|x| &x.1);
            let mut gs = got
                .iter()
                .filter(|(d, _)| *d == Direction::Recv)
                .map(|x| &x.1);
            let mut placeholders = 0;
            for (i, w) in want.iter().enumerate() {
                let g = if i % 3 == 0 { gc.next() } else { gs.next() };
                let g = g.unwrap_or_else(|| panic!("missing headers {i}: {:?}", lines(&recs)));
                assert_eq!(g.len(), w.len());
                for (gp, wp) in g.iter().zip(w.iter()) {
                    if gp.0.starts_with("<unknown index ") {
                        placeholders += 1;
                    } else {
                        assert_eq!(gp, wp, "wrong header after attaching");
                    }
                }
            }
            assert!(
                placeholders > 0,
                "entries from before the attach must be placeholders"
            );
            // The responses' content-type is a placeholder: their gRPC messages
            // are recognised from the DATA itself.
            let all = lines(&recs).join("\n");
            assert!(all.contains("\"inferred\":true"), "{all}");
            assert!(all.contains("1: \"ok\""), "{all}");
            // Later calls re-reference entries inserted after the attach: those
            // are exact. x-request-id values are new per call, always literal.
            let errs = errors(&recs);
            if misalign == 0 {
                assert!(errs.is_empty(), "{errs:?}");
            } else {
                assert!(errs.iter().all(|e| e.contains("skipped")), "{errs:?}");
                assert_eq!(errs.len(), 2);
            }
        }
    }
}

#[test]
fn lost_events_turn_old_entries_into_placeholders() {
    let (c, s, _) = conversation(3, false);
    let mut d = decoder();
    let mut out = Vec::new();
    let mut seq = 0;
    for w in &c[..6] {
        d.decode(
            &event(seq, Direction::Send, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
        seq += 1;
    }
    for w in &s[..5] {
        d.decode(
            &event(seq, Direction::Recv, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
        seq += 1;
    }
    d.lost(3, &mut spf_pipeline::Out::collect(&mut out));
    out.clear();
    // Skip call 1; decode call 2.
    for w in &c[9..] {
        d.decode(
            &event(seq, Direction::Send, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
        seq += 1;
    }
    let h = headers_of(&out);
    assert_eq!(h.len(), 1);
    let names: Vec<&str> = h[0].1.iter().map(|p| p.0.as_str()).collect();
    // Static-table and literal fields are exact; the dynamic ones are unknown.
    assert_eq!(names[0], ":method");
    assert!(
        names.iter().any(|n| n.starts_with("<unknown index")),
        "{names:?}"
    );
    assert!(h[0].1.contains(&("x-request-id".into(), "req-2".into())));
    assert!(errors(&out).is_empty(), "{:?}", lines(&out));
}

#[test]
fn truncated_event_reports_and_resyncs() {
    let (c, _, _) = conversation(2, false);
    let mut d = decoder();
    let mut out = Vec::new();
    d.decode(
        &event(0, Direction::Send, &c[0]),
        &mut spf_pipeline::Out::collect(&mut out),
    );
    // A write of a HEADERS frame of which only 10 bytes were captured.
    let mut e = (*event(1, Direction::Send, &c[3][..10])).clone();
    e.len = c[3].len() as u64;
    e.truncated = true;
    d.decode(&Arc::new(e), &mut spf_pipeline::Out::collect(&mut out));
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("cut short"), "{errs:?}");
    out.clear();
    for (i, w) in c[4..].iter().enumerate() {
        d.decode(
            &event(2 + i as u64, Direction::Send, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    assert!(errors(&out).is_empty(), "{:?}", lines(&out));
    // The second call's HEADERS decode, with placeholders for pre-gap entries.
    assert_eq!(headers_of(&out).len(), 1);
}

#[test]
fn malformed_frames_become_error_records() {
    let mut w = frame::PREFACE.to_vec();
    w.extend(frame(frame::PING, 0, 0, &[0; 7]));
    w.extend(frame(frame::SETTINGS, 0, 3, &[]));
    w.extend(frame(frame::DATA, frame::PADDED, 1, &[9, 1]));
    w.extend(frame(
        frame::HEADERS,
        frame::END_HEADERS,
        1,
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ));
    w.extend(frame(frame::HEADERS, frame::END_HEADERS, 3, &[0x82]));
    w.extend(frame(frame::HEADERS, 0, 5, &[0x82]));
    w.extend(frame(frame::DATA, 0, 5, b"x"));
    w.extend(frame(frame::CONTINUATION, frame::END_HEADERS, 5, &[0x82]));
    let recs = run(&mut decoder(), &[(Direction::Send, w)]);
    let errs = errors(&recs);
    assert!(errs[0].contains("FRAME_SIZE_ERROR"), "{errs:?}");
    assert!(errs[1].contains("PROTOCOL_ERROR"), "{errs:?}");
    assert!(errs[2].contains("PROTOCOL_ERROR"), "{errs:?}");
    assert!(errs[3].contains("COMPRESSION_ERROR"), "{errs:?}");
    assert!(errs[4].contains("interrupted"), "{errs:?}");
    assert!(errs[5].contains("without a header block"), "{errs:?}");
    // The valid HEADERS after the bad block still decodes.
    assert!(
        headers_of(&recs)
            .iter()
            .any(|(_, h)| h == &vec![(":method".to_string(), "GET".to_string())])
    );
}

#[test]
fn oversized_frame_is_a_frame_size_error_and_decoding_resumes() {
    let mut w = frame::PREFACE.to_vec();
    let mut big = frame(frame::DATA, 0, 1, &[0; 20]);
    big[0] = 0x01; // length 65556 > 16384 (no SETTINGS raised it)
    w.extend(&big[..9]);
    w.extend(frame(frame::PING, 0, 0, &[1; 8]));
    w.extend(frame(frame::PING, frame::ACK, 0, &[2; 8]));
    w.extend(frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    let recs = run(&mut decoder(), &[(Direction::Send, w)]);
    let l = lines(&recs);
    assert!(l[1].contains("FRAME_SIZE_ERROR"), "{l:?}");
    assert!(
        l.iter().any(|x| x.contains("\"type\":\"WINDOW_UPDATE\"")),
        "{l:?}"
    );
}

#[test]
fn non_http2_bytes_are_reported_not_skipped_silently() {
    let recs = run(
        &mut decoder(),
        &[(
            Direction::Send,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        )],
    );
    let errs = errors(&recs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("no HTTP/2 frame boundary"), "{errs:?}");
}

/// Pseudo-random and mutated input: never a panic; garbage gives error records.
#[test]
fn robustness_against_random_and_mutated_input() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (c, s, _) = conversation(3, true);
    let base_c: Vec<u8> = c.concat();
    let base_s: Vec<u8> = s.concat();
    let mut error_runs = 0;
    for round in 0..3000 {
        let mut cw = base_c.clone();
        let mut sw = base_s.clone();
        match round % 4 {
            0 => {
                for _ in 0..1 + next() % 8 {
                    let i = (next() as usize) % cw.len();
                    cw[i] = next() as u8;
                    let j = (next() as usize) % sw.len();
                    sw[j] ^= 1 << (next() % 8);
                }
            }
            1 => {
                let i = (next() as usize) % cw.len();
                let n = (next() as usize % 64).min(cw.len() - i);
                cw.drain(i..i + n);
                let at = (next() as usize) % sw.len();
                let junk: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
                sw.splice(at..at, junk);
            }
            2 => {
                cw = (0..next() % 4000).map(|_| next() as u8).collect();
                sw = (0..next() % 4000).map(|_| (next() % 12) as u8).collect();
            }
            _ => {
                // Valid frame headers with random payloads, starting mid-stream.
                cw.clear();
                for _ in 0..next() % 30 {
                    let kind = (next() % 11) as u8;
                    let payload: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
                    cw.extend(frame(kind, next() as u8, (next() % 4) as u32, &payload));
                }
                sw = cw.iter().rev().copied().collect();
            }
        }
        // Every other round with tight limits, so that their paths run on
        // garbage too; every round's memory must all come back.
        let limits = if round % 2 == 1 {
            spf_pipeline::Limits {
                header_list_size: 200,
                header_table_size: 300,
                continuation_frames: 1,
                streams_per_connection: 2,
                message_size: 16,
                protobuf_fields: 4,
                protobuf_depth: 2,
                connection_buffer: 600,
                connections: 1,
                memory: 4096,
                ..spf_pipeline::Limits::default()
            }
        } else {
            spf_pipeline::Limits::default()
        };
        let ctx = spf_pipeline::BuildContext::new(limits);
        let mut d = Http2::with_context(Http2Config::default(), &ctx);
        let mut out = Vec::new();
        let mut seq = 0;
        let (mut pc, mut ps) = (0, 0);
        while pc < cw.len() || ps < sw.len() {
            let n = 1 + next() as usize % 700;
            let e = (pc + n).min(cw.len());
            d.decode(
                &event(seq, Direction::Send, &cw[pc..e]),
                &mut spf_pipeline::Out::collect(&mut out),
            );
            pc = e;
            let e = (ps + n).min(sw.len());
            d.decode(
                &event(seq + 1, Direction::Recv, &sw[ps..e]),
                &mut spf_pipeline::Out::collect(&mut out),
            );
            ps = e;
            seq += 2;
            if next() % 50 == 0 {
                d.lost(1, &mut spf_pipeline::Out::collect(&mut out));
            }
        }
        d.finish(&mut spf_pipeline::Out::collect(&mut out));
        drop(d);
        assert_eq!(ctx.budget.used(), 0, "round {round}: memory not given back");
        if out.iter().any(Record::is_error) {
            error_runs += 1;
        }
        // Every record serialises.
        for r in &out {
            let mut line = Vec::new();
            spf_pipeline::ndjson::encode(r, &mut line);
            serde_json::from_slice::<Value>(&line).unwrap();
            if let Record::Decoded(dd) = r {
                dd.body.text(2);
            }
        }
    }
    assert!(
        error_runs > 1500,
        "garbage must give error records, got {error_runs} of 3000"
    );
}

#[test]
fn config_is_strict() {
    use spf_pipeline::config::{Registry, parse};
    let mut reg = Registry::new();
    crate::register(&mut reg);
    let ok = "[source]\ntype = \"file\"\npath = \"x.ndjson\"\n[decoder]\ntype = \"http2\"\ngrpc = false\ndata = \"none\"\nexchanges = false\n";
    if let Err(e) = parse(&reg, "t", ok) {
        // The file source may require more keys; only the decoder matters here.
        assert!(!e.to_string().contains("decoder"), "{e}");
    }
    let bad = "[source]\ntype = \"file\"\npath = \"x\"\n[decoder]\ntype = \"http2\"\ndata = \"hex\"\nmax_frame = 3\n";
    let e = parse(&reg, "t", bad).unwrap_err().to_string();
    assert!(e.contains("decoder"), "{e}");
    let small = "[source]\ntype = \"file\"\npath = \"x\"\n[decoder]\ntype = \"http2\"\nmax_frame_size = 100\n";
    let e = parse(&reg, "t", small).unwrap_err().to_string();
    assert!(e.contains("decoder.max_frame_size"), "{e}");
}

/// Both ends of one connection captured: every byte appears as one end's send
/// and the other's recv. Each process's view decodes on its own, and the
/// stream facts (method, gRPC) are shared across them.
#[test]
fn both_ends_captured() {
    let (c, s, sent) = conversation(3, true);
    let ev = |seq: u64, pid: u32, dir: Direction, data: &[u8]| {
        let mut e = (*event(seq, dir, data)).clone();
        e.pid = pid;
        Arc::new(e)
    };
    for only_sends in [false, true] {
        let mut d = decoder();
        let mut out = Vec::new();
        let mut seq = 0;
        for i in 0..c.len().max(s.len()) {
            if let Some(w) = c.get(i) {
                d.decode(
                    &ev(seq, 100, Direction::Send, w),
                    &mut spf_pipeline::Out::collect(&mut out),
                );
                if !only_sends {
                    d.decode(
                        &ev(seq + 1, 200, Direction::Recv, w),
                        &mut spf_pipeline::Out::collect(&mut out),
                    );
                }
            }
            if let Some(w) = s.get(i) {
                d.decode(
                    &ev(seq + 2, 200, Direction::Send, w),
                    &mut spf_pipeline::Out::collect(&mut out),
                );
                if !only_sends {
                    d.decode(
                        &ev(seq + 3, 100, Direction::Recv, w),
                        &mut spf_pipeline::Out::collect(&mut out),
                    );
                }
            }
            seq += 4;
        }
        d.finish(&mut spf_pipeline::Out::collect(&mut out));
        assert!(errors(&out).is_empty(), "{:?}", errors(&out));
        let got: Vec<Hdrs> = headers_of(&out).into_iter().map(|x| x.1).collect();
        let copies = if only_sends { 1 } else { 2 };
        assert_eq!(got.len(), sent.len() * copies);
        let mut got = got;
        let mut want: Vec<Hdrs> = (0..copies).flat_map(|_| sent.iter().cloned()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // The server's response messages carry the method learnt from the
        // request, whichever end's view saw it.
        let l = lines(&out).join("\n");
        assert_eq!(
            l.matches(
                "\"method\":\"/demo.Echo/Say\",\"messages\":[{\"compressed\":false,\"length\":4"
            )
            .count(),
            3 * copies,
            "{l}"
        );
    }
}

/// Without close notices, idle connections are dropped past a limit; one that
/// speaks again decodes as joined midway, with placeholders, never stale state.
#[test]
fn idle_connections_are_dropped_and_rejoin_safely() {
    let (c, _, _) = conversation(3, false);
    let mut d = decoder();
    let mut out = Vec::new();
    let ev = |seq: u64, conn: u64, data: &[u8]| {
        let mut e = (*event(seq, Direction::Send, data)).clone();
        e.conn = conn;
        Arc::new(e)
    };
    // Connection 1: preface and the first call.
    for (i, w) in c[..6].iter().enumerate() {
        d.decode(
            &ev(i as u64, 1, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    // Many other connections, each one preface.
    for k in 0..spf_pipeline::Limits::default().connections as u64 + 10 {
        d.decode(
            &ev(100 + k, 1000 + k, frame::PREFACE),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    assert!(d.view_count() <= spf_pipeline::Limits::default().connections);
    out.clear();
    // Connection 1 again: the second call's HEADERS refer to entries from the
    // first call, now forgotten.
    d.decode(
        &ev(1_000_000, 1, &c[6]),
        &mut spf_pipeline::Out::collect(&mut out),
    );
    let h = headers_of(&out);
    assert_eq!(h.len(), 1, "{:?}", lines(&out));
    assert!(h[0].1.iter().any(|(n, _)| n.starts_with("<unknown index")));
    assert!(h[0].1.contains(&("x-request-id".into(), "req-1".into())));
}

/// A size update above what SETTINGS announced (or with no SETTINGS seen) is
/// applied, and flagged on the record, not a COMPRESSION_ERROR that loses the
/// rest of the connection: the peers agreed on it where spf could not see.
#[test]
fn table_size_update_beyond_settings_is_applied_and_flagged() {
    // The server's encoder uses a 65536-byte table: 30 entries, 10 KB.
    let big: Vec<(String, String)> = (0..30)
        .map(|i| (format!("x-big-{i}"), "v".repeat(300)))
        .collect();
    for announced in [Some(65536u32), None] {
        let mut client = frame::PREFACE.to_vec();
        let mut settings = Vec::new();
        if let Some(v) = announced {
            settings.extend_from_slice(&[0, 1]);
            settings.extend_from_slice(&v.to_be_bytes());
        }
        client.extend(frame(frame::SETTINGS, 0, 0, &settings));
        let mut first = Vec::new();
        henc::size_update(&mut first, 65536);
        henc::indexed(&mut first, 8);
        for (n, v) in &big {
            henc::literal_indexed(&mut first, n.as_bytes(), v.as_bytes(), true);
        }
        // The second block refers to every entry, the oldest past 4096 bytes.
        let mut second = Vec::new();
        henc::indexed(&mut second, 8);
        for i in 0..30 {
            henc::indexed(&mut second, 62 + 29 - i);
        }
        let mut server = frame(frame::SETTINGS, 0, 0, &[]);
        server.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &first));
        server.extend(frame(frame::HEADERS, frame::END_HEADERS, 3, &second));
        let recs = run(
            &mut decoder(),
            &[(Direction::Send, client), (Direction::Recv, server)],
        );
        assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
        let mut want = vec![(":status".to_string(), "200".to_string())];
        want.extend(big.iter().cloned());
        let got = headers_of(&recs);
        assert_eq!(got[0].1, want);
        assert_eq!(got[1].1, want, "every entry exact");
        let flagged: Vec<String> = lines(&recs)
            .into_iter()
            .filter(|l| l.contains("\"table_size_update_unannounced\":65536"))
            .collect();
        assert_eq!(
            flagged.len(),
            usize::from(announced.is_none()),
            "{flagged:?}"
        );
    }
}

#[test]
fn push_promise_rst_stream_priority_and_goaway() {
    let mut e = Enc::default();
    let mut server = frame(frame::SETTINGS, 0, 0, &[]);
    let mut pp = vec![0, 0, 0, 2];
    pp.extend(e.block(&[
        (":method", "GET"),
        (":path", "/style.css"),
        (":scheme", "http"),
    ]));
    server.extend(frame(frame::PUSH_PROMISE, frame::END_HEADERS, 1, &pp));
    server.extend(frame(frame::RST_STREAM, 0, 2, &[0, 0, 0, 8]));
    server.extend(frame(frame::PRIORITY, 0, 3, &[0, 0, 0, 1, 255]));
    server.extend(frame(
        frame::GOAWAY,
        0,
        0,
        &[0, 0, 0, 1, 0, 0, 0, 0xb, b'c', b'a', b'l', b'm'],
    ));
    let recs = run(&mut decoder(), &[(Direction::Recv, server)]);
    assert!(errors(&recs).is_empty(), "{:?}", lines(&recs));
    let l = lines(&recs);
    assert!(l[1].contains("\"type\":\"PUSH_PROMISE\""), "{}", l[1]);
    assert!(l[1].contains("\"promised_stream_id\":2"));
    assert!(l[1].contains("[\":path\",\"/style.css\"]"));
    assert!(l[2].contains("\"error_code\":\"CANCEL\""), "{}", l[2]);
    assert!(
        l[3].contains("\"priority\":{\"exclusive\":false,\"depends_on\":1,\"weight\":256}"),
        "{}",
        l[3]
    );
    assert!(
        l[4].contains("\"error_code\":\"ENHANCE_YOUR_CALM\",\"debug_data\":\"calm\""),
        "{}",
        l[4]
    );
    assert!(l[4].contains("\"last_stream_id\":1"));
}

/// One process at both ends of a connection: its sends of both ends land in
/// one direction. The first response block there is recognised and nothing
/// from it or after it is decoded with the wrong table.
#[test]
fn both_ends_in_one_process_are_reported_not_misdecoded() {
    let (c, s, sent) = conversation(2, true);
    let mut d = decoder();
    let mut out = Vec::new();
    let mut seq = 0;
    for i in 0..c.len().max(s.len()) {
        for w in [c.get(i), s.get(i)].into_iter().flatten() {
            // Same pid, both ends' sends.
            d.decode(
                &event(seq, Direction::Send, w),
                &mut spf_pipeline::Out::collect(&mut out),
            );
            seq += 1;
        }
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("requests and responses in one direction"),
        "{errs:?}"
    );
    // Every header list that did come out is one that was sent.
    let got = headers_of(&out);
    assert!(!got.is_empty());
    for (_, h) in &got {
        assert!(sent.contains(h), "wrong header list {h:?}");
    }
}

/// Joining at every byte offset of a conversation: whatever is decoded is
/// exact or a placeholder, position by position; never a wrong header.
#[test]
fn attach_at_every_offset_never_shows_a_wrong_header() {
    let (c, s, sent) = conversation(4, true);
    let whole_c: Vec<u8> = c.concat();
    let whole_s: Vec<u8> = s.concat();
    let stream_of = |i: usize| 1 + 2 * (i / 3) as u64;
    for (dir, whole) in [(Direction::Send, &whole_c), (Direction::Recv, &whole_s)] {
        let mut decoded = 0;
        for k in 0..whole.len() {
            let recs = run(&mut decoder(), &[(dir, whole[k..].to_vec())]);
            for r in &recs {
                let Record::Decoded(d) = r else { continue };
                let Some(json) = d.body.json() else {
                    continue;
                };
                let h = &json["http2"];
                let Some(list) = h.get("headers") else {
                    continue;
                };
                let sid = h["stream_id"].as_u64().unwrap();
                let end_stream = h["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == "END_STREAM");
                // Which sent list this is: requests from the client; responses
                // (no END_STREAM) and trailers (END_STREAM) from the server.
                let want = sent
                    .iter()
                    .enumerate()
                    .find(|(i, _)| {
                        stream_of(*i) == sid
                            && match (dir, i % 3) {
                                (Direction::Send, 0) => true,
                                (Direction::Recv, 1) => !end_stream,
                                (Direction::Recv, 2) => end_stream,
                                _ => false,
                            }
                    })
                    .map(|(_, w)| w)
                    .unwrap_or_else(|| panic!("offset {k}: headers on unexpected stream {sid}"));
                let got: Vec<(&str, &str)> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
                    .collect();
                assert_eq!(got.len(), want.len(), "offset {k}: {got:?}");
                for (g, w) in got.iter().zip(want) {
                    if g.0.starts_with("<unknown index ") {
                        assert!(
                            g.1 == "<unknown>" || g.1 == w.1,
                            "offset {k}: {g:?} vs {w:?}"
                        );
                    } else {
                        assert_eq!((g.0, g.1), (w.0.as_str(), w.1.as_str()), "offset {k}");
                    }
                }
                decoded += 1;
            }
        }
        // Not vacuous: from most offsets on, the later header blocks decode.
        let blocks = if dir == Direction::Send { 4 } else { 8 };
        assert!(
            decoded > whole.len() * blocks / 4,
            "{dir}: only {decoded} blocks decoded"
        );
    }
}

#[test]
fn config_turns_payloads_and_grpc_off() {
    let (c, _, _) = conversation(1, false);
    let cfg = Http2Config {
        grpc: false,
        data: DataMode::None,
        ..Http2Config::default()
    };
    let recs = run(&mut Http2::new(cfg), &[(Direction::Send, c.concat())]);
    let all = lines(&recs).join("\n");
    assert!(all.contains("\"type\":\"DATA\""));
    assert!(!all.contains("data_b64"), "{all}");
    assert!(!all.contains("\"grpc\""), "{all}");
    assert!(errors(&recs).is_empty());
}

/// An HTTP/1.1 connection upgraded to h2c: the request text is reported as
/// skipped, then the preface starts a session with fresh tables.
#[test]
fn h2c_upgrade_then_preface() {
    let (c, _, sent) = conversation(2, true);
    let mut w = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec();
    w.extend(c.concat());
    for cut in [0, 20, w.len() - c.concat().len() + 5] {
        let recs = run(
            &mut decoder(),
            &[
                (Direction::Send, w[..cut].to_vec()),
                (Direction::Send, w[cut..].to_vec()),
            ],
        );
        let errs = errors(&recs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("before a connection preface"), "{errs:?}");
        let l = lines(&recs);
        assert!(l.iter().any(|x| x.contains("\"type\":\"PREFACE\"")));
        let got: Vec<Hdrs> = headers_of(&recs).into_iter().map(|x| x.1).collect();
        assert_eq!(got, vec![sent[0].clone(), sent[3].clone()], "cut {cut}");
    }
}

mod conn_view;
mod exchanges;
mod limits;
