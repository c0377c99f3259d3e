//! spf's built-in decoders, one module per decoder.

pub mod http2;
pub mod raw;

use spf_pipeline::config::Registry;

/// Adds every built-in decoder to `reg`.
pub fn register(reg: &mut Registry) {
    raw::register(reg);
    http2::register(reg);
}
