//! `[[sink]] type = "stdout"`: pretty text for people, or NDJSON for `jq`.

use std::io::{IsTerminal as _, Write as _};

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::{Record, Sink, SinkError};

use crate::pretty::Pretty;
use crate::pretty::clock::{self, Clock, TimeFormat};
use crate::records::Kinds;

pub fn register(reg: &mut Registry) {
    reg.sink("stdout", |s: &mut Section<'_>| {
        let cfg = s.parse::<StdoutConfig>()?;
        let mut ok = true;
        if cfg.events && cfg.format != Format::Ndjson {
            s.error(
                "events",
                "only with format = \"ndjson\": pretty output cannot be replayed",
            );
            ok = false;
        }
        if cfg.format == Format::Ndjson {
            for (key, set, why) in [
                (
                    "verbose",
                    cfg.verbose.is_some(),
                    "NDJSON carries every record (choose which with `records`)",
                ),
                (
                    "time",
                    cfg.time.is_some(),
                    "NDJSON carries `ts_ns` and an RFC 3339 `time` in UTC",
                ),
            ] {
                if set {
                    s.error(key, format!("only with format = \"pretty\": {why}"));
                    ok = false;
                }
            }
        }
        if cfg.verbose.is_some_and(|v| v > MAX_VERBOSE) {
            s.error(
                "verbose",
                format!("{} is more than there is: 0, 1 (-v: frames and headers) or 2 (-vv: bodies too)", cfg.verbose.unwrap_or(0)),
            );
            ok = false;
        }
        ok &= crate::records::events_kept(s, cfg.events, cfg.records);
        ok.then(|| Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

const MAX_VERBOSE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Pretty,
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    #[serde(default)]
    pub format: Format,
    /// Pretty only. `auto`: colour on a terminal unless NO_COLOR is set.
    #[serde(default)]
    pub color: Color,
    /// Pretty only: raw bytes shown per record, 0 for all.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// NDJSON only: also write every event as a raw record, so the output can be
    /// replayed with the `file` source whatever the decoder.
    #[serde(default)]
    pub events: bool,
    /// Pretty only: 0 shows exchanges and what no exchange sums up, 1 (`-v`)
    /// frames and headers too, 2 (`-vv`) bodies too.
    #[serde(default)]
    pub verbose: Option<u8>,
    /// Pretty only: how times are shown.
    #[serde(default)]
    pub time: Option<TimeFormat>,
    /// The kinds of record written (default: all).
    #[serde(default)]
    pub records: Kinds,
}

fn default_max_bytes() -> usize {
    4096
}

impl SinkConfig for StdoutConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        let tty = std::io::stdout().is_terminal();
        let color = match self.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        let time = self.time.unwrap_or_default();
        let clock = Clock::new(time);
        if self.format == Format::Pretty && clock.is_local() {
            // Before the privilege drop, which may leave the zone file out of reach.
            clock::load_zone();
        }
        Ok(Box::new(Stdout {
            format: self.format,
            pretty: Pretty::new(color, self.max_bytes, self.verbose.unwrap_or(0), clock),
            events: self.events,
            records: self.records,
            buf: Vec::with_capacity(BUF),
        }))
    }
}

const BUF: usize = 64 * 1024;

pub struct Stdout {
    format: Format,
    pretty: Pretty,
    events: bool,
    records: Kinds,
    buf: Vec<u8>,
}

impl Sink for Stdout {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if !self.records.keeps(record) {
            return Ok(());
        }
        match self.format {
            Format::Ndjson => spf_pipeline::ndjson::encode(record, &mut self.buf),
            Format::Pretty => self.pretty.render(record, &mut self.buf),
        }
        if self.buf.len() >= BUF {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let r = out.write_all(&self.buf).and_then(|()| out.flush());
        self.buf.clear();
        r.map_err(|e| SinkError::io("writing to stdout", e))
    }

    fn wants_events(&self) -> bool {
        self.events
    }
}
