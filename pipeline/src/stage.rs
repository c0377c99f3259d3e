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

    /// Like [`Emitter::send`], for sources that run on a blocking thread.
    pub fn blocking_send(&self, batch: Batch) -> bool {
        if batch.is_empty() {
            return !self.stopping();
        }
        self.tx.blocking_send(batch).is_ok() && !self.stopping()
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

/// Turns events into records, keeping whatever per-connection state it needs.
///
/// Calls are made from one thread at a time, in the order the reorder stage hands
/// events on. Malformed input must become [`Record`]s with an error body, never a
/// panic.
pub trait Decoder: Send {
    /// The name written in each record's `decoder` field.
    fn name(&self) -> &str;

    /// Decodes one event, appending any records it completes to `out`.
    fn decode(&mut self, event: &Arc<Event>, out: &mut Vec<Record>);

    /// `count` events were lost somewhere: state that depends on seeing every byte
    /// (of any connection) can no longer be trusted.
    fn lost(&mut self, _count: u64, _out: &mut Vec<Record>) {}

    /// A connection ended; its state can go.
    fn closed(&mut self, _conn: u64, _out: &mut Vec<Record>) {}

    /// The input ended; emit whatever is still held back.
    fn finish(&mut self, _out: &mut Vec<Record>) {}
}

/// Writes records somewhere.
pub trait Sink: Send {
    /// A short description for messages, e.g. `ndjson capture.ndjson`.
    fn describe(&self) -> String;

    fn write(&mut self, record: &Record) -> Result<(), SinkError>;

    /// Pushes buffered output out. Called at least once a second and at shutdown.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// True when the sink also wants every event as a raw record, in addition to
    /// the decoder's records, so that its output can be replayed later whatever the
    /// decoder was.
    fn wants_events(&self) -> bool {
        false
    }
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
