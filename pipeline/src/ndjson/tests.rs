use super::*;

/// The eight-byte fast path escapes exactly what a byte-by-byte loop
/// does, wherever the special bytes fall, and the result is JSON that
/// reads back as the string.
#[test]
fn json_str_matches_the_byte_by_byte_escape() {
    fn reference(s: &str) -> Vec<u8> {
        let mut out = vec![b'"'];
        for &b in s.as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => out.push(b),
            }
        }
        out.push(b'"');
        out
    }
    let special = [
        '"', '\\', '\n', '\t', '\0', '\x1f', '\x7f', ' ', '~', 'é', '\u{202e}', 'a',
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..40 {
        for _ in 0..200 {
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    special[(seed % special.len() as u64) as usize]
                })
                .collect();
            let mut out = Vec::new();
            json_str(&s, &mut out);
            assert_eq!(out, reference(&s), "{s:?}");
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }
    for v in [0, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
        let mut out = Vec::new();
        push_u64(v, &mut out);
        assert_eq!(out, v.to_string().as_bytes());
    }
}

pub(super) fn event(data: &[u8]) -> Arc<Event> {
    Arc::new(Event {
        seq: 7,
        ts_ns: 123_456_789,
        time_ns: 1_764_154_645_123_456_789,
        pid: 10,
        tid: 11,
        comm: "cur\"l".into(),
        peer_pid: 12,
        path: "@abs\\name".into(),
        sock: SockKind::Seqpacket,
        dir: Direction::Recv,
        conn: 99,
        socket: 98,
        len: data.len() as u64 + 5,
        data: data.to_vec().into(),
        truncated: true,
        ..Event::default()
    })
}

#[test]
fn raw_round_trip_is_lossless() {
    let all: Vec<u8> = (0..=255u8).collect();
    let rec = Record::raw(event(&all), "raw".into());
    let mut out = Vec::new();
    encode(&rec, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["comm"], "cur\"l");
    assert_eq!(v["path"], "@abs\\name");
    assert_eq!(v["captured"], 256);
    assert_eq!(v["len"], 261);
    let mut interner = Interner::default();
    let Parsed::Item(SourceItem::Event(back)) = parse_line(&out, 7, &mut interner).unwrap() else {
        panic!("not an event")
    };
    assert_eq!(back, event(&all));
}

#[test]
fn text_preview_escapes_like_the_original() {
    let rec = Record::raw(event(b"hi\n\x00\"\\"), "raw".into());
    let mut out = Vec::new();
    encode(&rec, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["text"], "hi\\n\\x00\"\\\\");
}

#[test]
fn closed_round_trip() {
    let mut out = Vec::new();
    super::encode_closed(77, 9_000, &mut out);
    assert_eq!(out, b"{\"ts_ns\":9000,\"conn\":77,\"closed\":true}\n");
    let back = parse_line(&out, 0, &mut Interner::default()).unwrap();
    assert_eq!(
        back,
        Parsed::Item(SourceItem::Closed {
            conn: 77,
            ts_ns: 9_000
        })
    );
    // A close must say which connection ended.
    assert!(
        parse_line(
            b"{\"ts_ns\":1,\"closed\":true}",
            0,
            &mut Interner::default()
        )
        .is_err()
    );
}

#[test]
fn lost_round_trip() {
    let rec = Record::Lost(Lost {
        ts_ns: 5,
        time_ns: 1_000_000_000,
        count: 42,
    });
    let mut out = Vec::new();
    encode(&rec, &mut out);
    assert_eq!(
        out,
        b"{\"ts_ns\":5,\"time\":\"1970-01-01T00:00:01.000000000Z\",\"lost\":42}\n"
    );
    let back = parse_line(&out, 0, &mut Interner::default()).unwrap();
    assert_eq!(
        back,
        Parsed::Item(SourceItem::Lost(Lost {
            ts_ns: 5,
            time_ns: 1_000_000_000,
            count: 42
        }))
    );
}

#[test]
fn time_formats_and_parses() {
    for t in [
        0u64,
        951_782_400_000_000_001,
        1_764_154_645_999_999_999,
        4_102_444_800_000_000_000,
    ] {
        let mut out = Vec::new();
        rfc3339(t, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(parse_rfc3339(&s), Some(t), "{s}");
    }
    let mut out = Vec::new();
    rfc3339(951_782_400_000_000_001, &mut out);
    assert_eq!(out, b"2000-02-29T00:00:00.000000001Z");
    assert_eq!(
        parse_rfc3339("2026-11-26T10:57:25Z"),
        Some(1_795_690_645_000_000_000)
    );
    assert_eq!(parse_rfc3339("2026-13-26T10:57:25Z"), None);
    assert_eq!(
        parse_rfc3339("2999-01-01T00:00:00Z"),
        None,
        "past u64 nanoseconds"
    );
    assert_eq!(parse_rfc3339("2024-01-01T12x34y56Z"), None);
    assert_eq!(parse_rfc3339("2025-02-29T00:00:00Z"), None);
    assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    assert_eq!(parse_rfc3339("2024-02-31T00:00:00Z"), None);
}

#[test]
fn fields_and_errors_encode() {
    let mut json = serde_json::Map::new();
    json.insert(
        "http2".into(),
        serde_json::json!({"type": "PING", "stream_id": 0}),
    );
    let rec = Record::fields(event(b""), "http2".into(), json, "PING".into());
    let mut out = Vec::new();
    encode(&rec, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["http2"]["type"], "PING");
    assert_eq!(
        parse_line(&out, 0, &mut Interner::default()).unwrap(),
        Parsed::Skip
    );

    let rec = Record::error(
        event(b""),
        "http2".into(),
        Some("FRAME_SIZE_ERROR".into()),
        "too big",
    );
    out.clear();
    encode(&rec, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["code"], "FRAME_SIZE_ERROR");
    assert_eq!(v["error"]["message"], "too big");
}

#[test]
fn bad_lines_are_errors_not_panics() {
    let mut i = Interner::default();
    for bad in [
        &b"{"[..],
        b"[]",
        b"{\"decoder\":\"raw\"}",
        b"{\"decoder\":\"raw\",\"data_b64\":\"!!\"}",
        b"{\"decoder\":\"raw\",\"data_b64\":\"\",\"dir\":\"up\"}",
        b"{}",
        b"{\"time\":\"yesterday\",\"lost\":1}",
    ] {
        assert!(
            parse_line(bad, 0, &mut i).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
