//! `auto` on a mix of connections: each goes to the decoder its bytes call
//! for, including connections joined midway, and nothing is lost on the way.

use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::config::{BuildContext, Registry};
use spf_pipeline::{Body, Decoder, Direction, Event, Limits, Out, Record, Role, SockKind};

use super::{AutoConfig, MAX_EVENTS, MAX_HELD, MAX_WAIT, WINDOW};

/// A stand-in for a plugin decoder that implements `detect`: claims
/// connections that open with a RESP array (Redis).
struct RespLike {
    name: Arc<str>,
}

impl Decoder for RespLike {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        let mut json = serde_json::Map::new();
        json.insert("resp".into(), event.data.len().into());
        out.push(Record::fields(
            Arc::clone(event),
            Arc::clone(&self.name),
            json,
            String::new(),
        ));
    }

    fn detect(&mut self, data: &[u8], _event: &Event) -> u8 {
        match data {
            [b'*', d, ..] if d.is_ascii_digit() => 80,
            [b'+' | b'-' | b':' | b'$', ..] => 40,
            _ => 0,
        }
    }
}

fn event(seq: u64, conn: u64, side: usize, data: &[u8]) -> Arc<Event> {
    Arc::new(Event {
        seq,
        ts_ns: seq,
        time_ns: seq,
        pid: 10 + side as u32,
        comm: if side == 0 { "client" } else { "server" }.into(),
        peer_pid: 11 - side as u32,
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn,
        socket: 2 * conn + side as u64,
        peer_socket: 2 * conn + 1 - side as u64,
        role: if side == 0 {
            Role::Client
        } else {
            Role::Server
        },
        len: data.len() as u64,
        data: Bytes::copy_from_slice(data),
        via: Some(Direction::Send),
        ..Event::default()
    })
}

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(sid.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn random(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as u8
        })
        .collect()
}

/// What one connection's ends wrote: (side, bytes) in order.
type Writes = Vec<(usize, Vec<u8>)>;

/// Conversations by connection.
fn conversations() -> Vec<(u64, Writes)> {
    let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let mut h2_client = super::h2::PREFACE.to_vec();
    h2_client.extend(&settings);
    let h2_mid = [
        frame(0, 0, 5, b"middle of a body"),
        frame(1, 4, 7, &[0x82, 0x86, 0x84]),
        frame(0, 1, 7, b"{}"),
        frame(8, 0, 0, &[0, 0, 1, 0]),
    ]
    .concat();
    vec![
        // HTTP/2 with prior knowledge.
        (
            1,
            vec![
                (0, h2_client),
                (1, settings.clone()),
                (1, frame(4, 1, 0, &[])),
            ],
        ),
        // HTTP/1.1.
        (
            2,
            vec![
                (0, b"GET /info HTTP/1.1\r\nHost: d\r\n\r\n".to_vec()),
                (1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec()),
            ],
        ),
        // RESP.
        (
            3,
            vec![
                (0, b"*1\r\n$4\r\nPING\r\n".to_vec()),
                (1, b"+PONG\r\n".to_vec()),
            ],
        ),
        // Random bytes, in several writes each way.
        (
            4,
            (0..6)
                .map(|i| (i % 2, random(300 + i * 50, 7 + i as u64)))
                .collect(),
        ),
        // h2c: HTTP/1.1, upgraded.
        (
            5,
            vec![
                (
                    0,
                    b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n"
                        .to_vec(),
                ),
                (
                    1,
                    [
                        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
                        &settings,
                    ]
                    .concat(),
                ),
                (0, [super::h2::PREFACE, &settings[..]].concat()),
            ],
        ),
        // HTTP/1.1 joined midway: the tail of a body first.
        (
            6,
            vec![
                (1, b"ail of a response body\"}".to_vec()),
                (0, b"POST /next HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec()),
                (1, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
            ],
        ),
        // HTTP/2 joined midway: frames, no preface, cut at an odd place.
        (7, vec![(0, h2_mid[11..].to_vec())]),
    ]
}

/// Runs every conversation through one `auto`, interleaved, connections
/// closing at the end; returns the records by connection.
fn run_mix(extra: Vec<Box<dyn Decoder>>) -> Vec<(u64, Vec<Record>)> {
    let ctx = BuildContext::default();
    let mut auto = AutoConfig::default().build_with(&ctx, extra).unwrap();
    let convs = conversations();
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    let mut seq = 0;
    let longest = convs.iter().map(|c| c.1.len()).max().unwrap();
    for i in 0..longest {
        for (conn, msgs) in &convs {
            if let Some((side, bytes)) = msgs.get(i) {
                seq += 1;
                auto.decode(&event(seq, *conn, *side, bytes), &mut out);
            }
        }
    }
    for (conn, _) in &convs {
        auto.closed(*conn, &mut out);
    }
    auto.finish(&mut out);
    assert_eq!(auto.connection_count(), 0);
    assert_eq!(ctx.budget.used(), 0);
    convs
        .iter()
        .map(|(conn, _)| {
            let mine = recs
                .iter()
                .filter(|r| matches!(r, Record::Decoded(d) if d.event.conn == *conn))
                .cloned()
                .collect();
            (*conn, mine)
        })
        .collect()
}

fn decoders_of(recs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => Some(d.decoder.to_string()),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

fn errors(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Error { message, .. } => Some(message.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn each_connection_is_decoded_by_what_it_speaks() {
    let by_conn = run_mix(vec![Box::new(RespLike {
        name: Arc::from("resp"),
    })]);
    let expect: &[(u64, &[&str])] = &[
        (1, &["http2"]),
        (2, &["http1"]),
        (3, &["resp"]),
        (4, &["raw"]),
        (5, &["http1", "http2"]),
        (6, &["http1"]),
        (7, &["http2"]),
    ];
    for (conn, want) in expect {
        let recs = &by_conn.iter().find(|c| c.0 == *conn).unwrap().1;
        assert_eq!(decoders_of(recs), *want, "connection {conn}: {recs:#?}");
        if *conn != 7 {
            assert!(errors(recs).is_empty(), "connection {conn}: {recs:#?}");
        }
    }
    // HTTP/1.1 pairs its exchange; joined midway it says what it skipped.
    let conn6 = &by_conn.iter().find(|c| c.0 == 6).unwrap().1;
    let exchanges: Vec<_> = conn6
        .iter()
        .filter_map(|r| match r {
            Record::Decoded(d) => match &d.body {
                Body::Exchange(x) => Some(x.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].path.as_deref(), Some("/next"));
    assert_eq!(exchanges[0].status, Some(204));
    // The random connection: every byte once, in order, as raw records.
    let conn4 = &by_conn.iter().find(|c| c.0 == 4).unwrap().1;
    let got: Vec<u8> = conn4
        .iter()
        .flat_map(|r| match r {
            Record::Decoded(d) if d.body == Body::Raw => d.event.data.to_vec(),
            _ => Vec::new(),
        })
        .collect();
    let want: Vec<u8> = (0..6)
        .flat_map(|i| random(300 + i * 50, 7 + i as u64))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn without_a_claiming_plugin_resp_is_raw() {
    let by_conn = run_mix(Vec::new());
    let recs = &by_conn.iter().find(|c| c.0 == 3).unwrap().1;
    assert_eq!(decoders_of(recs), ["raw"]);
    assert_eq!(recs.len(), 2);
}

#[test]
fn undecided_connections_are_bounded() {
    let ctx = BuildContext::default();
    let mut auto = AutoConfig::default().build_with(&ctx, Vec::new()).unwrap();
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    // Small writes that look like nothing: decided (raw) after MAX_EVENTS.
    for seq in 0..MAX_EVENTS as u64 {
        auto.decode(&event(seq + 1, 1, 0, b"\x00\x01"), &mut out);
    }
    assert_eq!(auto.chosen(&event(0, 1, 0, b"")), Some("raw"));
    // A write larger than the window each way: decided.
    auto.decode(&event(99, 2, 0, &vec![0xab; WINDOW + 1]), &mut out);
    assert_eq!(
        auto.chosen(&event(0, 2, 0, b"")),
        None,
        "the other side may tell"
    );
    auto.decode(&event(100, 2, 1, &vec![0xab; WINDOW + 1]), &mut out);
    assert_eq!(auto.chosen(&event(0, 2, 0, b"")), Some("raw"));
    // Large writes one way only: decided once MAX_HELD bytes are held.
    let big = vec![0xcd; MAX_HELD / 4];
    for i in 0..4 {
        assert_eq!(auto.chosen(&event(0, 9, 0, b"")), None);
        auto.decode(&event(200 + i, 9, 0, &big), &mut out);
    }
    assert_eq!(auto.chosen(&event(0, 9, 0, b"")), Some("raw"));
    // A partial preface waits, then decides.
    auto.decode(&event(101, 3, 0, b"PRI * HTTP/2.0\r\n"), &mut out);
    assert_eq!(auto.chosen(&event(0, 3, 0, b"")), None);
    auto.decode(&event(102, 3, 0, b"\r\nSM\r\n\r\n"), &mut out);
    assert_eq!(auto.chosen(&event(0, 3, 0, b"")), Some("http2"));
    auto.finish(&mut out);
    assert_eq!(ctx.budget.used(), 0);
    // Past limits.connections, the longest idle go.
    let ctx = BuildContext::new(Limits {
        connections: 10,
        ..Limits::default()
    });
    let mut auto = AutoConfig::default().build_with(&ctx, Vec::new()).unwrap();
    for c in 0..100 {
        auto.decode(&event(c + 1, c, 0, b"GET / HTTP/1.1\r\n"), &mut out);
        assert!(auto.connection_count() <= 10);
    }
}

#[test]
fn a_connection_undecided_for_max_wait_is_decided_when_the_run_catches_up() {
    let ctx = BuildContext::default();
    let mut auto = AutoConfig::default().build_with(&ctx, Vec::new()).unwrap();
    let mut recs = Vec::new();
    let mut out = Out::collect(&mut recs);
    // Two commands of an interactive session of a protocol no candidate
    // claims: nothing tells, and nothing more comes for a while.
    auto.decode(&event(1, 1, 0, b"*1\r\n$4\r\nPING\r\n"), &mut out);
    auto.decode(&event(2, 1, 1, b"+PONG\r\n"), &mut out);
    let after = std::time::Instant::now();
    auto.settle_waited(after, &mut out);
    assert_eq!(auto.chosen(&event(0, 1, 0, b"")), None);
    assert!(out.pending().is_empty());
    auto.settle_waited(after + MAX_WAIT, &mut out);
    assert_eq!(auto.chosen(&event(0, 1, 0, b"")), Some("raw"));
    assert_eq!(decoders_of(out.pending()), ["raw"]);
    assert_eq!(out.pending().len(), 2, "both held events, in order");
    // Decided connections stay decided; the next events go straight on.
    auto.decode(&event(3, 1, 0, b"*1\r\n$4\r\nPING\r\n"), &mut out);
    assert_eq!(out.pending().len(), 3);
    auto.finish(&mut out);
    assert_eq!(ctx.budget.used(), 0);
}

#[test]
fn config_keys_are_checked() {
    let mut reg = Registry::new();
    crate::register(&mut reg);
    let parse = |decoder: &str| {
        spf_pipeline::config::parse(
            &reg,
            "t",
            &format!("[source]\ntype = \"file\"\npath = \"/dev/null\"\n{decoder}"),
        )
    };
    // The default decoder.
    let cfg = parse("").unwrap();
    assert_eq!(cfg.decoder_type, "auto");
    let cfg = parse(
        "[decoder]\ntype = \"auto\"\nhttp1 = { data = \"none\" }\nhttp2 = { grpc = false }\n",
    )
    .unwrap();
    assert!(cfg.decoder.build(&BuildContext::default()).is_ok());
    for (bad, key, what) in [
        ("http3 = {}", "decoder.http3", "unknown field"),
        (
            "http2 = { max_frame_size = 5 }",
            "decoder.http2",
            "max_frame_size",
        ),
        (
            "[[decoder.plugin]]\nmax_errors = 1",
            "decoder.plugin",
            "path",
        ),
        (
            "[[decoder.plugin]]\npath = \"relative.so\"",
            "decoder.plugin",
            "plugin[0]",
        ),
    ] {
        let errs = parse(&format!("[decoder]\ntype = \"auto\"\n{bad}\n"))
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert!(errs[0].key.starts_with(key), "{bad}: {errs:?}");
        assert!(errs[0].message.contains(what), "{bad}: {errs:?}");
    }
}
