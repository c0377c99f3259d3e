//! HPACK blocks, Huffman strings, gRPC framing and the protobuf view on
//! arbitrary bytes, with tables starting known and unknown.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{grpc, hpack, protobuf};

fuzz_target!(|input: &[u8]| {
    // Several blocks through one decoder, so that table state carries over.
    for mut d in [hpack::Decoder::new(), hpack::Decoder::unknown(), hpack::Decoder::with_max_size(256)] {
        for block in input.split(|&b| b == 0xf5) {
            let mut fields = Vec::new();
            if d.decode(block, &mut fields).is_err() {
                d.forget();
            }
        }
    }
    let mut out = Vec::new();
    let _ = hpack::huffman::decode(input, &mut out);
    if let Some(fields) = protobuf::parse(input) {
        let _ = protobuf::to_json(&fields);
        let mut text = String::new();
        protobuf::to_text(&fields, 0, &mut text);
    }
    let mut msgs = grpc::Messages::default();
    let mut got = Vec::new();
    for part in input.chunks(7) {
        if msgs.push(part, 1 << 16, &mut got).is_err() {
            break;
        }
    }
});
