//! The runner: source task → channel → reorder → decoder → sinks.
//!
//! The source runs as its own task (often on a blocking thread). Everything after
//! the channel runs in one task, in order, so decoders and sinks need no locking
//! and records come out in the order their events were handed on.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BuildContext, BuildError, Config, ReorderConfig};
use crate::connection::{Connections, Output};
use crate::event::{Event, SourceItem, View};
use crate::record::{Body, Record};
use crate::reorder::Reorder;
use crate::stage::tokio_stop::StopFlag;
use crate::stage::{Decoder, Emitter, Out, Sink, SinkError, SinkReport, Source, SourceError};

/// Batches in flight between the source and the pipeline. Bounded so a source that
/// outruns the decoder is slowed down (or, for the kernel, drops and counts) rather
/// than growing memory.
const CHANNEL_BATCHES: usize = 16;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// How long shutdown waits for the source to hand over what it still holds.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The stages of one run, built from a [`Config`].
pub struct Pipeline {
    source: Box<dyn Source>,
    view: View,
    reorder: ReorderConfig,
    decoder: Box<dyn Decoder>,
    decoder_is_raw: bool,
    sinks: Vec<Box<dyn Sink>>,
}

impl Pipeline {
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let ctx = BuildContext {
            view: config.view,
            source: config.source.describe(),
            decoder: config.decoder_type.clone(),
            ..BuildContext::new(config.limits.clone())
        };
        // Sinks first: a sink that cannot open its file should fail before a BPF
        // program is loaded.
        let sinks = config
            .sinks
            .iter()
            .map(|s| s.build(&ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let decoder = config.decoder.build(&ctx)?;
        let source = config.source.build(&ctx)?;
        Ok(Pipeline {
            source,
            view: config.view,
            reorder: config.reorder,
            decoder,
            decoder_is_raw: config.decoder_type == "raw",
            sinks,
        })
    }

    /// How a live source captures (which kernel hooks), once built: from
    /// then on every byte on the chosen sockets is captured.
    pub fn capture(&self) -> Option<String> {
        self.source.capture()
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show a live one-line status on stderr (only honoured when stderr is a TTY).
    pub live_status: bool,
    /// Stop after this many records are written (raw copies of events for
    /// `events = true` sinks not counted).
    pub max_records: Option<u64>,
    /// Only this connection's items.
    pub only_conn: Option<u64>,
}

impl RunOptions {
    /// The options a config's `[run]` section asks for.
    pub fn from_config(config: &Config, live_status: bool) -> Self {
        RunOptions {
            live_status,
            max_records: config.run.count,
            only_conn: config.run.conn,
        }
    }
}

/// What happened in a run, for the exit summary. Every count saturates at
/// `u64::MAX` rather than wrapping: the counts come from input (a replayed `lost`
/// marker can say anything), and a wrapped sum would report a huge loss as a
/// small one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    /// Bytes the events moved, each once where the capture counted stream
    /// positions (a receive leaves out what its sender's capture holds).
    pub bytes: u64,
    /// Records written, by decoder name (plus `lost` markers under `lost`).
    pub records: BTreeMap<String, u64>,
    pub errors: u64,
    /// Events the kernel could not hand over at all (the sum of the `lost`
    /// markers): they never reached the pipeline.
    pub lost: u64,
    /// Events handed over with fewer bytes than the syscall moved (`snaplen`, a
    /// full ring part way through, a fault): seen, but cut.
    pub truncated: u64,
    /// Input the source skipped as unreadable.
    pub skipped: u64,
    pub connections: u64,
    /// True when the output's reader went away (`| head`): a normal end.
    pub output_closed: bool,
    /// Items the reorder stage had to hand on before their window passed.
    pub reorder_forced: u64,
    /// How the source captured (see [`Source::capture`]).
    pub capture: Option<String>,
    /// Records sinks were given but could not deliver (see [`SinkReport`]).
    pub undelivered: u64,
    /// What sinks had to say at the end, one short line each.
    pub sink_notes: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "{}, {}, {}",
            plural(self.events, "event"),
            human_bytes(self.bytes),
            plural(self.connections, "connection")
        )?;
        let recs: Vec<String> = self
            .records
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !recs.is_empty() {
            write!(f, "; records: {}", recs.join(", "))?;
        }
        write!(
            f,
            "; errors {}; dropped {}; truncated {}",
            self.errors, self.lost, self.truncated
        )?;
        if self.skipped > 0 {
            write!(f, "; skipped input {}", self.skipped)?;
        }
        if let Some(c) = &self.capture {
            write!(f, "; capture: {c}")?;
        }
        if self.undelivered > 0 {
            write!(f, "; undelivered {}", self.undelivered)?;
        }
        for note in &self.sink_notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source failed: {0}")]
    Source(#[from] SourceError),
    #[error("sink {sink}: {error}")]
    Sink { sink: String, error: SinkError },
}

/// A run's outcome: the summary is there even when it failed, so the exit line can
/// still say what was processed.
pub struct Outcome {
    pub summary: Summary,
    pub result: Result<(), RunError>,
}

struct Core {
    reorder: Reorder,
    /// The connection stage, in the connection view.
    connections: Option<Connections>,
    decoder: Box<dyn Decoder>,
    decoder_is_raw: bool,
    writer: Writer,
    records: Vec<Record>,
    conns: FxHashSet<u64>,
    only_conn: Option<u64>,
    /// The syscall view was told once that receives of this input leave out
    /// what their senders' capture held.
    told_covered: bool,
}

/// The sinks and what the run counts of the records written to them.
struct Writer {
    sinks: Vec<Box<dyn Sink>>,
    /// Sinks whose reader went away (`| head`): skipped from then on, while the
    /// others (a capture file) keep everything.
    closed: Vec<bool>,
    /// [`Sink::observer`] of each sink.
    observers: Vec<bool>,
    event_sinks: bool,
    /// In the syscall view with a decoder other than `raw`, the runner writes
    /// every event as a raw record to the sinks that want events: raw records
    /// the decoder makes (`auto` on a connection it did not recognise, a
    /// tunnel after an upgrade) would repeat those bytes there as events, and
    /// a replay would see them twice. (In the connection view such records
    /// are marked `via`, and a replay skips them.)
    events_written: bool,
    /// The `decoder` name of the raw records written for `events = true` sinks,
    /// shared rather than allocated per event.
    raw_name: Arc<str>,
    summary: Summary,
    per_decoder: BTreeMap<Arc<str>, u64>,
    failure: Option<RunError>,
    /// Records left before `max_records` ends the run.
    remaining: Option<u64>,
}

impl Core {
    /// Takes one item the reorder stage released: counts it, writes it as a
    /// raw record to the sinks that keep every event, and hands it to the
    /// decoder (through the connection stage in the connection view).
    fn handle(&mut self, item: SourceItem, now: Instant) {
        if self.done() {
            return;
        }
        if let Some(only) = self.only_conn {
            match &item {
                SourceItem::Event(e) if e.conn != only => return,
                SourceItem::Closed { conn, .. } if *conn != only => return,
                _ => {}
            }
        }
        match &item {
            SourceItem::Event(ev) => {
                if self.connections.is_none() && ev.skip > 0 && !self.told_covered {
                    // Only a capture made in the connection view has them:
                    // a live syscall view counts no positions.
                    self.told_covered = true;
                    // A closed stderr must not end the run.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "spf: this input was captured in the connection view: each byte was \
                         captured once, by its send or by its receive, so the syscall view \
                         shows some syscalls without bytes the other end's capture held (and \
                         decoders see such connections in part); the connection view (the \
                         default) shows them whole"
                    );
                }
                let w = &mut self.writer;
                w.summary.events = w.summary.events.saturating_add(1);
                // Each byte once: what a receive left out (`skip`) its
                // sender's capture counted already.
                w.summary.bytes = w
                    .summary
                    .bytes
                    .saturating_add(ev.len.saturating_sub(ev.skip));
                w.summary.truncated = w.summary.truncated.saturating_add(u64::from(ev.truncated));
                // Bounded: only for the status line, so forgetting old connections
                // under extreme churn is fine.
                if self.conns.len() < 1_000_000 && self.conns.insert(ev.conn) {
                    w.summary.connections = w.summary.connections.saturating_add(1);
                }
                // The raw decoder's own records are the events themselves,
                // except in the connection view, where they are its events.
                if w.event_sinks && !(self.decoder_is_raw && self.connections.is_none()) {
                    let raw = Record::raw(Arc::clone(ev), Arc::clone(&w.raw_name));
                    w.write_to(&raw, true);
                }
            }
            SourceItem::Closed { conn, .. } => {
                self.conns.remove(conn);
            }
            SourceItem::Lost(_) => {}
        }
        let Core {
            connections,
            decoder,
            writer,
            records,
            ..
        } = self;
        match connections {
            Some(c) => c.push(item, now, &mut |o| decode(decoder, writer, records, o)),
            None => decode(decoder, writer, records, Output::Item(item)),
        }
    }

    /// Lets the decoder hand on what it held back for speed: the run caught up.
    fn flush_decoder(&mut self) {
        let Core {
            decoder,
            writer,
            records,
            ..
        } = self;
        if writer.done() {
            return;
        }
        let mut drain = |r: &mut Vec<Record>| writer.emit(r);
        decoder.flush(&mut Out::streaming(records, &mut drain));
        writer.emit(records);
    }

    /// Lets the connection stage hand on what waited too long for missing
    /// bytes when no new item came.
    fn tick(&mut self, now: Instant) {
        let Core {
            connections,
            decoder,
            writer,
            records,
            ..
        } = self;
        if let Some(c) = connections {
            c.tick(now, &mut |o| decode(decoder, writer, records, o));
        }
    }

    fn finish(&mut self) {
        let mut released = Vec::new();
        self.reorder.drain(&mut |i| released.push(i));
        let now = Instant::now();
        for i in released {
            self.handle(i, now);
        }
        let Core {
            connections,
            decoder,
            writer,
            records,
            ..
        } = self;
        if let Some(c) = connections {
            c.finish(&mut |o| decode(decoder, writer, records, o));
        }
        let mut drain = |r: &mut Vec<Record>| writer.emit(r);
        decoder.finish(&mut Out::streaming(records, &mut drain));
        writer.emit(records);
        writer.close();
        writer.summary.reorder_forced = self.reorder.forced;
        for (k, v) in &writer.per_decoder {
            let n = writer.summary.records.entry(k.to_string()).or_default();
            *n = n.saturating_add(*v);
        }
    }

    fn done(&self) -> bool {
        self.writer.done()
    }
}

/// Hands one item to the decoder and its records to the sinks.
fn decode(
    decoder: &mut Box<dyn Decoder>,
    writer: &mut Writer,
    records: &mut Vec<Record>,
    item: Output,
) {
    if writer.done() {
        return;
    }
    // Sinks that follow connections see each event as the decoder does (in
    // the connection view: the connection stage's, each byte once), before
    // the decoder's records of it.
    if let Output::Item(SourceItem::Event(ev)) = &item {
        writer.event(ev);
    }
    let mut drain = |r: &mut Vec<Record>| writer.emit(r);
    let mut out = Out::streaming(records, &mut drain);
    let mut closed = None;
    match item {
        Output::Item(SourceItem::Event(ev)) => decoder.decode(&ev, &mut out),
        Output::Item(SourceItem::Lost(l)) => out.push(Record::Lost(l)),
        Output::LostUnplaced(l) => {
            decoder.lost(l.count, &mut out);
            out.push(Record::Lost(l));
        }
        Output::Item(SourceItem::Closed { conn, ts_ns }) => {
            decoder.closed(conn, &mut out);
            closed = Some((conn, ts_ns));
        }
    }
    writer.emit(records);
    // After the decoder's last records of the connection, so that a sink sees
    // them before it lets the connection go.
    if let Some((conn, ts_ns)) = closed {
        writer.closed(conn, ts_ns);
    }
}

impl Writer {
    /// Writes and counts `records`, leaving the vector empty.
    fn emit(&mut self, records: &mut Vec<Record>) {
        for r in records.drain(..) {
            if self.remaining == Some(0) {
                continue;
            }
            match &r {
                Record::Lost(l) => {
                    self.summary.lost = self.summary.lost.saturating_add(l.count);
                    let n = self.summary.records.entry("lost".into()).or_default();
                    *n = n.saturating_add(1);
                }
                Record::Decoded(d) => {
                    if r.is_error() {
                        self.summary.errors = self.summary.errors.saturating_add(1);
                    }
                    // Keyed by the shared name: no String allocated per record.
                    let n = self.per_decoder.entry(Arc::clone(&d.decoder)).or_default();
                    *n = n.saturating_add(1);
                }
            }
            self.write_to(&r, false);
            // After the write: the count's last record is written, then the
            // run is done.
            if let Some(left) = self.remaining.as_mut() {
                *left -= 1;
            }
        }
    }

    /// Writes one record to every sink (or, with `events_only`, to the sinks that
    /// asked for raw events).
    fn write_to(&mut self, r: &Record, events_only: bool) {
        if self.done() {
            return;
        }
        for i in 0..self.sinks.len() {
            if self.closed[i] || (events_only && !self.sinks[i].wants_events()) {
                continue;
            }
            if !events_only
                && self.events_written
                && self.sinks[i].wants_events()
                && matches!(r, Record::Decoded(d) if matches!(d.body, Body::Raw))
            {
                continue;
            }
            if let Err(e) = self.sinks[i].write(r) {
                self.sink_failed(i, e);
            }
        }
    }

    fn sink_failed(&mut self, i: usize, e: SinkError) {
        match e {
            SinkError::Closed => {
                self.closed[i] = true;
                self.summary.output_closed = true;
            }
            error => {
                if self.failure.is_none() {
                    self.failure = Some(RunError::Sink {
                        sink: self.sinks[i].describe(),
                        error,
                    });
                }
            }
        }
    }

    fn flush(&mut self) {
        self.each_sink(|s| s.flush());
    }

    fn event(&mut self, ev: &Arc<Event>) {
        self.each_sink(|s| s.event(ev));
    }

    fn closed(&mut self, conn: u64, ts_ns: u64) {
        self.each_sink(|s| s.closed(conn, ts_ns));
    }

    /// Calls `f` on every sink whose reader is still there.
    fn each_sink(&mut self, mut f: impl FnMut(&mut dyn Sink) -> Result<(), SinkError>) {
        for i in 0..self.sinks.len() {
            if self.closed[i] {
                continue;
            }
            if let Err(e) = f(self.sinks[i].as_mut()) {
                self.sink_failed(i, e);
            }
        }
    }

    /// The end of the run: every sink writes what it holds and says how it went.
    fn close(&mut self) {
        self.each_sink(|s| s.close());
        for i in 0..self.sinks.len() {
            if self.closed[i] {
                continue;
            }
            let SinkReport { undelivered, note } = self.sinks[i].report();
            self.summary.undelivered = self.summary.undelivered.saturating_add(undelivered);
            self.summary.sink_notes.extend(note);
        }
    }

    /// True once a sink failed, or the reader of every sink that keeps a run
    /// going went away (observers alone keep it going only when there is
    /// nothing else).
    fn done(&self) -> bool {
        self.failure.is_some()
            || self.remaining == Some(0)
            || if self.observers.iter().all(|&o| o) {
                self.closed.iter().all(|&c| c)
            } else {
                self.closed
                    .iter()
                    .zip(&self.observers)
                    .all(|(&c, &o)| c || o)
            }
    }
}

/// Runs a pipeline until its source ends, `stop` is set (Ctrl-C), or its output
/// closes. On every path the reorder buffer is drained and every sink flushed.
pub async fn run(pipeline: Pipeline, opts: RunOptions, stop: StopFlag) -> Outcome {
    let Pipeline {
        source,
        view,
        reorder,
        decoder,
        decoder_is_raw,
        sinks,
    } = pipeline;
    let capture = source.capture();
    let (tx, mut rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
    let emitter = Emitter::new(tx, stop.clone());
    let mut source_task = tokio::spawn(source.run(emitter));
    let event_sinks = sinks.iter().any(|s| s.wants_events());
    let mut core = Core {
        reorder: Reorder::new(&reorder),
        connections: (view == View::Connection).then(Connections::new),
        decoder,
        decoder_is_raw,
        writer: Writer {
            closed: vec![false; sinks.len()],
            observers: sinks.iter().map(|s| s.observer()).collect(),
            sinks,
            event_sinks,
            events_written: event_sinks && !decoder_is_raw && view == View::Syscalls,
            raw_name: "raw".into(),
            summary: Summary {
                capture,
                ..Summary::default()
            },
            per_decoder: BTreeMap::new(),
            failure: None,
            remaining: opts.max_records,
        },
        records: Vec::new(),
        conns: FxHashSet::default(),
        only_conn: opts.only_conn,
        told_covered: false,
    };
    // When stdout is the terminal too, the records are the live view: a status line
    // on the same screen would only get in their way.
    let mut status = Status::new(
        opts.live_status && std::io::stderr().is_terminal() && !std::io::stdout().is_terminal(),
    );
    let mut ticker = tokio::time::interval(
        STATUS_EVERY.min(Duration::from_millis(reorder.window_ms.clamp(5, 250))),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    let mut released = Vec::new();
    let mut source_result = None;
    // From 0: a SIGUSR1 that came while the pipeline was built is answered
    // at the first tick.
    let mut usr1 = 0;

    loop {
        tokio::select! {
            biased;
            _ = stop.wait() => break,
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let now = Instant::now();
                for item in batch {
                    core.reorder.push(item, now, &mut |i| released.push(i));
                }
                for i in released.drain(..) {
                    core.handle(i, now);
                }
                // Caught up with the source: push output out now, so a quiet
                // capture shows up at once rather than at the next periodic flush.
                if rx.is_empty() {
                    core.flush_decoder();
                    core.writer.flush();
                    last_flush = now;
                }
                if core.done() {
                    break;
                }
            }
            r = &mut source_task, if source_result.is_none() => {
                // The source ended; keep reading until the channel is empty.
                source_result = Some(r);
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                core.reorder.tick(now, &mut |i| released.push(i));
                // Items the window just let go are output now, not at the next
                // periodic flush.
                let any = !released.is_empty();
                for i in released.drain(..) {
                    core.handle(i, now);
                }
                core.tick(now);
                core.flush_decoder();
                if any || now.duration_since(last_flush) >= FLUSH_EVERY {
                    core.writer.flush();
                    last_flush = now;
                }
                if core.done() {
                    break;
                }
                // Asked for, so shown even with -q; over the status line.
                let signals = crate::signal::received();
                if signals != usr1 {
                    usr1 = signals;
                    status.clear();
                    let _ = writeln!(
                        std::io::stderr(),
                        "spf (on SIGUSR1): {}",
                        core.writer.summary
                    );
                }
                status.update(&core.writer.summary, core.conns.len());
            }
        }
    }

    // Shutdown: tell the source to stop and keep taking what it hands over (a
    // live source drains the kernel's buffer one last time) until it lets go of
    // the channel. A source blocked on input that never comes (a quiet FIFO)
    // cannot be interrupted: it gets a deadline. Then drain the reorder buffer and
    // flush every sink.
    stop.set();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !core.done() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(batch)) => {
                let now = Instant::now();
                for item in batch {
                    core.reorder.push(item, now, &mut |i| released.push(i));
                }
                for i in released.drain(..) {
                    core.handle(i, now);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    rx.close();
    while let Ok(batch) = rx.try_recv() {
        let now = Instant::now();
        for item in batch {
            core.reorder.push(item, now, &mut |i| released.push(i));
        }
        for i in released.drain(..) {
            core.handle(i, now);
        }
    }
    core.finish();
    status.clear();

    let source_result = match source_result {
        Some(r) => Some(r),
        // A source blocked on input (a quiet FIFO, an idle socket) cannot be
        // interrupted; give it a moment to notice the stop flag, then leave it.
        None => tokio::time::timeout(Duration::from_millis(100), &mut source_task)
            .await
            .ok(),
    };
    let mut result = match core.writer.failure.take() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    match source_result {
        Some(Ok(Ok(s))) => {
            // Lost markers were counted as they passed; the source's own count can
            // only be higher (markers it could not deliver during shutdown).
            core.writer.summary.lost = core.writer.summary.lost.max(s.lost);
            core.writer.summary.skipped = s.skipped;
        }
        Some(Ok(Err(e))) => {
            if result.is_ok() && !core.writer.summary.output_closed {
                result = Err(RunError::Source(e));
            }
        }
        Some(Err(join)) => {
            if result.is_ok() {
                result = Err(RunError::Source(SourceError(format!(
                    "source task failed: {join}"
                ))));
            }
        }
        None => source_task.abort(),
    }
    Outcome {
        summary: core.writer.summary,
        result,
    }
}

/// The live status line on stderr.
struct Status {
    enabled: bool,
    last: Instant,
    last_events: u64,
    last_bytes: u64,
    shown: bool,
}

impl Status {
    fn new(enabled: bool) -> Self {
        Status {
            enabled,
            last: Instant::now(),
            last_events: 0,
            last_bytes: 0,
            shown: false,
        }
    }

    fn update(&mut self, s: &Summary, conns: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if dt < STATUS_EVERY.as_secs_f64() {
            return;
        }
        let eps = s.events.saturating_sub(self.last_events) as f64 / dt;
        let bps = s.bytes.saturating_sub(self.last_bytes) as f64 / dt;
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[K{:.0} events/s, {}/s, open connections {conns}, dropped {}",
            eps,
            human_bytes(bps as u64),
            s.lost
        );
        self.shown = true;
        self.last = now;
        self.last_events = s.events;
        self.last_bytes = s.bytes;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::event::Lost;
    use crate::stage::{BoxFuture, SourceSummary};

    /// Hands over fixed items, then ends.
    struct Items(Vec<SourceItem>);

    impl Source for Items {
        fn describe(&self) -> String {
            "items".into()
        }

        fn run(
            self: Box<Self>,
            out: Emitter,
        ) -> BoxFuture<'static, Result<SourceSummary, SourceError>> {
            Box::pin(async move {
                out.send(self.0).await;
                Ok(SourceSummary::default())
            })
        }
    }

    /// Makes one record per event.
    struct Echo;

    impl Decoder for Echo {
        fn name(&self) -> &str {
            "echo"
        }

        fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
            out.push(Record::error(Arc::clone(event), "echo".into(), None, "x"));
        }
    }

    /// Logs what it is handed, one line per call.
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Log {
        fn log(&self, line: String) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(line);
            Ok(())
        }
    }

    impl Sink for Log {
        fn describe(&self) -> String {
            "log".into()
        }

        fn write(&mut self, record: &Record) -> Result<(), SinkError> {
            self.log(match record {
                Record::Decoded(d) => format!("record {}", d.event.seq),
                Record::Lost(l) => format!("lost {}", l.count),
            })
        }

        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }

        fn event(&mut self, event: &Arc<Event>) -> Result<(), SinkError> {
            self.log(format!("event {}", event.seq))
        }

        fn closed(&mut self, conn: u64, ts_ns: u64) -> Result<(), SinkError> {
            self.log(format!("closed {conn} {ts_ns}"))
        }

        fn close(&mut self) -> Result<(), SinkError> {
            self.log("close".into())
        }
    }

    fn event(seq: u64) -> SourceItem {
        SourceItem::Event(Arc::new(Event {
            seq,
            ts_ns: seq,
            conn: 9,
            ..Event::default()
        }))
    }

    /// `items` through the syscall view without reordering, the `Echo`
    /// decoder and a `Log` sink writing into `log`.
    fn echo_pipeline(items: Vec<SourceItem>, log: Arc<Mutex<Vec<String>>>) -> Pipeline {
        Pipeline {
            source: Box::new(Items(items)),
            view: View::Syscalls,
            reorder: ReorderConfig {
                window_ms: 0,
                ..ReorderConfig::default()
            },
            decoder: Box::new(Echo),
            decoder_is_raw: false,
            sinks: vec![Box::new(Log(log))],
        }
    }

    #[tokio::test]
    async fn sinks_see_events_before_their_records_then_closed_connections_and_the_end() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let pipeline = echo_pipeline(
            vec![
                event(1),
                SourceItem::Lost(Lost {
                    ts_ns: 2,
                    time_ns: 0,
                    count: 3,
                }),
                event(3),
                SourceItem::Closed { conn: 9, ts_ns: 4 },
            ],
            Arc::clone(&log),
        );
        let outcome = run(pipeline, RunOptions::default(), StopFlag::default()).await;
        outcome.result.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "event 1",
                "record 1",
                "lost 3",
                "event 3",
                "record 3",
                "closed 9 4",
                "close"
            ]
        );
    }

    #[tokio::test]
    async fn the_summary_counts_each_byte_once() {
        // A send of 5 bytes, the receive its capture covers (skip = len), and
        // a receive that holds 2 bytes of its own after 3 covered ones.
        let ev = |seq: u64, len: u64, skip: u64| {
            SourceItem::Event(Arc::new(Event {
                seq,
                ts_ns: seq,
                conn: 9,
                len,
                skip,
                ..Event::default()
            }))
        };
        let pipeline = echo_pipeline(
            vec![ev(1, 5, 0), ev(2, 5, 5), ev(3, 5, 3)],
            Arc::new(Mutex::new(Vec::new())),
        );
        let outcome = run(pipeline, RunOptions::default(), StopFlag::default()).await;
        outcome.result.unwrap();
        assert_eq!((outcome.summary.events, outcome.summary.bytes), (3, 7));
    }
}
