//! `[[sink]] type = "ndjson"`: records as NDJSON in a file.
//!
//! Captures hold whatever the traced processes said, secrets included: the file is
//! opened by [`spf_pipeline::output::open_output`] (mode 0600, no symbolic links,
//! only a regular file of the user spf runs as).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::writer::FileWriter;
use spf_pipeline::{Record, Sink, SinkError};

use crate::records::Kinds;

pub fn register(reg: &mut Registry) {
    reg.sink("ndjson", |s: &mut Section<'_>| {
        let cfg = s.parse::<NdjsonConfig>()?;
        // Both checks report, whichever fails.
        let mut ok = true;
        if let Err(e) = check_path(&cfg.path) {
            s.error("path", e);
            ok = false;
        }
        ok &= crate::records::events_kept(s, cfg.events, cfg.records);
        ok.then(|| Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

/// What a config check can say of an output file's path before the file is
/// opened (for every sink that writes a file): it names a file, in a
/// directory that exists, and nothing there is refused yet. Opening the file
/// decides again.
pub(crate) fn check_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must name a file".into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!("directory `{}` does not exist", dir.display()));
    }
    spf_pipeline::output::check_output_path(path)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonConfig {
    pub path: PathBuf,
    /// Add to the file instead of replacing it.
    #[serde(default)]
    pub append: bool,
    /// Also write every event as a raw record, so the file can be replayed with the
    /// `file` source whatever the decoder was.
    #[serde(default)]
    pub events: bool,
    /// The kinds of record written (default: all).
    #[serde(default)]
    pub records: Kinds,
}

impl SinkConfig for NdjsonConfig {
    fn output_path(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        let file = spf_pipeline::output::open_output(&self.path, self.append)?;
        let what = format!("writing `{}`", self.path.display());
        let out = FileWriter::new(file, what)
            .map_err(|e| BuildError::new(format!("cannot start the writer thread: {e}")))?;
        Ok(Box::new(NdjsonFile {
            path: self.path.clone(),
            out,
            events: self.events,
            records: self.records,
        }))
    }
}

pub struct NdjsonFile {
    path: PathBuf,
    /// The file, written on a thread of its own (see pipeline's writer.rs).
    out: FileWriter,
    events: bool,
    records: Kinds,
}

impl Sink for NdjsonFile {
    fn describe(&self) -> String {
        format!("ndjson {}", self.path.display())
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if !self.records.keeps(record) {
            return Ok(());
        }
        spf_pipeline::ndjson::encode(record, self.out.buf());
        self.out.maybe_send()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.out.close()
    }

    fn closed(&mut self, conn: u64, ts_ns: u64) -> Result<(), SinkError> {
        // Part of a replayable capture, as the events are.
        if !self.events {
            return Ok(());
        }
        spf_pipeline::ndjson::encode_closed(conn, ts_ns, self.out.buf());
        self.out.maybe_send()
    }

    fn wants_events(&self) -> bool {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn creates_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.ndjson");
        let cfg = NdjsonConfig {
            path: path.clone(),
            append: false,
            events: false,
            records: Kinds::ALL,
        };
        let mut sink = cfg.build(&Default::default()).unwrap();
        sink.write(&Record::Lost(spf_pipeline::Lost {
            ts_ns: 1,
            time_ns: 2,
            count: 3,
        }))
        .unwrap();
        sink.close().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["lost"], 3);
    }
}
