//! `[[sink]] type = "nats"`: records published to NATS JetStream.
//!
//! The pipeline calls [`Sink::write`] on its own task and must never wait for
//! the network, so the sink only encodes: records become NDJSON lines, lines
//! are gathered into messages (one subject per kind of record), and whole
//! messages go into a bounded buffer (memory, then an optional spool file).
//! A publisher on its own thread takes them from there in order (see
//! `publisher`). When the buffer is full, records are counted and dropped,
//! and a `lost` marker with their number follows in the stream.

mod batch;
mod publisher;
mod queue;
mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::{Record, RecordKind, Sink, SinkError, SinkReport};

use crate::connect::{ConnectConfig, hostname, subject_token};
use crate::wire::Kind;
use batch::{Batch, NodeName};
use queue::Queue;

pub fn register(reg: &mut Registry) {
    reg.sink("nats", |s: &mut Section<'_>| {
        let known = crate::connect::unknown_keys(s, SINK_KEYS);
        let cfg = s.parse::<NatsSinkConfig>()?;
        (cfg.validate(s) && known).then(|| Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

const SINK_KEYS: &[&str] = &[
    "node",
    "subject",
    "records",
    "buffer_bytes",
    "spool",
    "spool_bytes",
    "in_flight",
    "ack_timeout_ms",
    "drain_timeout_ms",
    "message_bytes",
    "format",
];

#[derive(Debug, Clone, Deserialize)]
pub struct NatsSinkConfig {
    #[serde(flatten)]
    pub connect: ConnectConfig,
    /// The name of this machine in every record (default: its host name).
    pub node: Option<String>,
    /// The subject; `{node}` and `{kind}` (`events`, `records`, `exchanges`)
    /// are filled in.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Which records to publish: `event` (raw syscall events, replayable),
    /// `frame`, `error`, `exchange`. Lost markers always go along.
    #[serde(default = "default_records")]
    pub records: Vec<String>,
    /// Memory for messages waiting to be published.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// A file for messages that do not fit in memory, and its largest size.
    pub spool: Option<PathBuf>,
    #[serde(default = "default_spool_bytes")]
    pub spool_bytes: u64,
    /// Messages published and not yet acknowledged, at most.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// How long one acknowledgement may take before the message goes again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// How long the end of a run waits for the last acknowledgements.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Largest message (of several records), within the server's max_payload.
    #[serde(default = "default_message_bytes")]
    pub message_bytes: usize,
    /// How raw events are published: `spfcap` (the binary capture format:
    /// for small events less than half the bytes for the server to store and
    /// send, and cheaper for the central spf to read) or `ndjson` (lines, as the
    /// ndjson sink writes them, for other readers of the stream).
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "spfcap".into()
}
fn default_subject() -> String {
    "spf.{node}.{kind}".into()
}
fn default_records() -> Vec<String> {
    vec!["event".into()]
}
fn default_buffer_bytes() -> usize {
    64 << 20
}
fn default_spool_bytes() -> u64 {
    1 << 30
}
fn default_in_flight() -> usize {
    256
}
fn default_ack_timeout_ms() -> u64 {
    5000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}
fn default_message_bytes() -> usize {
    256 << 10
}

impl NatsSinkConfig {
    fn validate(&self, s: &mut Section<'_>) -> bool {
        let mut ok = self.connect.validate(s);
        if self.records.is_empty() {
            s.error(
                "records",
                "name at least one: event, frame, error, exchange",
            );
            ok = false;
        }
        for r in &self.records {
            match RecordKind::parse(r) {
                Some(RecordKind::Lost) => {
                    s.error("records", "lost markers always go along; leave `lost` out");
                    ok = false;
                }
                Some(_) => {}
                None => {
                    s.error(
                        "records",
                        format!(
                            "unknown record kind `{r}`, expected event, frame, error or exchange"
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(n) = &self.node
            && n.trim().is_empty()
        {
            s.error("node", "must not be empty");
            ok = false;
        }
        let probe = self.subject_for(Kind::Events, "n");
        if probe.is_empty()
            || probe
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t']))
        {
            s.error(
                "subject",
                format!("`{}` is not a subject to publish to", self.subject),
            );
            ok = false;
        }
        let kinds: std::collections::BTreeSet<Kind> = self.kinds().into_iter().collect();
        if kinds.len() > 1 && !(self.subject.contains("{kind}")) {
            s.error(
                "subject",
                "records of several kinds need `{kind}` in the subject",
            );
            ok = false;
        }
        for (key, v) in [
            ("buffer_bytes", self.buffer_bytes as u64),
            ("in_flight", self.in_flight as u64),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("message_bytes", self.message_bytes as u64),
        ] {
            if v == 0 {
                s.error(key, "must be more than 0");
                ok = false;
            }
        }
        if !matches!(self.format.as_str(), "ndjson" | "spfcap") {
            s.error(
                "format",
                format!(
                    "unknown format `{}`, expected ndjson or spfcap",
                    self.format
                ),
            );
            ok = false;
        }
        if self.spool.is_none() && self.spool_bytes != default_spool_bytes() {
            s.error("spool_bytes", "needs `spool`, the file to use");
            ok = false;
        }
        if let Some(dir) = self
            .spool
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            s.error(
                "spool",
                format!("directory `{}` does not exist", dir.display()),
            );
            ok = false;
        }
        ok
    }

    fn kinds(&self) -> Vec<Kind> {
        self.records
            .iter()
            .filter_map(|r| RecordKind::parse(r))
            .map(batch::subject_kind)
            .collect()
    }

    fn node(&self) -> String {
        self.node.clone().unwrap_or_else(hostname)
    }

    fn subject_for(&self, kind: Kind, node: &str) -> String {
        self.subject
            .replace("{node}", &subject_token(node))
            .replace("{kind}", kind.as_str())
    }
}

impl SinkConfig for NatsSinkConfig {
    fn output_path(&self) -> Option<&std::path::Path> {
        self.spool.as_deref()
    }

    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        let mut v = crate::connect::NETWORK_SYSCALLS.to_vec();
        // The spool is emptied whenever the publisher catches up.
        v.extend([libc::SYS_ftruncate, libc::SYS_pwrite64]);
        v
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        NatsSink::start(self).map(|s| Box::new(s) as Box<dyn Sink>)
    }
}

pub struct NatsSink {
    describe: String,
    /// The node name, written into records.
    node: NodeName,
    /// Per subject kind: binary records instead of NDJSON lines.
    binary: [bool; 3],
    wanted: [bool; 5],
    /// The kind lost markers go with: events if published, else the first.
    marker_kind: Kind,
    batches: [Batch; 3],
    message_bytes: usize,
    /// Longest one record may be: the server's max_payload less room for
    /// the headers.
    max_record: usize,
    queue: Arc<Queue>,
    drain_timeout: Duration,
    warned_big: bool,
    warned_spool: bool,
    /// The connected client and its runtime, until the publisher starts.
    starter: Option<(tokio::runtime::Runtime, publisher::Publisher)>,
    /// What `close` found, for `report`.
    report: SinkReport,
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        if let Some((rt, publisher)) = self.starter.take() {
            drop(publisher);
            crate::connect::drop_runtime(rt);
        }
    }
}

/// What message headers take at most, left out of the server's max_payload.
const HEADER_ROOM: usize = 1024;

impl NatsSink {
    pub fn start(cfg: &NatsSinkConfig) -> Result<NatsSink, BuildError> {
        let node = cfg.node();
        let kinds = cfg.kinds();
        let subjects = Kind::ALL.map(|k| cfg.subject_for(k, &node));
        let describe = format!("nats {}", subjects[kinds[0].index()]);
        let spool = match &cfg.spool {
            Some(p) => Some(
                spool::Spool::open(p, cfg.spool_bytes)
                    .map_err(|e| BuildError::new(e.to_string()))?,
            ),
            None => None,
        };
        let queue = Arc::new(Queue::new(cfg.buffer_bytes, spool));
        let run = format!("{:x}", run_id());

        // Connect and check now, so that a wrong address, wrong credentials
        // or a missing stream stop spf before the run begins.
        let rt =
            crate::connect::runtime().map_err(|e| BuildError::new(format!("sink nats: {e}")))?;
        let connected = crate::connect::block_on(&rt, connect_and_check(cfg, &subjects, &kinds));
        let (client, js) = match connected {
            Ok(c) => c,
            Err(e) => {
                crate::connect::drop_runtime(rt);
                return Err(BuildError::new(format!("sink nats: {e}")));
            }
        };
        let max_payload = client.server_info().max_payload;
        let publisher = publisher::Publisher {
            js,
            client,
            queue: Arc::clone(&queue),
            subjects: subjects.clone(),
            node: node.clone(),
            run,
            window: cfg.in_flight,
            name: describe.clone(),
        };
        if max_payload <= HEADER_ROOM {
            return Err(BuildError::new(format!(
                "sink nats: the server's max_payload ({max_payload}) is too small"
            )));
        }
        let max_record = max_payload - HEADER_ROOM;
        let message_bytes = cfg.message_bytes.min(max_record);

        let mut wanted = [false; 5];
        for r in &cfg.records {
            if let Some(k) = RecordKind::parse(r) {
                wanted[k as usize] = true;
            }
        }
        wanted[RecordKind::Lost as usize] = true;
        let marker_kind = if kinds.contains(&Kind::Events) {
            Kind::Events
        } else {
            kinds[0]
        };
        // Only raw events (and the lost markers among them) have a binary
        // form; decoded records and exchanges stay NDJSON.
        let binary = Kind::ALL.map(|k| k == Kind::Events && cfg.format == "spfcap");
        Ok(NatsSink {
            describe,
            node: NodeName::new(&node),
            binary,
            wanted,
            marker_kind,
            batches: Kind::ALL.map(|k| Batch::new(message_bytes + 4096, binary[k.index()])),
            message_bytes,
            max_record,
            queue,
            drain_timeout: Duration::from_millis(cfg.drain_timeout_ms),
            warned_big: false,
            warned_spool: false,
            starter: Some((rt, publisher)),
            report: SinkReport::default(),
        })
    }

    /// Starts the publisher on a thread of its own, once the run begins (not
    /// in `build`: spf drops its privileges in between, with one thread).
    fn start_publisher(&mut self) -> Result<(), SinkError> {
        let Some((rt, publisher)) = self.starter.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("spf-nats-pub".into())
            .spawn(move || {
                rt.block_on(publisher.run());
                drop(rt);
            })
            .map(drop)
            .map_err(|e| SinkError::Other(format!("starting the nats publisher: {e}")))
    }

    /// Hands the message being filled for `kind` to the buffer.
    fn seal(&mut self, kind: Kind) {
        let b = &mut self.batches[kind.index()];
        if b.records == 0 {
            return;
        }
        let full = std::mem::replace(
            b,
            Batch::new(self.message_bytes + 4096, self.binary[kind.index()]),
        );
        let marker_binary = self.binary[self.marker_kind.index()];
        self.queue.offer(
            kind,
            full.records,
            full.ts,
            bytes::Bytes::from(full.buf),
            self.marker_kind,
            &|n, ts, time| bytes::Bytes::from(batch::lost_message(n, ts, time, marker_binary)),
        );
        if !self.warned_spool
            && let Some(e) = &self.queue.lock().spool_error
        {
            spf_pipeline::diag!("spf: {}: {e}; using memory only", self.describe);
            self.warned_spool = true;
        }
    }
}

impl Sink for NatsSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if self.starter.is_some() {
            self.start_publisher()?;
        }
        let rk = batch::kind_of(record);
        let kind = match rk {
            Some(k) if !self.wanted[k as usize] => return Ok(()),
            Some(k) => batch::subject_kind(k),
            None => self.marker_kind,
        };
        let b = &mut self.batches[kind.index()];
        let start = b.buf.len();
        b.push(record, &self.node);
        let line = b.buf.len() - start;
        // A record alone in a message, with the magic of a binary one.
        if line + b.head() > self.max_record {
            // Too long for the server. An event is cut to fit, leaving a
            // visible gap; any other record is counted as lost.
            b.buf.truncate(start);
            b.records -= 1;
            let cut = match record {
                Record::Decoded(d) if rk == Some(RecordKind::Event) => batch::cut_to_fit(
                    &d.event,
                    &d.decoder,
                    &self.node,
                    self.binary[kind.index()],
                    self.max_record,
                ),
                _ => None,
            };
            if !self.warned_big {
                spf_pipeline::diag!(
                    "spf: {}: a record of {line} bytes is longer than the server takes ({}); {}",
                    self.describe,
                    self.max_record,
                    if cut.is_some() {
                        "its data is cut to fit"
                    } else {
                        "counted as lost"
                    }
                );
                self.warned_big = true;
            }
            match cut {
                Some(r) => {
                    self.seal(kind);
                    self.batches[kind.index()].push(&r, &self.node);
                }
                None => {
                    self.queue.drop_records(1, b.ts);
                    return Ok(());
                }
            }
        } else if b.buf.len() > self.message_bytes && b.records > 1 {
            // This line would overfill the message: it starts the next one.
            let tail = b.buf.split_off(start);
            let ts = b.ts;
            b.records -= 1;
            self.seal(kind);
            let nb = &mut self.batches[kind.index()];
            nb.buf.extend_from_slice(&tail);
            nb.records = 1;
            nb.ts = ts;
        }
        if self.batches[kind.index()].buf.len() >= self.message_bytes {
            self.seal(kind);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        for k in Kind::ALL {
            self.seal(k);
        }
        Ok(())
    }

    fn wants_events(&self) -> bool {
        self.wanted[RecordKind::Event as usize]
    }

    fn report(&mut self) -> SinkReport {
        std::mem::take(&mut self.report)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.start_publisher()?;
        self.flush()?;
        let marker_kind = self.marker_kind;
        let marker_binary = self.binary[marker_kind.index()];
        let marker =
            |n, ts, time| bytes::Bytes::from(batch::lost_message(n, ts, time, marker_binary));
        let deadline = Instant::now() + self.drain_timeout;
        self.queue.lock().closing = true;
        loop {
            // The marker of the last records dropped goes in as soon as
            // there is room for it.
            self.queue.offer_marker(marker_kind, &marker);
            let st = self.queue.lock();
            if st.stopped || (st.is_empty() && st.in_flight == 0 && st.lost_pending == 0) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            drop(
                self.queue
                    .progress
                    .wait_timeout(st, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        let mut st = self.queue.lock();
        st.abandon = true;
        let (waiting, spooled) = st.waiting();
        let unacked = st.in_flight + waiting;
        let lost = st.lost_total;
        let unmarked = st.lost_pending;
        let acked = st.acked;
        drop(st);
        self.queue.ready.notify_one();
        let mut note = format!("{}: {acked} records acknowledged", self.describe);
        if lost > 0 {
            note.push_str(&format!(", {lost} lost (buffer full)"));
        }
        if unmarked > 0 {
            note.push_str(&format!(", {unmarked} of them in no published lost marker"));
        }
        if unacked > 0 || spooled {
            note.push_str(&format!(
                ", {unacked} not acknowledged{}",
                if spooled { " (more in the spool)" } else { "" }
            ));
        }
        self.report = SinkReport {
            undelivered: lost.saturating_add(unacked),
            note: Some(note),
        };
        Ok(())
    }
}

/// One id per sink per run: the start time, so that a restarted node never
/// reuses the sequence of an earlier run.
fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(48)
}

/// Connects and checks that JetStream has a stream for every subject the sink
/// publishes to.
async fn connect_and_check(
    cfg: &NatsSinkConfig,
    subjects: &[String; 3],
    kinds: &[Kind],
) -> Result<(async_nats::Client, async_nats::jetstream::Context), String> {
    let client = cfg.connect.connect("spf sink").await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(cfg.ack_timeout_ms))
        .max_ack_inflight(cfg.in_flight.max(1))
        .backpressure_on_inflight(true)
        .build(client.clone());
    for k in kinds {
        let subject = &subjects[k.index()];
        match js.stream_by_subject(subject.as_str()).await {
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "no JetStream stream takes subject `{subject}` on {} ({e}); \
                     create one (see docs/fleet.md)",
                    cfg.connect.describe()
                ));
            }
        }
    }
    Ok((client, js))
}
