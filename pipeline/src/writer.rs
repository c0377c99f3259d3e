//! A file written by a thread of its own, for the sinks that write files.
//!
//! A `write` to a file can stall for as long as the kernel takes to write back
//! dirty pages; done on the pipeline's task, the stall holds up decoding, and
//! the kernel's ring buffer fills and drops events meanwhile. Here the pipeline
//! fills a buffer and hands it to the writer thread, which does the `write`.
//! Memory stays bounded: at most [`IN_FLIGHT`] buffers wait for the thread;
//! past that the pipeline waits, as it would have without the thread.

use std::fs::File;
use std::io::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::stage::SinkError;

/// Bytes gathered before a buffer goes to the writer thread.
pub const BUF: usize = 1 << 20;
/// Buffers handed over and not yet written, at most.
const IN_FLIGHT: usize = 4;

enum Msg {
    Data(Vec<u8>),
    /// Answered once everything before it is written.
    Sync(SyncSender<()>),
}

pub struct FileWriter {
    what: String,
    buf: Vec<u8>,
    /// The file until the thread that writes it starts: with the first
    /// buffer, not when the sink is built, since spf drops its privileges
    /// after building and before any thread runs.
    file: Option<File>,
    tx: Option<SyncSender<Msg>>,
    /// Written buffers coming back, to be filled again.
    free: Option<Receiver<Vec<u8>>>,
    error: Arc<Mutex<Option<std::io::Error>>>,
    thread: Option<JoinHandle<()>>,
}

impl FileWriter {
    /// A writer for `file`; `what` names it in errors.
    pub fn new(file: File, what: String) -> std::io::Result<Self> {
        Ok(FileWriter {
            what,
            buf: Vec::with_capacity(BUF),
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
        let (give_back, free) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let err = Arc::clone(&self.error);
        let thread = std::thread::Builder::new()
            .name("spf-writer".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Data(mut b) => {
                            let failed = err.lock().map(|e| e.is_some()).unwrap_or(true);
                            if !failed && let Err(e) = file.write_all(&b) {
                                if let Ok(mut slot) = err.lock() {
                                    *slot = Some(e);
                                }
                            }
                            b.clear();
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

    /// Hands the buffer over once it is full.
    pub fn maybe_send(&mut self) -> Result<(), SinkError> {
        if self.buf.len() >= BUF {
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
        if self.buf.is_empty() {
            return Ok(());
        }
        self.start()
            .map_err(|e| SinkError::io(format!("{}: starting the writer thread", self.what), e))?;
        let next = self
            .free
            .as_ref()
            .and_then(|f| f.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(BUF));
        let full = std::mem::replace(&mut self.buf, next);
        match &self.tx {
            Some(tx) if tx.send(Msg::Data(full)).is_ok() => Ok(()),
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
