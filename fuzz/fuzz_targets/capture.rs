//! The binary capture reader (`--replay FILE.spfcap`): the input read as
//! length-prefixed records, each through `capture::decode`, as the file source
//! reads them. Besides not panicking: a record that reads as an item, written
//! back by the encoder, reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_pipeline::capture::{MAX_RECORD, Strings, decode, encode};

fuzz_target!(|input: &[u8]| {
    let mut rest = input
        .strip_prefix(&spf_pipeline::capture::MAGIC[..])
        .unwrap_or(input);
    let mut strings = Strings::default();
    let mut seq = 0u64;
    let mut buf = Vec::new();
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n > MAX_RECORD || rest.len() - 4 < n {
            break;
        }
        let body = &rest[4..4 + n];
        rest = &rest[4 + n..];
        let Ok(item) = decode(body, seq, &mut strings) else {
            continue;
        };
        buf.clear();
        encode(&item, &mut buf);
        let again = decode(&buf[4..], seq, &mut Strings::default());
        assert_eq!(again.as_ref(), Ok(&item), "written back differently");
        seq += 1;
    }
});
