//! A file written by a thread of its own, for the sinks that write files.
//!
//! A `write` to a file can stall for as long as the kernel takes to write back
//! dirty pages; done on the pipeline's task, the stall holds up decoding, and
//! the kernel's ring buffer fills and drops events meanwhile. Here the pipeline
//! fills a buffer and hands it to the writer thread, which does the `write`.
//! Memory stays bounded: at most [`IN_FLIGHT`] buffers wait for the thread;
//! past that the pipeline waits, as it would have without the thread.
//!
//! Big payloads need not be copied into the buffer: [`FileWriter::put_bytes`]
//! places one between what the buffer holds so far and what comes next, and
//! the thread hands the kernel both where they are (`writev`), saving a copy
//! of every such byte.

use std::fs::File;
use std::io::{IoSlice, Write as _};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::stage::SinkError;

/// Bytes gathered before a buffer goes to the writer thread.
pub const BUF: usize = 1 << 20;
/// Buffers handed over and not yet written, at most.
const IN_FLIGHT: usize = 4;
/// Payloads from this size on are written from where they are; a smaller one
/// costs less to copy than a slice of its own in the write.
const SHARE_FROM: usize = 4096;

/// What one write puts in the file: `buf`, with each shared piece placed at
/// its offset in `buf` (before the byte there).
struct Batch {
    buf: Vec<u8>,
    shared: Vec<(usize, Bytes)>,
}

impl Batch {
    fn write_to(&self, file: &mut File) -> std::io::Result<()> {
        if self.shared.is_empty() {
            return file.write_all(&self.buf);
        }
        let mut parts = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut from = 0;
        for (at, data) in &self.shared {
            parts.push(IoSlice::new(&self.buf[from..*at]));
            parts.push(IoSlice::new(data));
            from = *at;
        }
        parts.push(IoSlice::new(&self.buf[from..]));
        parts.retain(|p| !p.is_empty());
        write_all_vectored(file, &mut parts)
    }
}

/// Writes every slice, in order, however the kernel splits the writes.
/// (`Write::write_all_vectored` is not stable.)
fn write_all_vectored(file: &mut File, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    // The kernel takes at most IOV_MAX (1024) slices per call.
    const IOV_MAX: usize = 1024;
    while !parts.is_empty() {
        let n = parts.len().min(IOV_MAX);
        match file.write_vectored(&parts[..n]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => IoSlice::advance_slices(&mut parts, k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Msg {
    Data(Batch),
    /// Answered once everything before it is written.
    Sync(SyncSender<()>),
}

pub struct FileWriter {
    what: String,
    buf: Vec<u8>,
    /// Pieces placed between the buffer's bytes (see
    /// [`FileWriter::put_bytes`]), and their bytes.
    shared: Vec<(usize, Bytes)>,
    shared_bytes: usize,
    /// The file until the thread that writes it starts: with the first
    /// buffer, not when the sink is built, since spf drops its privileges
    /// after building and before any thread runs.
    file: Option<File>,
    tx: Option<SyncSender<Msg>>,
    /// Written buffers coming back, to be filled again.
    free: Option<Receiver<Batch>>,
    error: Arc<Mutex<Option<std::io::Error>>>,
    thread: Option<JoinHandle<()>>,
}

impl FileWriter {
    /// A writer for `file`; `what` names it in errors.
    pub fn new(file: File, what: String) -> std::io::Result<Self> {
        Ok(FileWriter {
            what,
            buf: Vec::with_capacity(BUF),
            shared: Vec::new(),
            shared_bytes: 0,
            file: Some(file),
            tx: None,
            free: None,
            error: Arc::new(Mutex::new(None)),
            thread: None,
        })
    }

    /// Starts the writer thread, once.
    fn start(&mut self) -> std::io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let (tx, rx) = sync_channel::<Msg>(IN_FLIGHT);
        let (give_back, free) = sync_channel::<Batch>(IN_FLIGHT + 1);
        let err = Arc::clone(&self.error);
        let thread = std::thread::Builder::new()
            .name("spf-writer".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Data(mut b) => {
                            let failed = err.lock().map(|e| e.is_some()).unwrap_or(true);
                            if !failed && let Err(e) = b.write_to(&mut file) {
                                if let Ok(mut slot) = err.lock() {
                                    *slot = Some(e);
                                }
                            }
                            b.buf.clear();
                            // Lets go of the shared pieces now, not when the
                            // batch is filled again.
                            b.shared.clear();
                            let _ = give_back.try_send(b);
                        }
                        Msg::Sync(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        self.tx = Some(tx);
        self.free = Some(free);
        self.thread = Some(thread);
        Ok(())
    }

    /// The buffer to append output to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends `data` after what the buffer holds so far: a big payload
    /// without copying it (the writer thread writes it from where it is), a
    /// small one copied.
    pub fn put_bytes(&mut self, data: &Bytes) {
        if data.len() < SHARE_FROM {
            self.buf.extend_from_slice(data);
            return;
        }
        self.shared_bytes += data.len();
        self.shared.push((self.buf.len(), data.clone()));
    }

    /// Hands the buffer over once it is full.
    pub fn maybe_send(&mut self) -> Result<(), SinkError> {
        if self.buf.len() + self.shared_bytes >= BUF {
            self.send()?;
        }
        Ok(())
    }

    /// Hands over what the buffer holds; does not wait for the write.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.send()
    }

    /// Hands over what is left and waits until everything is written.
    pub fn close(&mut self) -> Result<(), SinkError> {
        self.send()?;
        if let Some(tx) = &self.tx {
            let (done_tx, done_rx) = sync_channel(1);
            if tx.send(Msg::Sync(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
        self.check()
    }

    fn send(&mut self) -> Result<(), SinkError> {
        self.check()?;
        if self.buf.is_empty() && self.shared.is_empty() {
            return Ok(());
        }
        self.start()
            .map_err(|e| SinkError::io(format!("{}: starting the writer thread", self.what), e))?;
        let mut next = self
            .free
            .as_ref()
            .and_then(|f| f.try_recv().ok())
            .unwrap_or_else(|| Batch {
                buf: Vec::with_capacity(BUF),
                shared: Vec::new(),
            });
        // `next` takes what was gathered; the emptied batch gathers anew.
        std::mem::swap(&mut self.buf, &mut next.buf);
        std::mem::swap(&mut self.shared, &mut next.shared);
        self.shared_bytes = 0;
        match &self.tx {
            Some(tx) if tx.send(Msg::Data(next)).is_ok() => Ok(()),
            _ => Err(SinkError::Other(format!(
                "{}: the writer thread ended",
                self.what
            ))),
        }
    }

    /// A write the thread failed, if any.
    fn check(&self) -> Result<(), SinkError> {
        let taken = self.error.lock().ok().and_then(|mut e| e.take());
        match taken {
            None => Ok(()),
            Some(e) => {
                // Keep failing: nothing after a failed write is written.
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(std::io::Error::new(e.kind(), e.to_string()));
                }
                Err(SinkError::io(self.what.clone(), e))
            }
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        let _ = self.send();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_handed_over_is_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = FileWriter::new(File::create(&path).unwrap(), "test".into()).unwrap();
        let mut want = Vec::new();
        for i in 0..5000u32 {
            let line = format!("line {i} {}\n", "x".repeat((i % 700) as usize));
            w.buf().extend_from_slice(line.as_bytes());
            want.extend_from_slice(line.as_bytes());
            w.maybe_send().unwrap();
            if i % 997 == 0 {
                w.flush().unwrap();
            }
        }
        w.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn shared_pieces_land_between_the_buffered_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = FileWriter::new(File::create(&path).unwrap(), "test".into()).unwrap();
        let mut want = Vec::new();
        // Pieces on both sides of SHARE_FROM; some written in place follow
        // each other directly.
        for i in 0..6000u32 {
            let head = format!("<{i}>");
            if i % 3 != 0 {
                w.buf().extend_from_slice(head.as_bytes());
                want.extend_from_slice(head.as_bytes());
            }
            let n = if i % 2 == 0 { SHARE_FROM } else { 1 } + (i % 300) as usize;
            let data = Bytes::from(vec![(i % 251) as u8; n]);
            want.extend_from_slice(&data);
            w.put_bytes(&data);
            w.maybe_send().unwrap();
            if i % 2500 == 0 {
                w.flush().unwrap();
            }
        }
        w.buf().extend_from_slice(b"end");
        want.extend_from_slice(b"end");
        w.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_failed_write_is_reported() {
        // /dev/full refuses every write with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut w = FileWriter::new(full, "/dev/full".into()).unwrap();
        w.buf().extend_from_slice(b"data");
        let e = w.close().unwrap_err();
        assert!(e.to_string().contains("/dev/full"), "{e}");
        assert!(w.flush().is_err(), "it keeps failing");
    }
}
