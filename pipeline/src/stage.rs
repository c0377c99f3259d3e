//! The three stage traits. Built-ins and plugins implement the same traits; the
//! config picks one by its `type`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{Event, SourceItem};
use crate::record::Record;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Items travel from a source to the pipeline in batches: one channel operation per
/// batch instead of per event is what lets a replay move millions of events a second.
pub type Batch = Vec<SourceItem>;

/// Produces events. Runs as its own task; pushes batches into `out` until the input
/// ends (return `Ok`), a fatal error happens (return `Err`), or `out` reports that
/// the pipeline is shutting down.
pub trait Source: Send {
    /// A short description for messages, e.g. `file capture.ndjson`.
    fn describe(&self) -> String;

    /// How the source captures, when it has a choice worth telling (the unix
    /// source: which kernel hooks, and why): known once it is built, shown in
    /// the exit summary.
    fn capture(&self) -> Option<String> {
        None
    }

    fn run(self: Box<Self>, out: Emitter)
    -> BoxFuture<'static, Result<SourceSummary, SourceError>>;
}

/// What a source reports when it ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceSummary {
    /// Events the kernel could not hand over (already reported as `Lost` items too).
    pub lost: u64,
    /// Input the source could not read (e.g. malformed replay lines), each already
    /// reported on stderr.
    pub skipped: u64,
}

/// A source failure: a one-line message that says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The sending end a source pushes batches into.
#[derive(Clone)]
pub struct Emitter {
    tx: tokio::sync::mpsc::Sender<Batch>,
    stop: tokio_stop::StopFlag,
}

impl Emitter {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<Batch>, stop: tokio_stop::StopFlag) -> Self {
        Emitter { tx, stop }
    }

    /// Builds an emitter over a plain channel, for driving a source directly (tests,
    /// benchmarks). The returned flag stops the source when set.
    pub fn channel(
        capacity: usize,
    ) -> (
        Emitter,
        tokio::sync::mpsc::Receiver<Batch>,
        tokio_stop::StopFlag,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let stop = tokio_stop::StopFlag::default();
        (Emitter::new(tx, stop.clone()), rx, stop)
    }

    /// Hands a batch on. Returns false when the pipeline no longer takes input and
    /// the source should end.
    pub async fn send(&self, batch: Batch) -> bool {
        if batch.is_empty() {
            return !self.stopping();
        }
        self.tx.send(batch).await.is_ok() && !self.stopping()
    }

    /// Hands a batch on and says whether it reached the pipeline, which it may
    /// have even while shutdown began (check [`Emitter::stopping`] for that):
    /// for sources that acknowledge exactly what they handed over.
    pub async fn deliver(&self, batch: Batch) -> bool {
        batch.is_empty() || self.tx.send(batch).await.is_ok()
    }

    /// Like [`Emitter::send`], for sources that run on a blocking thread.
    pub fn blocking_send(&self, batch: Batch) -> bool {
        if batch.is_empty() {
            return !self.stopping();
        }
        self.tx.blocking_send(batch).is_ok() && !self.stopping()
    }

    /// True once the pipeline has left (its output closed, `--count`
    /// reached): nothing sent now is looked at.
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True once shutdown began: a source should stop reading and return.
    pub fn stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Resolves when shutdown begins, for sources that wait on input.
    pub async fn stopped(&self) {
        self.stop.wait().await
    }
}

/// A one-way shutdown flag that can be polled and awaited.
pub mod tokio_stop {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub struct StopFlag(Arc<Inner>);

    #[derive(Default)]
    struct Inner {
        set: AtomicBool,
        notify: tokio::sync::Notify,
    }

    impl StopFlag {
        pub fn set(&self) {
            self.0.set.store(true, Ordering::SeqCst);
            self.0.notify.notify_waiters();
        }

        pub fn is_set(&self) -> bool {
            self.0.set.load(Ordering::Relaxed)
        }

        pub async fn wait(&self) {
            loop {
                let notified = self.0.notify.notified();
                if self.is_set() {
                    return;
                }
                notified.await;
            }
        }
    }
}

/// Where a decoder puts its records.
///
/// In a run, records go on to the sinks in batches of [`Out::BATCH`] while the
/// decoder is still working, so that one event that yields millions of records
/// (a flood of tiny frames) never holds them all at once. Built with
/// [`Out::collect`], it keeps everything (tests, and decoders that wrap others).
pub struct Out<'a> {
    buf: &'a mut Vec<Record>,
    drain: Option<&'a mut Drain<'a>>,
}

/// What [`Out`] hands full batches to: it writes them and empties the vector.
pub type Drain<'a> = dyn FnMut(&mut Vec<Record>) + 'a;

impl<'a> Out<'a> {
    /// Records held at most before they are handed on.
    pub const BATCH: usize = 256;

    /// Collects every record into `buf`.
    pub fn collect(buf: &'a mut Vec<Record>) -> Self {
        Out { buf, drain: None }
    }

    /// Hands records to `drain` (which must empty the vector) every
    /// [`Out::BATCH`] records; whatever is left stays in `buf` for the caller.
    pub fn streaming(buf: &'a mut Vec<Record>, drain: &'a mut Drain<'a>) -> Self {
        Out {
            buf,
            drain: Some(drain),
        }
    }

    pub fn push(&mut self, record: Record) {
        self.buf.push(record);
        if self.buf.len() >= Self::BATCH
            && let Some(drain) = self.drain.as_mut()
        {
            drain(self.buf);
        }
    }

    /// Records pushed and not yet handed on.
    pub fn pending(&self) -> &[Record] {
        self.buf
    }
}

impl Extend<Record> for Out<'_> {
    fn extend<T: IntoIterator<Item = Record>>(&mut self, iter: T) {
        for r in iter {
            self.push(r);
        }
    }
}

/// Turns events into records, keeping whatever per-connection state it needs.
///
/// Calls are made from one thread at a time, in the order the reorder stage (and,
/// in the connection view, the connection stage) hands events on. Malformed
/// input must become [`Record`]s with an error body, never a panic; state that
/// input makes a decoder hold must stay within the run's
/// [`Limits`](crate::limits::Limits).
pub trait Decoder: Send {
    /// The name written in each record's `decoder` field.
    fn name(&self) -> &str;

    /// Decodes one event, handing any records it completes to `out`.
    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>);

    /// `count` events were lost somewhere: state that depends on seeing every byte
    /// (of any connection) can no longer be trusted.
    fn lost(&mut self, _count: u64, _out: &mut Out<'_>) {}

    /// A connection ended; its state can go.
    fn closed(&mut self, _conn: u64, _out: &mut Out<'_>) {}

    /// The input ended; emit whatever is still held back.
    fn finish(&mut self, _out: &mut Out<'_>) {}

    /// The run caught up with its input (or some time passed without any):
    /// hand on records held back only for speed, e.g. answers of a plugin in
    /// another process that streams events without waiting for each. A decoder
    /// that wraps others passes this on.
    fn flush(&mut self, _out: &mut Out<'_>) {}

    /// How sure this decoder is, from 0 (not its protocol) to 100 (certain),
    /// that a connection speaks its protocol, given the first bytes `data` seen in
    /// one direction of it (`event` is the event they came with: its role and
    /// direction say which side sent them). `auto` asks every candidate and
    /// picks the surest.
    fn detect(&mut self, _data: &[u8], _event: &Event) -> u8 {
        0
    }
}

/// Writes records somewhere.
pub trait Sink: Send {
    /// A short description for messages, e.g. `ndjson capture.ndjson`.
    fn describe(&self) -> String;

    fn write(&mut self, record: &Record) -> Result<(), SinkError>;

    /// Pushes buffered output out. Called at least once a second.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// The run is over: push everything out and wait until it is written (a
    /// sink that writes on a thread of its own waits for it here). Called once,
    /// at the end; by default a flush.
    fn close(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    /// True when the sink also wants every event as a raw record, in addition to
    /// the decoder's records, so that its output can be replayed later whatever the
    /// decoder was.
    fn wants_events(&self) -> bool {
        false
    }

    /// True for a sink that only sums up what goes by (a summary): it does
    /// not keep a run going on its own, so once the readers of every other
    /// sink are gone (`spf run --stats | head`) the run ends, and this sink
    /// still gets its [`Sink::close`].
    fn observer(&self) -> bool {
        false
    }

    /// Every event as the decoder gets it (in the connection view: the
    /// connection stage's, each byte once, seen from its sender), just before
    /// the decoder's records of it. For sinks that follow connections rather
    /// than records; the default does nothing.
    fn event(&mut self, _event: &Arc<Event>) -> Result<(), SinkError> {
        Ok(())
    }

    /// A connection ended (`ts_ns`: kernel clock), after the decoder's last
    /// records of it. For sinks that keep per-connection state.
    fn closed(&mut self, _conn: u64, _ts_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }

    /// What the sink has to say once closed, for the run's summary: a sink
    /// that hands records to something that acknowledges them (and waited for
    /// it in [`Sink::close`]) says what never arrived.
    fn report(&mut self) -> SinkReport {
        SinkReport::default()
    }
}

/// What a sink says of its output when the run ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Records it was given but could not deliver (dropped from a full buffer,
    /// or never acknowledged).
    pub undelivered: u64,
    /// One short line for the run's summary, e.g. what was acknowledged.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The reader went away (`spf ... | head`): a normal end, not a failure.
    #[error("output closed")]
    Closed,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl SinkError {
    /// Maps an I/O error, treating a broken pipe as the reader having gone away.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            SinkError::Closed
        } else {
            SinkError::Io {
                what: what.into(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_hands_on_full_batches_and_keeps_the_rest() {
        let mut written = Vec::new();
        let mut buf = Vec::new();
        let mut drain = |r: &mut Vec<Record>| written.append(r);
        let mut out = Out::streaming(&mut buf, &mut drain);
        let lost = |n| {
            Record::Lost(crate::event::Lost {
                ts_ns: n,
                time_ns: 0,
                count: 1,
            })
        };
        for n in 0..(Out::BATCH as u64 * 2 + 3) {
            out.push(lost(n));
            assert!(out.pending().len() < Out::BATCH);
        }
        assert_eq!(out.pending().len(), 3);
        assert_eq!(written.len(), Out::BATCH * 2);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn collecting_out_keeps_everything() {
        let mut buf = Vec::new();
        let mut out = Out::collect(&mut buf);
        out.extend((0..1000).map(|n| {
            Record::Lost(crate::event::Lost {
                ts_ns: n,
                time_ns: 0,
                count: 1,
            })
        }));
        assert_eq!(buf.len(), 1000);
    }
}
