//! spf's built-in decoders, one module per decoder.

pub mod auto;
mod evict;
pub mod http1;
pub mod http2;
pub mod raw;

use spf_pipeline::config::Registry;

/// Adds every built-in decoder to `reg`, and makes `auto` the decoder of a
/// config that names none.
pub fn register(reg: &mut Registry) {
    raw::register(reg);
    http1::register(reg);
    http2::register(reg);
    auto::register(reg);
    reg.default_decoder("auto");
}
