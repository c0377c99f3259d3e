//! `[decoder] type = "http2"`: HTTP/2 frames (RFC 9113) with stateful HPACK
//! (RFC 7541), gRPC messages on top, and one exchange record per request and
//! response, from a connection's first byte or from any point after it.
//!
//! One state per connection (connection view) or connection end (syscall
//! view), keyed by `Event::stream_key`, holds both directions, so that the
//! SETTINGS one side sends bound the other side's frames and header table.
//! Decoding can begin mid-connection: a frame boundary is found by checking
//! several consecutive frame headers, and header table entries inserted before
//! decoding began are shown as `<unknown index N>` while everything else
//! decodes exactly (see [`hpack::table`]). Everything input makes the decoder
//! hold is bounded by the run's `[limits]` and memory budget.
//!
//! - `decoder`: the connection states, eviction, losses and closes;
//! - `conn`: one state, its two directions, and frame dispatch;
//! - `framing`: frames cut from a byte stream, and resynchronisation;
//! - `block`: header blocks (HEADERS, PUSH_PROMISE, CONTINUATION) and what
//!   they say about streams and exchanges;
//! - `data`: DATA frames and gRPC messages;
//! - `streams`: per-stream state and exchanges;
//! - `record`: the typed records, written as NDJSON or text by the sinks.

mod block;
mod conn;
mod data;
pub(crate) mod decoder;
pub mod frame;
mod framing;
pub mod grpc;
mod held;
pub mod hpack;
pub mod protobuf;
mod record;
mod streams;

use serde::Deserialize;
use spf_pipeline::Decoder;
use spf_pipeline::config::{BuildContext, BuildError, DecoderConfig, Registry, Section};

pub use decoder::{Http2, Upgraded};

pub fn register(reg: &mut Registry) {
    reg.decoder("http2", |s: &mut Section<'_>| {
        let c = s.parse::<Http2Config>()?;
        if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_LENGTH).contains(&c.max_frame_size) {
            s.error(
                "max_frame_size",
                format!(
                    "must be between {} and {} (the limits of SETTINGS_MAX_FRAME_SIZE)",
                    frame::DEFAULT_MAX_FRAME_SIZE,
                    frame::MAX_LENGTH
                ),
            );
            return None;
        }
        Some(Box::new(c) as Box<dyn DecoderConfig>)
    });
}

/// Settings of the `http2` decoder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Largest frame accepted when the peer's SETTINGS_MAX_FRAME_SIZE was not
    /// seen (decoding began mid-connection); longer frames are FRAME_SIZE_ERRORs.
    pub max_frame_size: u32,
    /// Split DATA of `application/grpc*` streams into gRPC messages.
    pub grpc: bool,
    /// Whether DATA records carry the payload (`b64`) or not (`none`).
    pub data: DataMode,
    /// One exchange record per stream (request and response paired).
    pub exchanges: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    B64,
    None,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_frame_size: frame::MAX_LENGTH,
            grpc: true,
            data: DataMode::B64,
            exchanges: true,
        }
    }
}

impl DecoderConfig for Http2Config {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(Http2::with_context(self.clone(), ctx)))
    }
}

#[cfg(test)]
mod tests;
