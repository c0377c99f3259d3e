//! The connection view: one state per connection with both directions, each
//! event seen from its sender; SETTINGS of one side bound the other side.

use spf_pipeline::Role;

use super::*;

/// An event of the connection view: side 0 from the client (pid 10,
/// `client`), side 1 from the server (pid 20, `server`). Some were captured
/// by the receiver's syscall (`via = recv`), as the connection stage hands
/// on what no send held.
pub(super) fn cev(seq: u64, side: usize, data: &[u8]) -> Arc<Event> {
    let (pid, comm, peer, peer_comm, socket, peer_socket, role) = if side == 0 {
        (10, "client", 20, "server", 5, 6, Role::Client)
    } else {
        (20, "server", 10, "client", 6, 5, Role::Server)
    };
    Arc::new(Event {
        seq,
        ts_ns: 1_000 + seq * 10,
        time_ns: 1_700_000_000_000_000_000 + seq * 10,
        pid,
        tid: pid,
        comm: Arc::from(comm),
        peer_pid: peer,
        peer_comm: Arc::from(peer_comm),
        path: Arc::from("/tmp/x.sock"),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn: 1,
        socket,
        peer_socket,
        role,
        via: Some(if seq % 3 == 0 {
            Direction::Recv
        } else {
            Direction::Send
        }),
        len: data.len() as u64,
        data: bytes::Bytes::copy_from_slice(data),
        ..Event::default()
    })
}

/// Decodes connection-view writes `(side, bytes)` in order, then ends the input.
pub(super) fn run_cv(d: &mut Http2, writes: &[(usize, Vec<u8>)]) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, (side, w)) in writes.iter().enumerate() {
        d.decode(
            &cev(i as u64, *side, w),
            &mut spf_pipeline::Out::collect(&mut out),
        );
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    out
}

/// The writes of [`conversation`] in the order real peers make them: the
/// client's and the server's prefaces, then each call's request before its
/// response. Side 0 is the client, 1 the server.
pub(super) fn sides(c: &[Vec<u8>], s: &[Vec<u8>]) -> Vec<(usize, Vec<u8>)> {
    let calls = (c.len() - 4) / 3;
    let mut v = Vec::new();
    v.extend(c[..3].iter().map(|w| (0, w.clone())));
    v.extend(s[..2].iter().map(|w| (1, w.clone())));
    for i in 0..calls {
        v.extend(c[3 + 3 * i..6 + 3 * i].iter().map(|w| (0, w.clone())));
        v.extend(s[2 + 3 * i..5 + 3 * i].iter().map(|w| (1, w.clone())));
    }
    v.extend(s[2 + 3 * calls..].iter().map(|w| (1, w.clone())));
    v.extend(c[3 + 3 * calls..].iter().map(|w| (0, w.clone())));
    v
}

/// Header lists by side (0 client, 1 server), from the records' `role`.
fn headers_by_side(recs: &[Record]) -> Vec<(usize, Hdrs)> {
    headers_of(recs)
        .into_iter()
        .zip(recs.iter().filter_map(|r| {
            match r {
                Record::Decoded(d)
                    if d.body
                        .json()
                        .and_then(|j| j["http2"].get("headers").cloned())
                        .is_some() =>
                {
                    Some(usize::from(d.event.role == Role::Server))
                }
                _ => None,
            }
        }))
        .map(|((_, h), side)| (side, h))
        .collect()
}

pub(super) fn exchanges(recs: &[Record]) -> Vec<spf_pipeline::Exchange> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Exchange(x) => Some((**x).clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn one_state_holds_both_directions() {
    let (c, s, sent) = conversation(3, true);
    let mut d = decoder();
    let recs = run_cv(&mut d, &sides(&c, &s));
    assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
    let got = headers_by_side(&recs);
    let want: Vec<(usize, Hdrs)> = sent
        .iter()
        .enumerate()
        .map(|(i, h)| (usize::from(i % 3 != 0), h.clone()))
        .collect();
    assert_eq!(got, want);
    // Every exchange pairs the client's request with the server's response.
    let x = exchanges(&recs);
    assert_eq!(x.len(), 3);
    for e in &x {
        assert_eq!(&*e.protocol, "grpc");
        assert_eq!(e.method.as_deref(), Some("POST"));
        assert_eq!(e.path.as_deref(), Some("/demo.Echo/Say"));
        assert_eq!(e.authority.as_deref(), Some("localhost"));
        assert_eq!((e.status, e.grpc_status), (Some(200), Some(0)));
        assert_eq!(e.grpc_message.as_deref(), Some("all good"));
        assert_eq!((e.client.pid, &*e.client.comm), (10, "client"));
        assert_eq!((e.server.pid, &*e.server.comm), (20, "server"));
        assert!(e.error.is_none());
        assert!(e.latency_ns.unwrap() > 0);
    }
}

/// The exchange's start is the request HEADERS' event and its latency runs
/// to the event of the response's last frame; bytes are the stream's frame
/// payloads per direction.
#[test]
fn exchange_times_and_bytes_come_from_the_frames() {
    let (c, s, _) = conversation(1, false);
    let writes = sides(&c, &s);
    let recs = run_cv(&mut decoder(), &writes);
    let x = exchanges(&recs);
    assert_eq!(x.len(), 1);
    // Frames of stream 1 per write: (write index, side, header).
    let mut frames = Vec::new();
    for (i, (side, w)) in writes.iter().enumerate() {
        let mut p = if w.starts_with(frame::PREFACE) {
            frame::PREFACE.len()
        } else {
            0
        };
        while p + 9 <= w.len() {
            let h = frame::Header::parse(&w[p..]).unwrap();
            if h.stream_id == 1 {
                frames.push((i as u64, *side, h));
            }
            p += 9 + h.length as usize;
        }
    }
    let ts = |i: u64| 1_000 + i * 10;
    let first_request = frames.iter().find(|f| f.1 == 0).unwrap().0;
    let last_response = frames.iter().rev().find(|f| f.1 == 1).unwrap().0;
    assert_eq!(x[0].started_ns, ts(first_request));
    assert_eq!(x[0].latency_ns, Some(ts(last_response) - ts(first_request)));
    let bytes = |side: usize| -> u64 {
        frames
            .iter()
            .filter(|f| f.1 == side)
            .map(|f| u64::from(f.2.length))
            .sum()
    };
    assert_eq!(x[0].request_bytes, bytes(0));
    assert_eq!(x[0].response_bytes, bytes(1));
    assert!(x[0].request_bytes > 0 && x[0].response_bytes > 0);
}

/// SETTINGS_HEADER_TABLE_SIZE sent by the client bounds the table the
/// server's encoder uses: with both directions in one state, a 64 KiB table
/// announced by one side and used by the other decodes exactly and is not
/// flagged. SETTINGS_MAX_FRAME_SIZE likewise.
#[test]
fn settings_of_one_side_bound_the_other() {
    let big: Vec<(String, String)> = (0..40)
        .map(|i| (format!("x-entry-{i}"), format!("{i:0>400}")))
        .collect();
    let mut first = Vec::new();
    henc::size_update(&mut first, 65536);
    henc::indexed(&mut first, 8);
    for (n, v) in &big {
        henc::literal_indexed(&mut first, n.as_bytes(), v.as_bytes(), false);
    }
    let mut second = Vec::new();
    henc::indexed(&mut second, 8);
    for i in 0..40 {
        henc::indexed(&mut second, 62 + 39 - i);
    }
    let mut want = vec![(":status".to_string(), "200".to_string())];
    want.extend(big.iter().cloned());
    let request = {
        let mut b = Vec::new();
        henc::indexed(&mut b, 2);
        henc::indexed(&mut b, 4);
        b
    };
    for announce in [true, false] {
        let mut client = frame::PREFACE.to_vec();
        let settings: &[u8] = if announce {
            // HEADER_TABLE_SIZE 65536, MAX_FRAME_SIZE 32768.
            &[0, 1, 0, 1, 0, 0, 0, 5, 0, 0, 0x80, 0]
        } else {
            &[]
        };
        client.extend(frame(frame::SETTINGS, 0, 0, settings));
        client.extend(frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &request,
        ));
        let mut server = frame(frame::SETTINGS, 0, 0, &[]);
        // 17 KB of headers in one frame: more than 16384 unless announced.
        server.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &first));
        server.extend(frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &second,
        ));
        let recs = run_cv(&mut decoder(), &[(0, client), (1, server)]);
        if announce {
            assert!(errors(&recs).is_empty(), "{:?}", errors(&recs));
            let got = headers_by_side(&recs);
            assert_eq!(got[1], (1, want.clone()));
            assert_eq!(got[2], (1, want.clone()), "every entry exact");
            assert!(
                !lines(&recs)
                    .join("\n")
                    .contains("table_size_update_unannounced"),
                "announced by the peer"
            );
        } else {
            let errs = errors(&recs);
            assert!(
                errs.iter().any(|e| e.contains("FRAME_SIZE_ERROR")),
                "{errs:?}"
            );
        }
    }
}

/// Roles unknown (a socketpair): the lower socket is side 0; decoding works
/// the same, with the exchange's client being whoever sent the request.
#[test]
fn roles_unknown_still_pair_requests_and_responses() {
    let (c, s, sent) = conversation(2, true);
    let mut d = decoder();
    let mut out = Vec::new();
    for (i, (side, w)) in sides(&c, &s).into_iter().enumerate() {
        let mut e = (*cev(i as u64, side, &w)).clone();
        e.role = Role::Unknown;
        // The server holds the lower socket: it is side 0 now.
        (e.socket, e.peer_socket) = if side == 0 { (9, 3) } else { (3, 9) };
        d.decode(&Arc::new(e), &mut spf_pipeline::Out::collect(&mut out));
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let got: Vec<Hdrs> = headers_of(&out).into_iter().map(|x| x.1).collect();
    assert_eq!(got, sent);
    let x = exchanges(&out);
    assert_eq!(x.len(), 2);
    assert!(x.iter().all(|e| e.client.pid == 10 && e.server.pid == 20));
}
