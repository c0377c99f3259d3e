//! `[decoder] type = "auto"`, the default: each connection decoded by the
//! decoder its first bytes call for — `http2` (the connection preface, a
//! server's SETTINGS, or a chain of frames when joined midway), `http1` (a
//! request or status line), a plugin decoder whose `detect` claims it, or
//! else `raw`.
//!
//! ```toml
//! [decoder]
//! type = "auto"
//! http1 = { data = "b64" }          # settings of the http1 decoder it uses
//! http2 = { grpc = true }           # and of the http2 decoder
//!
//! [[decoder.plugin]]                # plugin decoders that take part
//! path = "/usr/local/lib/spf/libspf_resp.so"
//! max_errors = 100                  # host key; any other goes to the plugin
//! ```

mod decoder;
pub mod h2;

use std::path::Path;

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, DecoderConfig, Registry, Section};
use spf_pipeline::plugin::{DEFAULT_MAX_ERRORS, PluginDecoderConfig};
use spf_pipeline::{Decoder, Limits};

pub use decoder::{Auto, HTTP1, HTTP2, MAX_EVENTS, MAX_HELD, MAX_WAIT, RAW, WINDOW};

use crate::http1::{Http1, Http1Config};
use crate::http2::Http2Config;
use crate::raw::Raw;

/// HTTP/2's bounds on SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
const FRAME_SIZE: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;

pub fn register(reg: &mut Registry) {
    reg.decoder("auto", factory);
}

/// The keys of an `auto` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Keys {
    http1: Http1Config,
    http2: Http2Config,
    plugin: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A validated `auto` section, its plugins loaded.
#[derive(Debug, Default)]
pub struct AutoConfig {
    pub http1: Http1Config,
    pub http2: Http2Config,
    pub plugins: Vec<PluginDecoderConfig>,
}

fn factory(s: &mut Section<'_>) -> Option<Box<dyn DecoderConfig>> {
    let keys = s.parse::<Keys>()?;
    if !FRAME_SIZE.contains(&keys.http2.max_frame_size) {
        s.error(
            "http2",
            format!(
                "max_frame_size must be between {} and {} (the limits of SETTINGS_MAX_FRAME_SIZE)",
                FRAME_SIZE.start(),
                FRAME_SIZE.end()
            ),
        );
        return None;
    }
    let mut plugins = Vec::new();
    for (i, mut table) in keys.plugin.into_iter().enumerate() {
        let path = match table.remove("path") {
            Some(serde_json::Value::String(p)) => p,
            _ => {
                s.error(
                    "plugin",
                    format!("plugin[{i}]: set path = the absolute path of a decoder plugin (lib<name>.so)"),
                );
                return None;
            }
        };
        let max_errors = match table.remove("max_errors") {
            None => DEFAULT_MAX_ERRORS,
            Some(v) => match v.as_u64() {
                Some(n) => n,
                None => {
                    s.error(
                        "plugin",
                        format!("plugin[{i}].max_errors: expected a non-negative integer"),
                    );
                    return None;
                }
            },
        };
        let config = serde_json::Value::Object(table);
        match PluginDecoderConfig::open(Path::new(&path), &config, max_errors) {
            Ok(p) => plugins.push(p),
            Err(e) => {
                s.error("plugin", format!("plugin[{i}]: {e}"));
                return None;
            }
        }
    }
    Some(Box::new(AutoConfig {
        http1: keys.http1,
        http2: keys.http2,
        plugins,
    }))
}

impl AutoConfig {
    /// Builds the decoder with `extra` candidates besides the built-ins and
    /// the configured plugins (decoders that implement `detect`).
    pub fn build_with(
        &self,
        ctx: &BuildContext,
        extra: Vec<Box<dyn Decoder>>,
    ) -> Result<Auto, BuildError> {
        let mut delegates: Vec<Box<dyn Decoder>> = vec![
            Box::new(Http1::new(&self.http1, self.http2.clone(), ctx)),
            self.http2.build(ctx)?,
            Box::new(Raw::default()),
        ];
        for p in &self.plugins {
            delegates.push(Box::new(p.build_plugin(ctx)?));
        }
        delegates.extend(extra);
        let Limits { connections, .. } = ctx.limits;
        Ok(Auto::new(delegates, connections, ctx.budget.clone()))
    }
}

impl DecoderConfig for AutoConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(self.build_with(ctx, Vec::new())?))
    }
}

#[cfg(test)]
mod tests;
