//! spf beyond one machine, on NATS JetStream: the `nats` sink publishes a
//! node's records (raw events for later decoding, decoded records, or
//! exchanges), and the `nats` source consumes raw events of many nodes with a
//! durable consumer and runs them through the same pipeline. See
//! docs/fleet.md.

mod connect;
pub mod sink;
pub mod source;
pub mod wire;

use spf_pipeline::config::Registry;

/// Adds the `nats` sink and source to `reg`.
pub fn register(reg: &mut Registry) {
    sink::register(reg);
    source::register(reg);
}
