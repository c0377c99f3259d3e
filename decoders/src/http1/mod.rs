//! `[decoder] type = "http1"`: HTTP/1.0 and HTTP/1.1 (RFC 9112) over a
//! connection's two byte streams: request and status lines, header fields in
//! order with their original case, bodies framed by Content-Length, chunked
//! coding or the connection's end, and one exchange record per request and
//! its response.
//!
//! - [`parse`]: message heads, in place;
//! - [`body`]: body framing (lengths, chunks, trailers);
//! - [`inflate`]: gzip and deflate bodies, bounded;
//! - [`detect`]: where messages start, and how sure a stream is HTTP/1;
//! - [`conn`]: a connection's streams, pairing, upgrades, resynchronisation;
//! - [`record`]: the records and how they are written;
//! - [`decoder`]: the decoder over all connections.

pub mod body;
mod conn;
mod decoder;
pub mod detect;
pub mod inflate;
pub mod parse;
mod record;

use serde::Deserialize;
use spf_pipeline::Decoder;
use spf_pipeline::config::{BuildContext, BuildError, DecoderConfig, Registry, Section};

pub use decoder::Http1;

use crate::http2::Http2Config;

pub fn register(reg: &mut Registry) {
    reg.decoder("http1", |s: &mut Section<'_>| {
        s.parse::<Http1Config>()
            .map(|c| Box::new(c) as Box<dyn DecoderConfig>)
    });
}

/// Settings of the `http1` decoder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Http1Config {
    /// Whether body records carry the bytes (`b64`) or only their length
    /// (`none`).
    pub data: DataMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    #[default]
    B64,
    None,
}

impl DecoderConfig for Http1Config {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(Http1::new(self, Http2Config::default(), ctx)))
    }
}

#[cfg(test)]
mod tests;
