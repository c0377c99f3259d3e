//! `[decoder] type = "http2"`: HTTP/2 frames (RFC 9113) with stateful HPACK
//! (RFC 7541), and gRPC messages on top, from a connection's first byte or from
//! any point after it.
//!
//! Decoding can begin mid-connection: a frame boundary is found by checking
//! several consecutive frame headers, and header table entries inserted before
//! decoding began are shown as `<unknown index N>` while everything else decodes
//! exactly (see [`hpack::table`]).

pub(crate) mod decoder;
pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod protobuf;

use serde::Deserialize;
use spf_pipeline::Decoder;
use spf_pipeline::config::{BuildContext, BuildError, DecoderConfig, Registry, Section};

pub use decoder::Http2;

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
        }
    }
}

impl DecoderConfig for Http2Config {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(Http2::new(self.clone())))
    }
}

#[cfg(test)]
mod tests;
