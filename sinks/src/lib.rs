//! spf's built-in sinks, one module per sink.

pub mod capture;
mod exchange;
pub mod ndjson;
pub mod pcapng;
pub mod pretty;
pub mod records;
pub mod stdout;
pub mod summary;

use spf_pipeline::config::Registry;

/// Adds every built-in sink to `reg`, and makes `stdout` the sink of a config
/// that names none.
pub fn register(reg: &mut Registry) {
    stdout::register(reg);
    ndjson::register(reg);
    capture::register(reg);
    summary::register(reg);
    pcapng::register(reg);
    reg.default_sink("stdout");
}
