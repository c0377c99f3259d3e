//! The config reader on arbitrary text, with the components `spf` itself
//! registers. Every problem must come out as an error message, never a panic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use spf_pipeline::config::{self, Registry};

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut reg = Registry::new();
    spf_decoders::register(&mut reg);
    spf_sinks::register(&mut reg);
    spf_probes::register(&mut reg);
    reg
});

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Err(errors) = config::parse(&REGISTRY, "fuzz.toml", text) {
        assert!(!errors.0.is_empty(), "a failed parse reports no error");
        // As `spf validate` prints them.
        let _ = errors.to_string();
    }
});
