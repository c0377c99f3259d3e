//! `[decoder] type = "raw"`: every event as it came, the original tool's view.

use std::sync::Arc;

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, DecoderConfig, Registry, Section};
use spf_pipeline::{Decoder, Event, Out, Record};

pub fn register(reg: &mut Registry) {
    reg.decoder("raw", |s: &mut Section<'_>| {
        s.parse::<RawConfig>()
            .map(|c| Box::new(c) as Box<dyn DecoderConfig>)
    });
}

/// The raw decoder has no settings; the table must still be empty so that a
/// misspelt key is reported rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {}

impl DecoderConfig for RawConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(Raw::default()))
    }
}

/// Hands each event on as one raw record: the bytes are rendered by the sinks
/// (`data_b64` and `text` in NDJSON, an escaped preview in pretty output).
pub struct Raw {
    name: Arc<str>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw { name: "raw".into() }
    }
}

impl Decoder for Raw {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        out.push(Record::raw(Arc::clone(event), Arc::clone(&self.name)));
    }
}
