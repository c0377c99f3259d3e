//! spf's built-in sinks, one module per sink.

pub mod capture;
pub mod ndjson;
pub mod pretty;
pub mod stdout;

use spf_pipeline::config::Registry;

/// Adds every built-in sink to `reg`, and makes `stdout` the sink of a config
/// that names none.
pub fn register(reg: &mut Registry) {
    stdout::register(reg);
    ndjson::register(reg);
    capture::register(reg);
    reg.default_sink("stdout");
}
