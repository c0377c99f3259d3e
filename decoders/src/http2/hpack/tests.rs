//! RFC 7541 Appendix C, and the mid-stream behaviour of the table.

use std::sync::Arc;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A decoded field, owned, for comparisons.
#[derive(Debug)]
struct Field {
    name: Vec<u8>,
    value: Vec<u8>,
    sensitive: bool,
    unknown: bool,
}

/// Decodes `block` with no list limit, appending to `out` as owned fields.
fn dec(d: &mut Decoder, block: &[u8], out: &mut Vec<Field>) -> Result<Outcome, HpackError> {
    let mut list = HeaderList::new();
    let r = d.decode(block, &mut list, usize::MAX);
    out.extend(list.iter().map(|f| Field {
        name: f.name.to_vec(),
        value: f.value.to_vec(),
        sensitive: f.sensitive,
        unknown: f.unknown,
    }));
    r
}

fn decode(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    dec(d, &hex(block), &mut out).unwrap();
    out.into_iter()
        .map(|f| {
            assert!(!f.unknown);
            (
                String::from_utf8(f.name).unwrap(),
                String::from_utf8(f.value).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn dynamic(d: &Decoder) -> Vec<(String, String)> {
    (0..d.table().len())
        .map(|i| match d.table().get(62 + i) {
            Lookup::Dynamic(e) => (
                String::from_utf8(e.name.as_ref().unwrap().to_vec()).unwrap(),
                String::from_utf8(e.value.to_vec()).unwrap(),
            ),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn c2_single_fields() {
    let mut d = Decoder::new();
    let got = decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(got, pairs(&[("custom-key", "custom-header")]));
    assert_eq!(d.table().size(), 55);

    let mut d = Decoder::new();
    let got = decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(got, pairs(&[(":path", "/sample/path")]));
    assert!(d.table().is_empty());

    let mut d = Decoder::new();
    let mut out = Vec::new();
    dec(
        &mut d,
        &hex("1008 7061 7373 776f 7264 0673 6563 7265 74"),
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].name, b"password");
    assert_eq!(out[0].value, b"secret");
    assert!(out[0].sensitive);
    assert!(d.table().is_empty());

    let mut d = Decoder::new();
    assert_eq!(decode(&mut d, "82"), pairs(&[(":method", "GET")]));
    assert!(d.table().is_empty());
}

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new();
    let got = decode(&mut d, blocks[0]);
    assert_eq!(
        got,
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(dynamic(&d), pairs(&[(":authority", "www.example.com")]));
    assert_eq!(d.table().size(), 57);

    let got = decode(&mut d, blocks[1]);
    assert_eq!(
        got,
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
    assert_eq!(
        dynamic(&d),
        pairs(&[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(d.table().size(), 110);

    let got = decode(&mut d, blocks[2]);
    assert_eq!(
        got,
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    assert_eq!(
        dynamic(&d),
        pairs(&[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ])
    );
    assert_eq!(d.table().size(), 164);
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn responses(blocks: [&str; 3]) {
    let mut d = Decoder::with_max_size(256);
    let got = decode(&mut d, blocks[0]);
    assert_eq!(
        got,
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!(d.table().size(), 222);
    assert_eq!(
        dynamic(&d),
        pairs(&[
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
            (":status", "302"),
        ])
    );

    let got = decode(&mut d, blocks[1]);
    assert_eq!(
        got,
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!(d.table().size(), 222);
    assert_eq!(
        dynamic(&d),
        pairs(&[
            (":status", "307"),
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
        ])
    );

    let got = decode(&mut d, blocks[2]);
    assert_eq!(
        got,
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            ),
        ])
    );
    assert_eq!(d.table().size(), 215);
    assert_eq!(
        dynamic(&d),
        pairs(&[
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            ),
            ("content-encoding", "gzip"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ])
    );
}

#[test]
fn c5_responses_without_huffman() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a
         3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04
         677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49
         553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e
         919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7
         821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed
         4ee5 b106 3d50 07",
    ]);
}

#[test]
fn integers_from_c1() {
    let mut p = 0;
    assert_eq!(super::int(&[0b0000_1010], &mut p, 5).unwrap(), 10);
    let mut p = 0;
    assert_eq!(super::int(&[0x1f, 0x9a, 0x0a], &mut p, 5).unwrap(), 1337);
    assert_eq!(p, 3);
}

/// The RFC 7541 C.3 requests, decoded by a decoder that attached after the first
/// request: its entry shows as a placeholder, the later insertions are exact.
#[test]
fn attach_after_first_request() {
    let mut d = Decoder::unknown();
    let mut out = Vec::new();
    dec(&mut d, &hex("8286 84be 5808 6e6f 2d63 6163 6865"), &mut out).unwrap();
    let shown: Vec<(String, String)> = out
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.name).into(),
                String::from_utf8_lossy(&f.value).into(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("<unknown index 62>", "<unknown>"),
            ("cache-control", "no-cache"),
        ])
    );
    assert!(out[3].unknown && !out[4].unknown);
    out.clear();
    // Third request: index 63 (cache-control, inserted after attach) is not used,
    // but 62 (:authority, before) is... in the third request the indexes shift:
    // 0xbf = 63 is now :authority (unknown), and the new custom-key entry is exact.
    dec(
        &mut d,
        &hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
        &mut out,
    )
    .unwrap();
    assert_eq!(out[3].name, b"<unknown index 63>");
    assert!(out[3].unknown);
    assert_eq!(out[4].name, b"custom-key");
    assert_eq!(out[4].value, b"custom-value");
    // The two entries inserted since attaching are exact, in order.
    assert_eq!(
        dynamic(&d),
        pairs(&[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache")
        ])
    );
    // A size update to 0 empties everything: from then on the table is exact.
    out.clear();
    dec(&mut d, &hex("20 82"), &mut out).unwrap();
    assert!(d.table().is_exact());
    out.clear();
    assert_eq!(
        dec(&mut d, &hex("be"), &mut out),
        Err(HpackError::BadIndex(62))
    );
}

#[test]
fn literal_with_unknown_name_keeps_value_and_position() {
    let mut d = Decoder::unknown();
    let mut out = Vec::new();
    // Literal with incremental indexing, name from unknown index 70, value "v".
    let mut block = Vec::new();
    encode::literal_indexed_name(&mut block, 70, b"v", false);
    encode::literal_indexed(&mut block, b"k", b"w", true);
    dec(&mut d, &block, &mut out).unwrap();
    assert_eq!(out[0].name, b"<unknown index 70>");
    assert_eq!(out[0].value, b"v");
    out.clear();
    // 62 = "k: w" (newest), 63 = the entry with the unknown name.
    dec(&mut d, &hex("be bf"), &mut out).unwrap();
    assert_eq!(
        (out[0].name.as_slice(), out[0].value.as_slice()),
        (&b"k"[..], &b"w"[..])
    );
    assert_eq!(out[1].name, b"<unknown index 63>");
    assert_eq!(out[1].value, b"v");
}

#[test]
fn errors() {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    assert_eq!(
        dec(&mut d, &hex("80"), &mut out),
        Err(HpackError::IndexZero)
    );
    assert_eq!(
        dec(&mut d, &hex("be"), &mut out),
        Err(HpackError::BadIndex(62))
    );
    assert_eq!(
        dec(&mut d, &hex("82 20"), &mut out),
        Err(HpackError::SizeUpdateNotFirst)
    );
    assert_eq!(
        dec(&mut d, &hex("40 05 61"), &mut out),
        Err(HpackError::Truncated)
    );
    assert_eq!(
        dec(&mut d, &hex("ff ff ff"), &mut out),
        Err(HpackError::Truncated)
    );
    assert_eq!(
        dec(&mut d, &hex("ff ff ff ff ff ff 01"), &mut out),
        Err(HpackError::IntegerOverflow)
    );
}

/// A size update above anything announced is applied and reported, not a
/// COMPRESSION_ERROR: the peers agreed on it where spf could not see.
#[test]
fn unannounced_size_update_is_applied_and_reported() {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut block = Vec::new();
    encode::size_update(&mut block, 65536);
    for i in 0..40 {
        encode::literal_indexed(&mut block, format!("x-{i}").as_bytes(), &[b'v'; 200], false);
    }
    let o = dec(&mut d, &block, &mut out).unwrap();
    assert_eq!(o.unannounced_size, Some(65536));
    // 40 entries of 235 bytes: more than 4096 would hold, all kept.
    assert_eq!(d.table().len(), 40);
    out.clear();
    dec(&mut d, &hex("be"), &mut out).unwrap();
    assert_eq!(out[0].name, b"x-39");
    // Once announced, the same update is not reported.
    let mut d = Decoder::new();
    d.settings_table_size(65536);
    assert_eq!(
        dec(&mut d, &block, &mut out).unwrap().unannounced_size,
        None
    );
    // Joined midway, an update within the default is not reported either.
    let mut d = Decoder::unknown();
    let mut small = Vec::new();
    encode::size_update(&mut small, 4096);
    assert_eq!(dec(&mut d, &small, &mut out).unwrap(), Outcome::default());
}

/// A 4 KiB entry referenced by 1-byte indexes: the list stops growing at the
/// limit, the rest of the block is parsed without expanding anything, and the
/// table stays exact for the next block.
#[test]
fn list_limit_stops_expansion_and_keeps_the_table() {
    let mut d = Decoder::with_max_size(65536);
    let mut first = Vec::new();
    encode::literal_indexed(&mut first, b"x-big", &[b'b'; 4096], false);
    let mut list = HeaderList::new();
    d.decode(&first, &mut list, 1 << 18).unwrap();
    let mut bomb = vec![0xbe; 100_000];
    // An insertion after the limit is still applied to the table.
    encode::literal_indexed(&mut bomb, b"x-after", b"yes", false);
    list.clear();
    let o = d.decode(&bomb, &mut list, 1 << 18).unwrap();
    assert!(o.over_limit);
    assert!(list.is_empty());
    list.clear();
    let o = d.decode(&hex("be bf"), &mut list, 1 << 18).unwrap();
    assert!(!o.over_limit);
    let got: Vec<(&[u8], usize)> = list.iter().map(|f| (f.name, f.value.len())).collect();
    assert_eq!(got, vec![(&b"x-after"[..], 3), (&b"x-big"[..], 4096)]);
    // Errors past the limit are still errors.
    let mut bad = vec![0xbe; 100];
    bad.push(0x80);
    list.clear();
    assert_eq!(d.decode(&bad, &mut list, 100), Err(HpackError::IndexZero));
}

/// Entries dropped to bound memory are still in the peer's table: a reference
/// to one is a placeholder, never a COMPRESSION_ERROR, and newer ones stay exact.
#[test]
fn entries_trimmed_for_memory_become_placeholders() {
    let mut d = Decoder::new();
    d.set_memory(2048, None);
    d.settings_table_size(1 << 20);
    let mut block = Vec::new();
    encode::size_update(&mut block, 1 << 20);
    for i in 0..20 {
        encode::literal_indexed(
            &mut block,
            format!("k{i:02}").as_bytes(),
            &[b'v'; 100],
            false,
        );
    }
    let mut out = Vec::new();
    dec(&mut d, &block, &mut out).unwrap();
    assert!(d.take_events().trimmed);
    assert!(d.table().size() <= 2048);
    let kept = d.table().len();
    assert!(kept > 0 && kept < 20);
    out.clear();
    // The newest is exact; the oldest (index 62 + 19) was trimmed.
    dec(&mut d, &hex("be"), &mut out).unwrap();
    let mut oldest = Vec::new();
    encode::indexed(&mut oldest, 62 + 19);
    dec(&mut d, &oldest, &mut out).unwrap();
    assert_eq!(out[0].name, b"k19");
    assert!(out[1].unknown, "{:?}", out[1]);
    assert_eq!(out[1].name, b"<unknown index 81>");
    // An entry bigger than the memory cap but within the table's maximum
    // makes everything older unknown, and is unknown itself.
    let mut huge = Vec::new();
    encode::literal_indexed(&mut huge, b"x-huge", &[b'h'; 4000], false);
    out.clear();
    dec(&mut d, &huge, &mut out).unwrap();
    assert_eq!(out[0].value.len(), 4000, "the field itself is shown");
    assert!(d.table().is_empty() && !d.table().is_exact());
    out.clear();
    dec(&mut d, &hex("be"), &mut out).unwrap();
    assert!(out[0].unknown);
}

/// The memory budget refusing an entry empties the table (placeholders from
/// then on) and gives everything back when the table goes.
#[test]
fn budget_is_taken_and_given_back() {
    let budget = spf_pipeline::Budget::new(1000);
    let mut d = Decoder::new();
    d.set_memory(1 << 20, Some(Arc::clone(&budget)));
    let mut out = Vec::new();
    let mut block = Vec::new();
    encode::literal_indexed(&mut block, b"a", &[b'x'; 300], false);
    dec(&mut d, &block, &mut out).unwrap();
    assert_eq!(budget.used(), 333);
    dec(&mut d, &block, &mut out).unwrap();
    dec(&mut d, &block, &mut out).unwrap();
    assert_eq!(budget.used(), 999);
    assert_eq!(d.take_events(), TableEvents::default());
    // 4096 evicts the oldest first: the table holds at most 12 such entries.
    dec(&mut d, &block, &mut out).unwrap();
    let ev = d.take_events();
    assert!(ev.refused, "{ev:?}");
    assert_eq!(budget.used(), 0);
    assert!(!d.table().is_exact());
    dec(&mut d, &block, &mut out).unwrap();
    assert_eq!(budget.used(), 333);
    drop(d);
    assert_eq!(budget.used(), 0);
}
