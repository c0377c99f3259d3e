//! The binary capture reader (`--replay FILE.spfcap`, and the binary
//! messages a central spf reads from NATS): the input framed into records by
//! `capture::records`, each through `capture::decode`. Besides not panicking: a record that reads as an item, written
//! back by the encoder, reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_pipeline::capture::{Strings, decode, encode, records};

fuzz_target!(|input: &[u8]| {
    let rest = input
        .strip_prefix(&spf_pipeline::capture::MAGIC[..])
        .unwrap_or(input);
    let mut strings = Strings::default();
    let mut seq = 0u64;
    let mut buf = Vec::new();
    for body in records(rest) {
        let Ok(body) = body else {
            break;
        };
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
