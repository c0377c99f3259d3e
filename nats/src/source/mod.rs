//! `[source] type = "nats"`: raw events of many nodes, consumed from a
//! JetStream stream with a durable consumer, so that a restarted spf goes on
//! where the last one stopped.
//!
//! Messages are pulled in bounded batches; each is put back in its sender's
//! order (repeats dropped, see `sequence`), its lines or binary records parsed
//! as a capture file's are (see `parse`), each event's connection and socket ids moved into its node's own range
//! (see `ids`), and handed to the pipeline. A message is acknowledged once
//! everything in it was handed over (acknowledging one acknowledges all before
//! it), and at the end every pull is finished and acknowledged, so that a
//! clean stop leaves nothing delivered and unacknowledged.

mod ids;
mod parse;
mod sequence;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt as _;
use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SourceConfig};
use spf_pipeline::stage::tokio_stop::StopFlag;
use spf_pipeline::{BoxFuture, Emitter, Source, SourceError, SourceSummary};

use crate::connect::ConnectConfig;
use crate::wire;
use parse::{ParseThread, Parser, Received};
use sequence::{Place, Resequencer, Sender};

pub fn register(reg: &mut Registry) {
    reg.source("nats", |s: &mut Section<'_>| {
        let known = crate::connect::unknown_keys(s, SOURCE_KEYS);
        let cfg = s.parse::<NatsSourceConfig>()?;
        (cfg.validate(s) && known).then(|| Box::new(cfg) as Box<dyn SourceConfig>)
    });
}

const SOURCE_KEYS: &[&str] = &[
    "stream",
    "durable",
    "subjects",
    "exit_at_end",
    "batch",
    "gap_timeout_ms",
    "hold_messages",
    "create",
];

#[derive(Debug, Clone, Deserialize)]
pub struct NatsSourceConfig {
    #[serde(flatten)]
    pub connect: ConnectConfig,
    /// The stream to read.
    pub stream: String,
    /// The durable consumer's name: its position survives restarts.
    pub durable: String,
    /// Which subjects of the stream (one filter, wildcards allowed).
    #[serde(default = "default_subjects")]
    pub subjects: String,
    /// Stop once everything in the stream was read (decode what is there,
    /// then exit), instead of waiting for more.
    #[serde(default)]
    pub exit_at_end: bool,
    /// Messages per pull.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long the source waits for a node's missing message before it
    /// counts its records as lost and goes on.
    #[serde(default = "default_gap_timeout_ms")]
    pub gap_timeout_ms: u64,
    /// Messages held out of order, at most, over all nodes.
    #[serde(default = "default_hold_messages")]
    pub hold_messages: usize,
    /// Create the stream when it does not exist.
    pub create: Option<CreateStream>,
}

/// The stream spf creates on request (`[source.create]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    #[serde(default = "default_stream_subjects")]
    pub subjects: Vec<String>,
    /// `file` (kept across restarts of the server) or `memory`.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Oldest messages go when the stream holds more (0: no limit).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: i64,
    /// Messages older than this go (0: kept until max_bytes).
    #[serde(default)]
    pub max_age_s: u64,
    /// How long JetStream remembers message ids to drop repeats.
    #[serde(default = "default_duplicate_window_s")]
    pub duplicate_window_s: u64,
}

fn default_subjects() -> String {
    "spf.*.events".into()
}
fn default_batch() -> usize {
    64
}
fn default_gap_timeout_ms() -> u64 {
    5000
}
fn default_hold_messages() -> usize {
    1024
}
fn default_stream_subjects() -> Vec<String> {
    vec!["spf.>".into()]
}
fn default_storage() -> String {
    "file".into()
}
fn default_max_bytes() -> i64 {
    10 << 30
}
fn default_duplicate_window_s() -> u64 {
    120
}

/// Bytes of held messages, at most.
const HOLD_BYTES: usize = 256 << 20;
/// Longest wait of one pull: the source notices a stop within it.
const PULL_EXPIRES: Duration = Duration::from_millis(250);
/// How long past its end a pull's messages are waited for before the server
/// is taken to be gone.
const PULL_SILENCE: Duration = Duration::from_secs(30);
/// Bytes of messages one pull takes at least room for: with the next pull
/// asked for ahead, two pulls' messages may be on their way at once, and a
/// server drops a client that has more than its `max_pending` (64 MB by
/// default) waiting as a slow consumer; so 16 MiB each, or one message of the
/// server's `max_payload` where that is more (see `pull_bytes`).
const PULL_BYTES: usize = 16 << 20;
/// How long the final acknowledgement may take.
const FINAL_ACK: Duration = Duration::from_secs(2);

impl NatsSourceConfig {
    fn validate(&self, s: &mut Section<'_>) -> bool {
        let mut ok = self.connect.validate(s);
        for (key, v) in [("stream", &self.stream), ("durable", &self.durable)] {
            if v.is_empty() || v.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                s.error(key, "must be a name without `.`, `*`, `>`, `/` or spaces");
                ok = false;
            }
        }
        if self.subjects.is_empty() || self.subjects.contains(' ') {
            s.error("subjects", "must be one subject filter, e.g. spf.*.events");
            ok = false;
        }
        for (key, v) in [
            ("batch", self.batch as u64),
            ("gap_timeout_ms", self.gap_timeout_ms),
            ("hold_messages", self.hold_messages as u64),
        ] {
            if v == 0 {
                s.error(key, "must be more than 0");
                ok = false;
            }
        }
        if let Some(c) = &self.create
            && !matches!(c.storage.as_str(), "file" | "memory")
        {
            s.error("create", "storage must be `file` or `memory`");
            ok = false;
        }
        ok
    }
}

impl SourceConfig for NatsSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, BuildError> {
        // Connect and look up the stream now, so that a wrong address, wrong
        // credentials or a missing stream stop spf before the run begins; the
        // client is driven by a thread of its own once the run begins.
        let rt =
            crate::connect::runtime().map_err(|e| BuildError::new(format!("source nats: {e}")))?;
        let (consumer, js) = match crate::connect::block_on(&rt, open(self)) {
            Ok(c) => c,
            Err(e) => {
                crate::connect::drop_runtime(rt);
                return Err(BuildError::new(format!("source nats: {e}")));
            }
        };
        Ok(Box::new(NatsSource {
            describe: format!(
                "nats {} stream {} consumer {}",
                self.connect.describe(),
                self.stream,
                self.durable
            ),
            parked: Some((rt, consumer, js)),
            cfg: self.clone(),
        }))
    }

    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        crate::connect::NETWORK_SYSCALLS.to_vec()
    }
}

pub struct NatsSource {
    describe: String,
    /// The connected client's runtime and the consumer, until the run.
    parked: Option<(
        tokio::runtime::Runtime,
        PullConsumer,
        async_nats::jetstream::Context,
    )>,
    cfg: NatsSourceConfig,
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        if let Some((rt, consumer, js)) = self.parked.take() {
            drop((consumer, js));
            crate::connect::drop_runtime(rt);
        }
    }
}

impl Source for NatsSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn run(
        mut self: Box<Self>,
        out: Emitter,
    ) -> BoxFuture<'static, Result<SourceSummary, SourceError>> {
        let parked = self.parked.take();
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (rt, consumer, js) =
                parked.ok_or_else(|| SourceError("the nats source ran twice".into()))?;
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("spf-nats-src".into())
                .spawn(move || {
                    let r = match ParseThread::start() {
                        Ok(parsing) => {
                            rt.block_on(Consume::new(&cfg, consumer, js, out, parsing).run())
                        }
                        Err(e) => Err(SourceError(format!("starting the nats source: {e}"))),
                    };
                    let _ = done_tx.send(r);
                    drop(rt);
                })
                .map_err(|e| SourceError(format!("starting the nats source: {e}")))?;
            done_rx
                .await
                .map_err(|_| SourceError("the nats source thread failed".into()))?
        })
    }
}

/// Connects, finds (or creates) the stream and the durable consumer.
async fn open(
    cfg: &NatsSourceConfig,
) -> Result<(PullConsumer, async_nats::jetstream::Context), String> {
    let client = cfg.connect.connect("spf source").await?;
    let js = async_nats::jetstream::new(client);
    let stream = match js.get_stream(&cfg.stream).await {
        Ok(s) => s,
        Err(e) => match &cfg.create {
            Some(c) => js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: cfg.stream.clone(),
                    subjects: c.subjects.clone(),
                    storage: if c.storage == "memory" {
                        async_nats::jetstream::stream::StorageType::Memory
                    } else {
                        async_nats::jetstream::stream::StorageType::File
                    },
                    max_bytes: if c.max_bytes > 0 { c.max_bytes } else { -1 },
                    max_age: Duration::from_secs(c.max_age_s),
                    duplicate_window: Duration::from_secs(c.duplicate_window_s),
                    ..Default::default()
                })
                .await
                .inspect(|_| {
                    spf_pipeline::diag!(
                        "spf: nats source: created stream `{}` for subjects {}",
                        cfg.stream,
                        c.subjects.join(", ")
                    );
                })
                .map_err(|e| format!("cannot create stream `{}`: {e}", cfg.stream))?,
            None => {
                return Err(format!(
                    "stream `{}` not found on {} ({e}); create it (see docs/fleet.md) \
                     or add [source.create]",
                    cfg.stream,
                    cfg.connect.describe()
                ));
            }
        },
    };
    let config = pull::Config {
        durable_name: Some(cfg.durable.clone()),
        filter_subject: cfg.subjects.clone(),
        deliver_policy: DeliverPolicy::All,
        // Acknowledging one message acknowledges all before it: one ack per
        // pull is enough, and the position is exactly what was handed over.
        ack_policy: AckPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: (cfg.hold_messages + cfg.batch * 4) as i64,
        ..Default::default()
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(&cfg.durable, config)
        .await
        .map_err(|e| format!("consumer `{}` on stream `{}`: {e}", cfg.durable, cfg.stream))?;
    let filter = &consumer.cached_info().config.filter_subject;
    if *filter != cfg.subjects {
        return Err(format!(
            "consumer `{}` exists with subjects `{filter}`, not `{}`; \
             use another durable name or delete it",
            cfg.durable, cfg.subjects
        ));
    }
    Ok((consumer, js))
}

/// One pull: the messages the server sends to its inbox, until it says the
/// pull is over.
struct Pull {
    sub: async_nats::Subscriber,
    left: usize,
}

enum PullItem {
    Msg(async_nats::Message),
    End,
    Error(String),
}

impl Pull {
    async fn next(&mut self) -> PullItem {
        use async_nats::StatusCode;
        loop {
            if self.left == 0 {
                return PullItem::End;
            }
            // Only a server that went silent gets here: a pull's messages are
            // waited for no longer than it lasts, plus a margin.
            let m = match tokio::time::timeout(PULL_EXPIRES + PULL_SILENCE, self.sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return PullItem::Error("pull: subscription closed".into()),
                Err(_) => return PullItem::Error("pull: no answer from the server".into()),
            };
            match m.status {
                None | Some(StatusCode::OK) => {
                    self.left -= 1;
                    return PullItem::Msg(m);
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // No messages (404), the pull expired (408), or it ended for
                // a reason the server gives (409: e.g. a message larger than
                // the pull takes, the consumer deleted).
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::TIMEOUT) => return PullItem::End,
                Some(s) => {
                    let why = m.description.unwrap_or_default();
                    return if why.contains("Batch Completed") {
                        PullItem::End
                    } else {
                        PullItem::Error(format!("pull ended: {s} {why}"))
                    };
                }
            }
        }
    }
}

/// One received message, until it is acknowledged.
struct Pending {
    acker: Option<Message>,
    done: bool,
}

struct Consume {
    consumer: PullConsumer,
    js: async_nats::jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`
    next_subject: String,
    out: Emitter,
    exit_at_end: bool,
    batch: usize,
    seq: Resequencer<Received>,
    /// Received messages in order of arrival, from ticket `base` on.
    pending: VecDeque<Pending>,
    base: u64,
    /// Messages in order, to be parsed.
    ready: Vec<sequence::Out<Received>>,
    /// None only while the parsing thread has it.
    parser: Option<Box<Parser>>,
    parsing: ParseThread,
    summary: SourceSummary,
    stop: StopFlag,
}

impl Consume {
    fn new(
        cfg: &NatsSourceConfig,
        consumer: PullConsumer,
        js: async_nats::jetstream::Context,
        out: Emitter,
        parsing: ParseThread,
    ) -> Self {
        let stop = StopFlag::default();
        let next_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", cfg.stream, cfg.durable);
        Consume {
            consumer,
            js,
            next_subject,
            out,
            exit_at_end: cfg.exit_at_end,
            batch: cfg.batch,
            seq: Resequencer::new(sequence::Limits {
                messages: cfg.hold_messages,
                bytes: HOLD_BYTES,
                wait: Duration::from_millis(cfg.gap_timeout_ms),
                senders: 4096,
            }),
            pending: VecDeque::new(),
            base: 0,
            ready: Vec::new(),
            parser: Some(Box::default()),
            parsing,
            summary: SourceSummary::default(),
            stop,
        }
    }

    async fn run(mut self) -> Result<SourceSummary, SourceError> {
        if self.exit_at_end && self.caught_up().await? {
            return Ok(self.summary);
        }
        let stopped = self.out.clone();
        let stop = self.stop.clone();
        // The pipeline's stop, seen between pulls: a pull always finishes.
        let watcher = async move {
            stopped.stopped().await;
            stop.set();
        };
        let work = self.pull_loop();
        tokio::pin!(work);
        tokio::pin!(watcher);
        let mut watching = true;
        loop {
            tokio::select! {
                r = &mut work => break r,
                _ = &mut watcher, if watching => watching = false,
            }
        }
    }

    async fn pull_loop(&mut self) -> Result<SourceSummary, SourceError> {
        let mut last_error: Option<String> = None;
        // The next pull, asked for before the current one is processed, so
        // that the server fills it meanwhile. Every pull asked for is
        // processed to its end before the source ends: a clean stop leaves no
        // message delivered and unacknowledged.
        let mut next: Option<Pull> = None;
        loop {
            if self.stop.is_set() && next.is_none() {
                break;
            }
            let mut batch = match next.take() {
                Some(b) => b,
                None => match self.pull().await {
                    Ok(b) => b,
                    Err(e) => {
                        self.report_error(&mut last_error, e);
                        self.idle().await?;
                        continue;
                    }
                },
            };
            // With `exit_at_end`, the pull ahead is asked for only if the
            // first message says that this pull will not take all there is:
            // one asked for past the end would be answered only when it
            // expires, and the run would wait for that.
            let mut ask_ahead = !self.exit_at_end;
            if ask_ahead && !self.stop.is_set() {
                // A failed request is asked again on the next round.
                next = self.pull().await.ok();
            }
            let mut at_end = false;
            let mut got = 0usize;
            loop {
                let msg = match batch.next().await {
                    PullItem::Msg(m) => m,
                    PullItem::End => break,
                    PullItem::Error(e) => {
                        self.report_error(&mut last_error, e);
                        break;
                    }
                };
                got += 1;
                if last_error.take().is_some() {
                    spf_pipeline::diag!("spf: nats source: receiving again");
                }
                let msg = Message {
                    message: msg,
                    context: self.js.clone(),
                };
                let pending = msg.info().map_or(u64::MAX, |i| i.pending);
                at_end = pending == 0;
                if !ask_ahead {
                    ask_ahead = true;
                    if pending > batch.left as u64 && !self.stop.is_set() {
                        next = self.pull().await.ok();
                    }
                }
                self.receive(msg);
                // Each message already holds many records when they come
                // fast; handing each on at once keeps a quiet node's events
                // from waiting for the pull to end.
                self.hand_over().await?;
            }
            self.tick();
            self.hand_over().await?;
            self.ack(false).await;
            if self.exit_at_end
                && !self.stop.is_set()
                && (at_end || (got == 0 && self.caught_up().await?))
            {
                // Caught up: finish the pull already asked for, then end.
                self.stop.set();
            }
            if got == 0 && last_error.is_some() {
                self.idle().await?;
            }
        }
        // The end: what waits for missing messages goes on with a gap, so
        // that a restart (which begins after the last acknowledged message)
        // loses nothing that arrived.
        let mut ready = Vec::new();
        self.seq.drain(&mut |o| ready.push(o));
        self.ready.extend(ready);
        self.hand_over().await?;
        self.ack(true).await;
        let parser = self.parser.take().unwrap_or_default();
        self.summary.lost = self.summary.lost.saturating_add(parser.summary.lost);
        self.summary.skipped = self.summary.skipped.saturating_add(parser.summary.skipped);
        if parser.crowded() {
            spf_pipeline::diag!(
                "spf: nats source: more than {} nodes: the later ones share connection ids",
                ids::MAX_NODES
            );
        }
        Ok(self.summary)
    }

    /// Asks for up to `batch` messages (at most [`PULL_BYTES`] of them, or one
    /// message of the server's largest size), for at most
    /// [`PULL_EXPIRES`].
    ///
    /// Not the client's own batch pull: that one ends at a deadline counted
    /// from the request even while the messages it received wait unread in
    /// its buffer (a pipeline slower than the server for a few seconds), and
    /// drops them; they would come again only after the acknowledgement wait,
    /// after later ones. Here a pull ends only when the server says so.
    async fn pull(&self) -> Result<Pull, String> {
        let client = self.js.client();
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("pull: {e}"))?;
        // Any message must fit in one pull: a message larger than its
        // max_bytes would never be delivered.
        let pull_bytes = PULL_BYTES.max(client.server_info().max_payload.saturating_add(64 << 10));
        let request = format!(
            "{{\"batch\":{},\"max_bytes\":{},\"expires\":{}}}",
            self.batch,
            pull_bytes,
            PULL_EXPIRES.as_nanos()
        );
        client
            .publish_with_reply(self.next_subject.clone(), inbox, request.into())
            .await
            .map_err(|e| format!("pull: {e}"))?;
        Ok(Pull {
            sub,
            left: self.batch,
        })
    }

    /// True when the consumer has nothing left to deliver.
    async fn caught_up(&mut self) -> Result<bool, SourceError> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| SourceError(format!("nats source: consumer info: {e}")))?;
        Ok(info.num_pending == 0 && self.seq.held() == 0)
    }

    fn report_error(&self, last: &mut Option<String>, e: String) {
        if last.as_deref() != Some(e.as_str()) {
            spf_pipeline::diag!("spf: nats source: {e}; retrying");
        }
        *last = Some(e);
    }

    /// A pause after an error, cut short by a stop.
    async fn idle(&mut self) -> Result<(), SourceError> {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.out.stopped()).await;
        if self.out.stopping() {
            self.stop.set();
        }
        Ok(())
    }

    /// Takes one message: in its sender's order, repeats dropped.
    fn receive(&mut self, msg: Message) {
        let ticket = self.base + self.pending.len() as u64;
        let h = msg.headers.as_ref();
        let get = |k: &str| h.and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        let node: Arc<str> = get(wire::NODE)
            .map(Arc::from)
            .unwrap_or_else(|| node_of_subject(&msg.subject));
        let received = Received {
            node: Arc::clone(&node),
            payload: msg.payload.clone(),
            ticket,
        };
        self.pending.push_back(Pending {
            acker: Some(msg.clone()),
            done: false,
        });
        let place = match (num(wire::SEQ), num(wire::FIRST), num(wire::RECORDS)) {
            (Some(seq), Some(first), Some(records)) => Some(Place {
                seq,
                first,
                records,
            }),
            _ => None,
        };
        let Some(place) = place else {
            // Not from an spf sink: no order to restore, nothing to compare.
            self.emit(sequence::Out::Msg(received));
            return;
        };
        let sender = Sender {
            node,
            run: get(wire::RUN).unwrap_or_default().into(),
            kind: msg.subject.split('.').next_back().unwrap_or("").into(),
        };
        let bytes = received.payload.len();
        let mut ready = Vec::new();
        let r = self
            .seq
            .push(&sender, place, bytes, received, Instant::now(), &mut |o| {
                ready.push(o)
            });
        if let Err(dup) = r {
            self.mark_done(dup.ticket);
        }
        for o in ready {
            self.emit(o);
        }
    }

    fn tick(&mut self) {
        let mut ready = Vec::new();
        self.seq.tick(Instant::now(), &mut |o| ready.push(o));
        for o in ready {
            self.emit(o);
        }
    }

    /// A message (or a gap) in order: parsed at the next hand-over.
    fn emit(&mut self, o: sequence::Out<Received>) {
        self.ready.push(o);
    }

    fn mark_done(&mut self, ticket: u64) {
        if let Some(p) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            p.done = true;
        }
    }

    /// Hands the items over; the messages they came from are then done.
    async fn hand_over(&mut self) -> Result<(), SourceError> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let p = self
            .parser
            .take()
            .ok_or_else(|| SourceError("nats source: the parser was lost".into()))?;
        let ready = std::mem::take(&mut self.ready);
        let mut p = self
            .parsing
            .parse(p, ready)
            .await
            .ok_or_else(|| SourceError("nats source: the parsing thread failed".into()))?;
        let items = std::mem::take(&mut p.items);
        let completes = std::mem::take(&mut p.completes);
        self.parser = Some(p);
        if !items.is_empty() && !self.out.deliver(items).await {
            // The pipeline is gone: what was not handed over stays
            // unacknowledged and is delivered again to the next run.
            self.stop.set();
            return Ok(());
        }
        for t in completes {
            self.mark_done(t);
        }
        if self.out.stopping() {
            self.stop.set();
        }
        Ok(())
    }

    /// Acknowledges the last message before which everything is done; at the
    /// end, waits for the server to confirm it, and asks for the rest (not
    /// handed over) to be delivered again at once.
    async fn ack(&mut self, last: bool) {
        let mut upto = None;
        while self.pending.front().is_some_and(|p| p.done) {
            if let Some(p) = self.pending.pop_front() {
                upto = p.acker.or(upto);
            }
            self.base += 1;
        }
        if let Some(m) = upto {
            let r = if last {
                tokio::time::timeout(FINAL_ACK, m.double_ack())
                    .await
                    .map_err(|_| "no confirmation".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            } else {
                m.ack().await.map_err(|e| e.to_string())
            };
            if let Err(e) = r {
                spf_pipeline::diag!("spf: nats source: acknowledging: {e}");
            }
        }
        if last {
            for p in self.pending.drain(..) {
                if let Some(m) = p.acker {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
    }
}

/// The node token of a subject `spf.<node>.<kind>`, for messages without the
/// node header.
fn node_of_subject(subject: &str) -> Arc<str> {
    let parts: Vec<&str> = subject.split('.').collect();
    Arc::from(if parts.len() >= 3 {
        parts[parts.len() - 2]
    } else {
        ""
    })
}
