//! The http2 decoder on a script of events (see `src/stream.rs`): both
//! views, both directions, both ends, two connections, with losses, truncated
//! events and closes mixed in, under default or tight limits. Any panic is a
//! bug; errors must come out as records; every byte of the memory budget the
//! decoder took must be given back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{Http2, Http2Config};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|input: &[u8]| {
    spf_fuzz::stream::run(input, PREFACE, |ctx| {
        Http2::with_context(Http2Config::default(), ctx)
    });
});
