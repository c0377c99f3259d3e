//! `[source] type = "file"`: replay without root.
//!
//! * `format = "ndjson"` re-reads a capture written by the ndjson sink (raw records
//!   and lost markers; other decoders' records are skipped), so a capture can be
//!   decoded again later with any decoder; a binary capture (capture.rs) is
//!   recognised by its first bytes and read as well.
//! * `format = "bytes"` treats a file as one connection's byte stream in one
//!   direction, for decoding dumps of raw protocol bytes.
//!
//! Reading is blocking I/O on its own thread: the input may be a FIFO that blocks
//! for as long as its writer likes, and shutdown must not wait for it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{BuildContext, BuildError, Registry, Section, SourceConfig};
use crate::event::{Direction, Event, SourceItem};
use crate::ndjson::{Interner, Parsed, parse_line};
use crate::stage::{Batch, BoxFuture, Emitter, Source, SourceError, SourceSummary};

const BATCH: usize = 1024;
/// Payload bytes per batch: with large events a count alone would let the channel
/// hold gigabytes.
const BATCH_BYTES: usize = 1 << 20;
/// Longest line read: a 16 MiB event is 22 MiB of base64 plus its preview.
const MAX_LINE: usize = 64 << 20;
/// Malformed lines reported one by one before only counting them.
const REPORT_LINES: u64 = 10;

pub(crate) fn register(r: &mut Registry) {
    r.source("file", |s: &mut Section<'_>| {
        let cfg = s.parse::<FileSourceConfig>()?;
        let mut ok = true;
        if cfg.path.as_os_str().is_empty() {
            s.error("path", "must name a file");
            ok = false;
        } else if !cfg.is_stdin() {
            match std::fs::metadata(&cfg.path) {
                Err(e) => {
                    s.error("path", format!("cannot open `{}`: {e}", cfg.path.display()));
                    ok = false;
                }
                Ok(m) if m.is_dir() => {
                    s.error(
                        "path",
                        format!("`{}` is a directory, not a capture", cfg.path.display()),
                    );
                    ok = false;
                }
                Ok(_) => {}
            }
        }
        if cfg.chunk == 0 || cfg.chunk > MAX_CHUNK {
            s.error("chunk", format!("must be between 1 and {MAX_CHUNK} bytes"));
            ok = false;
        }
        ok.then(|| Box::new(cfg) as Box<dyn SourceConfig>)
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Ndjson,
    Bytes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file (or FIFO) to read; `-` is stdin.
    pub path: PathBuf,
    #[serde(default)]
    pub format: FileFormat,
    /// `bytes` only: the direction the bytes travelled.
    #[serde(default)]
    pub dir: Dir,
    /// `bytes` only: bytes per event.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    #[default]
    Send,
    Recv,
}

impl FileSourceConfig {
    fn is_stdin(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

/// Largest `chunk`: the same bound as the probe's largest snaplen.
const MAX_CHUNK: usize = 16 << 20;

fn default_chunk() -> usize {
    64 * 1024
}

impl SourceConfig for FileSourceConfig {
    fn input_path(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn describe(&self) -> String {
        format!("replay of {}", self.path.display())
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, BuildError> {
        let dir = match self.dir {
            Dir::Send => Direction::Send,
            Dir::Recv => Direction::Recv,
        };
        // stdin is taken as it is (a pipe, a file, a socket): not reopened
        // through /dev/stdin, which a socket cannot be.
        let file = if self.is_stdin() {
            use std::os::fd::AsFd as _;
            std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .map_err(|e| BuildError::new(format!("cannot read stdin: {e}")))?
        } else {
            File::open(&self.path).map_err(|e| {
                BuildError::new(format!("cannot open `{}`: {e}", self.path.display()))
            })?
        };
        Ok(Box::new(FileSource {
            cfg: self.clone(),
            dir,
            file,
        }))
    }
}

pub struct FileSource {
    cfg: FileSourceConfig,
    dir: Direction,
    file: File,
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.cfg.path.display())
    }

    fn run(
        self: Box<Self>,
        out: Emitter,
    ) -> BoxFuture<'static, Result<SourceSummary, SourceError>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || match self.cfg.format {
                FileFormat::Ndjson => read_capture_file(self.file, &self.cfg.path, &out),
                FileFormat::Bytes => read_bytes(self.file, &self.cfg, self.dir, &out),
            })
            .await
            .map_err(|e| SourceError(format!("file source thread failed: {e}")))?
        })
    }
}

/// A capture: NDJSON, or binary (capture.rs), told apart by the binary
/// format's magic whatever the file is called. The first bytes are read
/// whole (a FIFO may hand them over in pieces) and put back in front.
fn read_capture_file(
    mut file: File,
    path: &std::path::Path,
    out: &Emitter,
) -> Result<SourceSummary, SourceError> {
    let mut head = [0u8; 8];
    let n = read_full(&mut file, &mut head)
        .map_err(|e| SourceError(format!("reading `{}`: {e}", path.display())))?;
    if head[..n] == crate::capture::MAGIC[..] {
        let reader = BufReader::with_capacity(256 * 1024, file);
        return read_capture(reader, path, out);
    }
    if let Some(what) = packet_capture_kind(&head[..n]) {
        // Read as lines, a packet capture is millions of unreadable ones.
        return Err(SourceError(format!(
            "`{}` is a {what} file, for Wireshark or tshark; --replay reads \
             what spf wrote with --output (NDJSON, or a binary `.spfcap`)",
            path.display()
        )));
    }
    let rest = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    read_ndjson(BufReader::with_capacity(256 * 1024, rest), path, out)
}

/// pcapng (its section header block's type) or classic pcap (either byte
/// order, micro- or nanosecond), told by the first four bytes.
fn packet_capture_kind(head: &[u8]) -> Option<&'static str> {
    match head.get(..4)? {
        [0x0a, 0x0d, 0x0d, 0x0a] => Some("pcapng"),
        [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] => Some("pcap"),
        [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] => Some("pcap"),
        _ => None,
    }
}

fn read_ndjson<R: Read>(
    mut reader: BufReader<R>,
    path: &std::path::Path,
    out: &Emitter,
) -> Result<SourceSummary, SourceError> {
    let mut st = LineState {
        interner: Interner::default(),
        summary: SourceSummary::default(),
        batch: Vec::with_capacity(BATCH),
        lineno: 0,
        seq: 0,
        bytes: 0,
        syscalls: false,
        derived: 0,
    };
    let read_err = |e: std::io::Error| SourceError(format!("reading `{}`: {e}", path.display()));
    let mut partial = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(read_err)?;
        if buf.is_empty() {
            break;
        }
        // Parse straight out of the read buffer; only a line that straddles two
        // reads is copied.
        let used = match memchr::memchr(b'\n', buf) {
            Some(i) => {
                st.line(&buf[..i], path);
                i + 1
            }
            None => {
                partial.clear();
                partial.extend_from_slice(buf);
                let n = buf.len();
                reader.consume(n);
                // The rest of this line may be long in coming (a FIFO): hand on the
                // complete lines first.
                if !st.batch.is_empty() {
                    st.bytes = 0;
                    if !out
                        .blocking_send(std::mem::replace(&mut st.batch, Vec::with_capacity(BATCH)))
                    {
                        // All it read went into `partial`: nothing is left
                        // buffered.
                        return Ok(st.summary);
                    }
                }
                // Bounded, so that a file without newlines (a binary file given by
                // mistake, /dev/zero) cannot take all memory.
                (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut partial)
                    .map_err(read_err)?;
                if partial.len() >= MAX_LINE && partial.last() != Some(&b'\n') {
                    st.lineno += 1;
                    st.summary.skipped += 1;
                    if st.summary.skipped <= REPORT_LINES {
                        crate::diag!(
                            "spf: {}:{}: skipped: line longer than {} MiB",
                            path.display(),
                            st.lineno,
                            MAX_LINE >> 20
                        );
                    }
                    skip_line(&mut reader).map_err(read_err)?;
                    continue;
                }
                let line = partial.strip_suffix(b"\n").unwrap_or(&partial);
                st.line(line, path);
                0
            }
        };
        reader.consume(used);
        // Send when the batch is full, or when no more input is buffered, so that
        // a slow writer (a FIFO) sees its events decoded without waiting for more.
        if st.batch.len() >= BATCH
            || st.bytes >= BATCH_BYTES
            || (!st.batch.is_empty() && reader.buffer().is_empty())
        {
            st.bytes = 0;
            if !out.blocking_send(std::mem::replace(&mut st.batch, Vec::with_capacity(BATCH))) {
                hand_on_buffered(reader.buffer(), &mut st, path, out);
                return Ok(st.summary);
            }
        }
    }
    out.blocking_send(st.batch);
    if st.summary.skipped > REPORT_LINES {
        crate::diag!(
            "spf: {}: {} malformed lines skipped in all",
            path.display(),
            st.summary.skipped
        );
    }
    if st.seq == 0 && st.derived > 0 {
        return Err(SourceError(format!(
            "`{}` holds {} decoded records but no raw events, so there is nothing to \
             replay: a replayable capture is written by `spf run --output FILE`, or by an \
             `ndjson` sink with `events = true`",
            path.display(),
            st.derived
        )));
    }
    Ok(st.summary)
}

/// Reads a binary capture (after its magic) into batches.
fn read_capture<R: Read>(
    mut reader: BufReader<R>,
    path: &std::path::Path,
    out: &Emitter,
) -> Result<SourceSummary, SourceError> {
    let err = |e: String| SourceError(format!("reading `{}`: {e}", path.display()));
    let mut strings = crate::capture::Strings::default();
    let mut summary = SourceSummary::default();
    let mut batch: Batch = Vec::with_capacity(BATCH);
    let mut bytes = 0usize;
    let mut body = Vec::new();
    let mut seq = 0u64;
    // What cannot be read ends the replay, but never takes the records read
    // before it along. A capture whose writer was killed or ran out of disk
    // ends inside a record: that one is skipped with a warning.
    let skip = |summary: &mut SourceSummary, why: String| {
        summary.skipped += 1;
        if summary.skipped <= REPORT_LINES {
            crate::diag!("spf: {}: skipped: {why}", path.display());
        }
    };
    loop {
        let mut len = [0u8; 4];
        let got = read_full(&mut reader, &mut len).map_err(|e| err(e.to_string()))?;
        if got == 0 {
            break;
        }
        if got < 4 {
            skip(
                &mut summary,
                format!("record {seq}: the capture ends inside its length"),
            );
            break;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > crate::capture::MAX_RECORD {
            // The framing is lost: nothing after this can be found.
            out.blocking_send(batch);
            return Err(err(format!(
                "record {seq}: {}",
                crate::capture::DecodeError::TooLong(n)
            )));
        }
        body.resize(n, 0);
        let got = read_full(&mut reader, &mut body).map_err(|e| err(e.to_string()))?;
        if got != n {
            skip(
                &mut summary,
                format!("record {seq}: the capture ends inside it ({got} of {n} bytes)"),
            );
            break;
        }
        let item = match crate::capture::decode(&body, seq, &mut strings) {
            Ok(item) => item,
            Err(e) => {
                // A record that does not decode may have a wrong length too
                // (a zero-filled tail, a damaged file): what follows cannot be
                // trusted to start where it says. What came before is kept.
                out.blocking_send(batch);
                return Err(err(format!("record {seq}: {e}")));
            }
        };
        seq += 1;
        match &item {
            SourceItem::Lost(l) => summary.lost = summary.lost.saturating_add(l.count),
            SourceItem::Event(e) => bytes += e.data.len(),
            SourceItem::Closed { .. } => {}
        }
        batch.push(item);
        if batch.len() >= BATCH || bytes >= BATCH_BYTES || reader.buffer().is_empty() {
            bytes = 0;
            if !out.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))) {
                hand_on_buffered_records(reader.buffer(), seq, &mut strings, &mut summary, out);
                return Ok(summary);
            }
        }
    }
    out.blocking_send(batch);
    if summary.skipped > REPORT_LINES {
        crate::diag!(
            "spf: {}: {} unreadable records skipped in all",
            path.display(),
            summary.skipped
        );
    }
    Ok(summary)
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads up to and including the next newline, keeping nothing.
fn skip_line<R: Read>(reader: &mut BufReader<R>) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

struct LineState {
    interner: Interner,
    summary: SourceSummary,
    batch: Batch,
    lineno: u64,
    seq: u64,
    bytes: usize,
    /// A syscall event was read: connection-view raw records that follow are
    /// derived from such events (see `line`).
    syscalls: bool,
    /// Records of decoders other than `raw`: derived, not replayed.
    derived: u64,
}

impl LineState {
    fn line(&mut self, text: &[u8], path: &std::path::Path) {
        self.lineno += 1;
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match parse_line(text, self.seq, &mut self.interner) {
            Ok(Parsed::Item(item)) => {
                match &item {
                    // Counts come from the input: they saturate rather than wrap.
                    SourceItem::Lost(l) => {
                        self.summary.lost = self.summary.lost.saturating_add(l.count)
                    }
                    SourceItem::Event(e) if e.via.is_none() => {
                        self.syscalls = true;
                        self.bytes += e.data.len();
                    }
                    // A capture written in the connection view holds the
                    // syscalls (`events = true`) and, after each, the raw
                    // decoder's records of it seen from the sender: those are
                    // derived, and replaying them would show their bytes twice.
                    SourceItem::Event(_) if self.syscalls => return,
                    SourceItem::Event(e) => self.bytes += e.data.len(),
                    SourceItem::Closed { .. } => {}
                }
                self.seq += 1;
                self.batch.push(item);
            }
            Ok(Parsed::Skip) => self.derived += 1,
            Err(e) => {
                self.summary.skipped += 1;
                if self.summary.skipped <= REPORT_LINES {
                    crate::diag!("spf: {}:{}: skipped: {e}", path.display(), self.lineno);
                }
            }
        }
    }
}

/// Shutdown began with lines already read from the input and not parsed: they
/// were received, so they are handed on too, while the pipeline still takes
/// input; nothing more is read. A last line without its newline is not whole
/// and stays out. When the pipeline has left, they are not even parsed (a
/// malformed one would be reported as skipped for nothing).
fn hand_on_buffered(buffered: &[u8], st: &mut LineState, path: &std::path::Path, out: &Emitter) {
    if out.closed() {
        return;
    }
    for line in buffered.split_inclusive(|&b| b == b'\n') {
        if let Some(line) = line.strip_suffix(b"\n") {
            st.line(line, path);
        }
    }
    out.blocking_send(std::mem::take(&mut st.batch));
}

/// As [`hand_on_buffered`], for a binary capture: the whole records already
/// read are handed on; one cut short by the end of the buffer, or that does
/// not decode, ends it.
fn hand_on_buffered_records(
    buffered: &[u8],
    mut seq: u64,
    strings: &mut crate::capture::Strings,
    summary: &mut SourceSummary,
    out: &Emitter,
) {
    if out.closed() {
        return;
    }
    let mut batch: Batch = Vec::new();
    for body in crate::capture::records(buffered) {
        let Ok(item) = body.and_then(|b| crate::capture::decode(b, seq, strings)) else {
            break;
        };
        seq += 1;
        if let SourceItem::Lost(l) = &item {
            summary.lost = summary.lost.saturating_add(l.count);
        }
        batch.push(item);
    }
    out.blocking_send(batch);
}

fn read_bytes(
    mut file: File,
    cfg: &FileSourceConfig,
    dir: Direction,
    out: &Emitter,
) -> Result<SourceSummary, SourceError> {
    let comm: Arc<str> = "file".into();
    let path: Arc<str> = cfg.path.display().to_string().into();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seq = 0u64;
    // One connection's bytes from its first: positions are known exactly.
    let mut seq_bytes = 0u64;
    let mut batch: Batch = Vec::new();
    let mut buf = vec![0u8; cfg.chunk];
    loop {
        // Fill a whole chunk unless the input ends: chunk boundaries then do not
        // depend on how the kernel split the reads.
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SourceError(format!(
                        "reading `{}`: {e}",
                        cfg.path.display()
                    )));
                }
            }
        }
        if filled == 0 {
            break;
        }
        batch.push(SourceItem::Event(Arc::new(Event {
            seq,
            ts_ns: seq,
            time_ns: start,
            pid: 0,
            tid: 0,
            comm: Arc::clone(&comm),
            path: Arc::clone(&path),
            dir,
            conn: 1,
            pos: Some(seq_bytes),
            len: filled as u64,
            data: buf[..filled].to_vec().into(),
            ..Event::default()
        })));
        seq_bytes += filled as u64;
        seq += 1;
        if (batch.len() >= BATCH || batch.len() * cfg.chunk >= BATCH_BYTES)
            && !out.blocking_send(std::mem::take(&mut batch))
        {
            return Ok(SourceSummary::default());
        }
        if filled < buf.len() {
            break;
        }
    }
    out.blocking_send(batch);
    Ok(SourceSummary::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_before_a_stop_are_handed_on() {
        // More lines than one batch, all in one read: the batch that fills
        // goes out as shutdown begins, and the lines read with it follow.
        let n = BATCH + 10;
        let text: String = (0..n)
            .map(|i| format!("{{\"ts_ns\":{i},\"decoder\":\"raw\",\"data_b64\":\"aGk=\"}}\n"))
            .collect();
        let reader = BufReader::with_capacity(text.len(), text.as_bytes());
        let (out, mut rx, stop) = Emitter::channel(4);
        stop.set();
        let summary = read_ndjson(reader, std::path::Path::new("t.ndjson"), &out).unwrap();
        assert_eq!(summary.skipped, 0);
        let mut got = 0;
        while let Ok(batch) = rx.try_recv() {
            got += batch.len();
        }
        assert_eq!(got, n);
    }

    #[test]
    fn records_read_before_a_stop_are_handed_on() {
        // As above, for a binary capture: every record is in the one read.
        let n = BATCH + 10;
        let mut bytes = Vec::new();
        for i in 0..n as u64 {
            let lost = crate::event::Lost {
                ts_ns: i,
                time_ns: i,
                count: 1,
            };
            crate::capture::encode(&SourceItem::Lost(lost), &mut bytes);
        }
        let reader = BufReader::with_capacity(bytes.len(), bytes.as_slice());
        let (out, mut rx, stop) = Emitter::channel(4);
        stop.set();
        let summary = read_capture(reader, std::path::Path::new("t.spfcap"), &out).unwrap();
        let mut got = 0;
        while let Ok(batch) = rx.try_recv() {
            got += batch.len();
        }
        assert_eq!(got, n);
        assert_eq!(summary.lost, n as u64);
    }

    #[test]
    fn lines_are_not_parsed_once_the_pipeline_left() {
        // The pipeline is gone (its receiver dropped): the malformed lines
        // read with the first batch are not parsed, so not reported skipped.
        let mut text: String = (0..BATCH)
            .map(|i| format!("{{\"ts_ns\":{i},\"decoder\":\"raw\",\"data_b64\":\"aGk=\"}}\n"))
            .collect();
        text.push_str(&"not json\n".repeat(10));
        let reader = BufReader::with_capacity(text.len(), text.as_bytes());
        let (out, rx, _stop) = Emitter::channel(4);
        drop(rx);
        let summary = read_ndjson(reader, std::path::Path::new("t.ndjson"), &out).unwrap();
        assert_eq!(summary.skipped, 0);
    }
}
