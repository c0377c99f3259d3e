//! The http2 decoder on a script of events (see `src/stream.rs`): both
//! directions, both ends, two connections, with losses, truncated events and
//! closes mixed in. Any panic is a bug; errors must come out as records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{Http2, Http2Config};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|input: &[u8]| {
    spf_fuzz::stream::drive(&mut Http2::new(Http2Config::default()), PREFACE, input);
});
