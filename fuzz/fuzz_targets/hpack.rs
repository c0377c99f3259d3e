//! HPACK blocks, Huffman strings, gRPC framing and the protobuf view on
//! arbitrary bytes, with tables starting known and unknown.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{grpc, hpack, protobuf};

fuzz_target!(|input: &[u8]| {
    // Several blocks through one decoder, so that table state carries over.
    // A small list limit and memory cap, so that their paths are taken too.
    for (mut d, max_list) in [
        (hpack::Decoder::new(), usize::MAX),
        (hpack::Decoder::unknown(), 4096),
        (hpack::Decoder::with_max_size(256), 64),
    ] {
        d.set_memory(1024, None);
        let mut list = hpack::HeaderList::new();
        for block in input.split(|&b| b == 0xf5) {
            list.clear();
            if d.decode(block, &mut list, max_list).is_err() {
                d.forget();
            }
            let _ = list.pack().iter().count();
        }
    }
    let mut out = Vec::new();
    let _ = hpack::huffman::decode(input, &mut out);
    let lim = protobuf::Limits {
        fields: 256,
        depth: 8,
    };
    let checked = protobuf::check(input, &lim);
    if let Some(fields) = protobuf::parse(input, &lim) {
        assert_eq!(checked, protobuf::Check::Message);
        let mut json = Vec::new();
        protobuf::write_json(&fields, &mut json);
        let mut text = String::new();
        protobuf::to_text(&fields, 0, &mut text);
    }
    let mut msgs = grpc::Messages::default();
    let mut got = Vec::new();
    let bytes = bytes::Bytes::copy_from_slice(input);
    for at in (0..input.len()).step_by(7) {
        if msgs
            .push(
                &bytes.slice(at..(at + 7).min(input.len())),
                1 << 16,
                &mut got,
            )
            .is_err()
        {
            break;
        }
    }
});
