//! `[[sink]] type = "capture"`: the events, as they came from the source, in
//! the binary capture format (pipeline's capture.rs), for replay with
//! `--replay` at rates an NDJSON capture cannot keep up with. `--output
//! FILE.spfcap` is this sink.
//!
//! It keeps what a replay needs and nothing derived: every event the source
//! handed over (the runner gives sinks that want events each one as a raw
//! record) and every gap marker; decoders' records are not written.

use std::path::PathBuf;

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::writer::FileWriter;
use spf_pipeline::{Body, Record, Sink, SinkError, SourceItem};

pub fn register(reg: &mut Registry) {
    reg.sink("capture", |s: &mut Section<'_>| {
        let cfg = s.parse::<CaptureConfig>()?;
        if cfg.path.as_os_str().is_empty() {
            s.error("path", "must name a file");
            return None;
        }
        if let Err(e) = spf_pipeline::output::check_output_path(&cfg.path) {
            s.error("path", e);
            return None;
        }
        Some(Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Created with mode 0600 (captures hold secrets).
    pub path: PathBuf,
}

impl SinkConfig for CaptureConfig {
    fn output_path(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        let file = spf_pipeline::output::open_output(&self.path, false)?;
        let what = format!("writing `{}`", self.path.display());
        let mut out = FileWriter::new(file, what)
            .map_err(|e| BuildError::new(format!("cannot start the writer thread: {e}")))?;
        out.buf().extend_from_slice(spf_pipeline::capture::MAGIC);
        Ok(Box::new(CaptureFile {
            path: self.path.clone(),
            out,
        }))
    }
}

pub struct CaptureFile {
    path: PathBuf,
    out: FileWriter,
}

impl Sink for CaptureFile {
    fn describe(&self) -> String {
        format!("capture {}", self.path.display())
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        let item = match record {
            Record::Lost(l) => SourceItem::Lost(*l),
            // Events as the source gave them; records of the connection view
            // (`via`) are derived from those and not kept.
            Record::Decoded(d) if matches!(d.body, Body::Raw) && d.event.via.is_none() => {
                SourceItem::Event(d.event.clone())
            }
            Record::Decoded(_) => return Ok(()),
        };
        // The head copied, the payload written from where it is if big.
        let data = spf_pipeline::capture::encode_head(&item, "", self.out.buf());
        self.out.put_bytes(data);
        self.out.maybe_send()
    }

    fn closed(&mut self, conn: u64, ts_ns: u64) -> Result<(), SinkError> {
        // Replayed, it ends the connection as the live capture did.
        let item = SourceItem::Closed { conn, ts_ns };
        let data = spf_pipeline::capture::encode_head(&item, "", self.out.buf());
        self.out.put_bytes(data);
        self.out.maybe_send()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.out.close()
    }

    fn wants_events(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use spf_pipeline::capture::{MAGIC, Strings, decode, records};
    use spf_pipeline::{Event, Lost, Record, SourceItem};

    use super::*;

    #[test]
    fn payloads_written_in_place_or_copied_read_back_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.spfcap");
        let file = std::fs::File::create(&path).unwrap();
        let mut out = FileWriter::new(file, "test".into()).unwrap();
        out.buf().extend_from_slice(MAGIC);
        let mut sink = CaptureFile {
            path: path.clone(),
            out,
        };
        // Sizes on both sides of what the writer copies (4 KiB), enough of
        // them to fill several write buffers.
        let sizes = [0, 1, 4095, 4096, 70_000, 3];
        let mut want = Vec::new();
        for i in 0..200u64 {
            let n = sizes[i as usize % sizes.len()];
            let data = Bytes::from((0..n).map(|k| (k as u64 * 7 + i) as u8).collect::<Vec<_>>());
            let e = Arc::new(Event {
                seq: i,
                conn: i % 5,
                len: n as u64,
                data: data.clone(),
                ..Default::default()
            });
            sink.write(&Record::raw(e, "raw".into())).unwrap();
            want.push(Some(data));
            if i % 17 == 0 {
                let lost = Lost {
                    ts_ns: i,
                    time_ns: i,
                    count: i + 1,
                };
                sink.write(&Record::Lost(lost)).unwrap();
                want.push(None);
            }
        }
        sink.close().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let body = bytes.strip_prefix(MAGIC.as_slice()).unwrap();
        let mut strings = Strings::default();
        let got: Vec<Option<Bytes>> = records(body)
            .enumerate()
            .map(
                |(k, r)| match decode(r.unwrap(), k as u64, &mut strings).unwrap() {
                    SourceItem::Event(e) => Some(e.data.clone()),
                    SourceItem::Lost(_) => None,
                    SourceItem::Closed { .. } => panic!("no close was written"),
                },
            )
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "payloads differ");
    }
}
