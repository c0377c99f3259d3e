//! The `file` source's NDJSON reader: each line of the input through
//! `parse_line`, as a replay reads a capture. Besides not panicking:
//!
//! * a line reads the same whatever lines came before it (the reader caches
//!   names and times across lines);
//! * what a line reads as, written back by the encoder, reads back the same.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spf_pipeline::ndjson::{self, Interner, Parsed, parse_line};
use spf_pipeline::{Record, SourceItem};

fuzz_target!(|input: &[u8]| {
    let mut shared = Interner::default();
    let mut buf = Vec::new();
    for (seq, line) in input.split(|&b| b == b'\n').enumerate() {
        let seq = seq as u64;
        let got = parse_line(line, seq, &mut shared);
        let alone = parse_line(line, seq, &mut Interner::default());
        assert_eq!(got, alone, "the line reads differently after others");
        let Ok(Parsed::Item(item)) = got else {
            continue;
        };
        let record = match &item {
            SourceItem::Event(e) => Record::raw(Arc::clone(e), Arc::from("raw")),
            SourceItem::Lost(l) => Record::Lost(*l),
            SourceItem::Closed { .. } => continue,
        };
        buf.clear();
        ndjson::encode(&record, &mut buf);
        let again = parse_line(buf.trim_ascii_end(), seq, &mut Interner::default());
        assert_eq!(
            again,
            Ok(Parsed::Item(item)),
            "written back as {}",
            String::from_utf8_lossy(&buf)
        );
    }
});
