//! The `unix` source: drains the probe's ring buffer on a blocking thread and
//! turns its records into events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libbpf_rs::{RingBuffer, RingBufferBuilder};
use spf_pipeline::config::BuildError;
use spf_pipeline::{
    Batch, BoxFuture, Direction, Emitter, Event, Lost, Role, SockKind, Source, SourceError,
    SourceItem, SourceSummary,
};

use crate::config::UnixConfig;
use crate::pool::Pool;
use crate::probe::Probe;
use crate::proc_net::Resolver;
use crate::skel::types::{spf_chunk, spf_event, spf_event_flags, spf_rec_kind};

// The record kinds and flags, from the C header through the skeleton.
const REC_EVENT: u32 = spf_rec_kind::SPF_REC_EVENT.0;
const REC_CHUNK: u32 = spf_rec_kind::SPF_REC_CHUNK.0;
const REC_CLOSED: u32 = spf_rec_kind::SPF_REC_CLOSED.0;
const F_RECV: u32 = spf_event_flags::SPF_F_RECV.0;
const F_TRUNCATED: u32 = spf_event_flags::SPF_F_TRUNCATED.0;
const F_CHUNKED: u32 = spf_event_flags::SPF_F_CHUNKED.0;
const F_CONN_BY_PATH: u32 = spf_event_flags::SPF_F_CONN_BY_PATH.0;
const F_POS: u32 = spf_event_flags::SPF_F_POS.0;
const F_RPOS: u32 = spf_event_flags::SPF_F_RPOS.0;
const F_TO_HI: u32 = spf_event_flags::SPF_F_TO_HI.0;
const F_CLIENT: u32 = spf_event_flags::SPF_F_CLIENT.0;
const F_SERVER: u32 = spf_event_flags::SPF_F_SERVER.0;
const F_DROPPED: u32 = spf_event_flags::SPF_F_DROPPED.0;
/// Bytes of an event record's header: the struct up to its `path`.
const EVENT_FIXED: usize = std::mem::offset_of!(spf_event, path);

/// Items per batch handed to the pipeline.
const BATCH: usize = 1024;
/// Data per batch: big events are handed on sooner, so that their buffers
/// come back to the pool (see pool.rs) while the reader still needs them.
const BATCH_BYTES: usize = 1 << 20;
/// How long the reader sleeps between drains. The probe wakes it early only
/// when the ring fills up (see wake_bytes), so this bounds both how late a
/// small event is handed on and how late a stop is noticed.
const POLL: Duration = Duration::from_millis(10);

/// The running probe and what it needs to turn records into events.
pub struct UnixSource {
    cfg: UnixConfig,
    /// Set up with the probe, not when reading starts: setting up a ring reader
    /// asks the kernel about the map (`bpf()`), which kernels before 6.5 refuse
    /// once spf has dropped its privileges. Declared before `probe` so that it
    /// goes first.
    ring: RingBuffer<'static>,
    probe: Probe,
    /// What the container runtimes' state names, read while spf is still
    /// root (it is root-only).
    names: crate::containers::Names,
}

/// What the ring's callback works with, on the reader thread only. The callback
/// is made with the ring, before there is a thread or an emitter to give it; it
/// finds them here, without a lock on the path every record takes.
struct Reader {
    conv: Converter,
    out: Emitter,
    /// Bytes of records the drain after a stop may still take: at most
    /// what the ring held when the stop came. A producer faster than this
    /// reader (a flood, or an emulated CPU) must not keep the drain, and
    /// spf's exit, going for ever: libbpf consumes until the ring is empty.
    drain_left: Option<u64>,
    drain_cap: u64,
}

thread_local! {
    static READER: RefCell<Option<Reader>> = const { RefCell::new(None) };
}

/// The ring's callback: one record.
fn on_record(data: &[u8]) -> i32 {
    READER.with(|r| {
        let mut r = r.borrow_mut();
        let Some(r) = r.as_mut() else {
            return 0;
        };
        if r.out.stopping() {
            let left = r.drain_left.get_or_insert(r.drain_cap);
            if *left == 0 {
                // Ends this consume; the reading loop ends too.
                return -libc::ECANCELED;
            }
            // The record as the ring holds it: an 8-byte header, 8-aligned.
            let size = (data.len() as u64 + 8).next_multiple_of(8);
            *left = left.saturating_sub(size);
        }
        r.conv.record(data);
        if r.conv.batch_full() {
            let batch = r.conv.take_batch();
            // A refusal means shutdown; the reading loop notices it.
            let _ = r.out.blocking_send(batch);
        }
        0
    })
}

impl UnixSource {
    pub(crate) fn new(cfg: UnixConfig) -> Result<UnixSource, BuildError> {
        let probe = Probe::load(&cfg)?;
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&probe.skel.maps.spf_ring, on_record)
            .map_err(|e| BuildError::new(format!("cannot read the probe's ring buffer: {e}")))?;
        let ring = builder
            .build()
            .map_err(|e| BuildError::new(format!("cannot read the probe's ring buffer: {e}")))?;
        Ok(UnixSource {
            cfg,
            ring,
            probe,
            names: crate::containers::Names::read(),
        })
    }

    /// Which hooks capture, and why.
    pub fn hook(&self) -> &crate::HookChoice {
        &self.probe.hook
    }

    /// Hands over the probe's hook so that it can be turned off and on while
    /// the source runs: for benchmarks only.
    #[doc(hidden)]
    pub fn attach_switch(&mut self) -> std::io::Result<crate::probe::AttachSwitch> {
        self.probe.attach_switch()
    }

    fn run_blocking(self, out: Emitter) -> Result<SourceSummary, SourceError> {
        ask_for_short_slices();
        let mut conv = Converter::new();
        conv.containers = crate::containers::Resolver::new(self.names.clone());
        conv.peers = crate::peers::PeerNames::live();
        READER.with(|r| {
            *r.borrow_mut() = Some(Reader {
                conv,
                out: out.clone(),
                drain_left: None,
                drain_cap: self.cfg.ring_size,
            })
        });
        let result = self.read_until_stopped(&out);
        READER.with(|r| r.borrow_mut().take());
        result
    }

    fn read_until_stopped(&self, out: &Emitter) -> Result<SourceSummary, SourceError> {
        let ring = &self.ring;
        // The probe counts from the moment it was attached, which was before
        // this thread started: losses in between are losses too.
        let mut lost_total = 0u64;
        // The probe's count as read one round earlier (see below).
        let mut lost_prev = 0u64;
        // Set once the pipeline refuses input: one more drain, then end.
        let mut last_round = false;
        loop {
            // Whatever the kernel handed over before this read is drained below:
            // every syscall that returned before the stop was asked for is in.
            let stopping = last_round || out.stopping();
            // The probe counts an event whose data did not all fit in the ring
            // as lost, then still hands over its header (flagged, truncated):
            // such an event was delivered, cut, and is not lost. Its count may
            // come a moment before its header, so the count read a round ago is
            // the one all delivered headers are in by now; the last round takes
            // the current one.
            let lost_now = self.probe.lost();
            // poll() reads the ring only when woken, and most records come
            // without a wakeup: drain it after every poll.
            let mut r = if stopping { 0 } else { ring.poll_raw(POLL) };
            if r >= 0 {
                r = ring.consume_raw();
            }
            // Interrupted, or the drain after a stop took all it may.
            if r < 0 && r != -libc::EINTR && r != -libc::ECANCELED {
                return Err(SourceError(format!(
                    "reading the probe's ring buffer failed: {}",
                    std::io::Error::from_raw_os_error(-r)
                )));
            }
            let batch = READER.with(|r| {
                let mut r = r.borrow_mut();
                let Some(r) = r.as_mut() else {
                    return Vec::new();
                };
                let c = &mut r.conv;
                let counted = if stopping {
                    self.probe.lost()
                } else {
                    lost_prev
                };
                let lost = counted.saturating_sub(c.delivered_dropped);
                if lost > lost_total {
                    let count = lost - lost_total;
                    lost_total = lost;
                    let ts_ns = monotonic_ns();
                    let time_ns = c.wall(ts_ns);
                    c.batch.push(SourceItem::Lost(Lost {
                        ts_ns,
                        time_ns,
                        count,
                    }));
                }
                c.take_batch()
            });
            lost_prev = lost_now;
            let accepted = out.blocking_send(batch);
            if stopping {
                return Ok(SourceSummary {
                    lost: lost_total,
                    ..SourceSummary::default()
                });
            }
            if !accepted {
                last_round = true;
            }
        }
    }
}

impl Source for UnixSource {
    fn describe(&self) -> String {
        self.cfg.describe()
    }

    fn capture(&self) -> Option<String> {
        Some(self.probe.hook.to_string())
    }

    fn run(
        self: Box<Self>,
        out: Emitter,
    ) -> BoxFuture<'static, Result<SourceSummary, SourceError>> {
        Box::pin(async move {
            let (done, result) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("spf-probe".into())
                .spawn(move || {
                    let _ = done.send(self.run_blocking(out));
                })
                .map_err(|e| SourceError(format!("cannot start the probe's reader thread: {e}")))?;
            result.await.map_err(|_| {
                SourceError("the probe's reader thread ended without a result".into())
            })?
        })
    }
}

/// Asks the scheduler to run this thread soon after it wakes, in short turns.
/// While a bulk transfer keeps every core busy, the reader otherwise waits
/// behind the traced processes for a whole time slice (milliseconds), and
/// they fill the ring meanwhile. A short slice request (Linux 6.12 and later)
/// gives it earlier deadlines: it runs sooner, not more. Older kernels ignore
/// the request; a process run under another policy is left as it is.
fn ask_for_short_slices() {
    /// struct sched_attr, as far as SCHED_ATTR_SIZE_VER0.
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    const SLICE_NS: u64 = 100_000;
    // SAFETY: these calls only read and set this thread's scheduling
    // attributes; `attr` outlives the call that reads it.
    unsafe {
        if libc::sched_getscheduler(0) != libc::SCHED_OTHER {
            return;
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            // Keep the nice value spf was started with.
            nice: libc::getpriority(libc::PRIO_PROCESS, 0),
            priority: 0,
            runtime: SLICE_NS,
            deadline: 0,
            period: 0,
        };
        libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0);
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Data of an event still arriving in chunks, by thread.
struct Pending {
    cookie: u64,
    data: Vec<u8>,
    /// Record count when last touched, to drop what a lost header orphaned.
    touched: u64,
}

/// Turns ring records into items. Kept apart from the ring so it can be tested
/// on bytes.
pub(crate) struct Converter {
    pub(crate) batch: Batch,
    batch_bytes: usize,
    seq: u64,
    records: u64,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, measured once.
    wall_offset: i128,
    pending: HashMap<u32, Pending>,
    /// Events handed over although the probe also counted them as lost (part of
    /// their data did not fit in the ring).
    pub(crate) delivered_dropped: u64,
    pool: Pool,
    comms: HashMap<[u8; 16], Arc<str>>,
    paths: HashMap<Box<[u8]>, Arc<str>>,
    /// The last comm and path seen: consecutive events mostly share them, and
    /// comparing a few bytes is cheaper than hashing them.
    last_comm: Option<([u8; 16], Arc<str>)>,
    last_path: Option<(Box<[u8]>, Arc<str>)>,
    empty: Arc<str>,
    resolver: Resolver,
    /// The container of each cgroup seen.
    containers: crate::containers::Resolver,
    /// The names of peers, from /proc (see peers.rs).
    peers: crate::peers::PeerNames,
    /// Receiving socket inode by bound name, learned from the receivers' own
    /// events: a datagram's receiver may be gone by the time /proc/net/unix
    /// is read.
    learned: HashMap<Arc<str>, u64>,
    /// Events in `batch` whose conn waits for the receiver's inode:
    /// (index, destination name, sender's inode as the last resort).
    unresolved: Vec<(usize, Arc<str>, u64)>,
}

impl Converter {
    pub(crate) fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono2 = clock_ns(libc::CLOCK_MONOTONIC);
        Converter {
            batch: Vec::with_capacity(BATCH),
            batch_bytes: 0,
            seq: 0,
            records: 0,
            wall_offset: real - (mono + mono2) / 2,
            pending: HashMap::new(),
            delivered_dropped: 0,
            pool: Pool::default(),
            comms: HashMap::new(),
            paths: HashMap::new(),
            last_comm: None,
            last_path: None,
            empty: Arc::from(""),
            resolver: Resolver::default(),
            containers: crate::containers::Resolver::new(crate::containers::Names::default()),
            peers: crate::peers::PeerNames::off(),
            learned: HashMap::new(),
            unresolved: Vec::new(),
        }
    }

    fn wall(&self, ts_ns: u64) -> u64 {
        (i128::from(ts_ns) + self.wall_offset).clamp(0, i128::from(u64::MAX)) as u64
    }

    pub(crate) fn record(&mut self, data: &[u8]) {
        self.records += 1;
        if self.records % 65_536 == 0 {
            let horizon = self.records.saturating_sub(65_536);
            self.pending.retain(|_, p| p.touched >= horizon);
        }
        let Some(kind) = data
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return;
        };
        match kind {
            REC_CHUNK => self.chunk(data),
            REC_EVENT => self.event(data),
            REC_CLOSED => self.closed(data),
            _ => {}
        }
    }

    fn chunk(&mut self, data: &[u8]) {
        let hsize = std::mem::size_of::<spf_chunk>();
        if data.len() < hsize {
            return;
        }
        // SAFETY: length checked; the struct is plain old data.
        let h: spf_chunk = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        let body = &data[hsize..];
        let body = &body[..(h.len as usize).min(body.len())];
        let records = self.records;
        let pool = &self.pool;
        let p = self.pending.entry(h.tid).or_insert_with(|| Pending {
            cookie: h.cookie,
            data: pool.take(h.total as usize),
            touched: records,
        });
        if p.cookie != h.cookie {
            // The header of the previous event of this thread never came.
            p.cookie = h.cookie;
            p.data = pool.take(h.total as usize);
        }
        p.touched = records;
        p.data.extend_from_slice(body);
    }

    /// The fixed part of an event header, if the record holds one.
    fn fixed_header(data: &[u8]) -> Option<spf_event> {
        let fixed = data.get(..EVENT_FIXED)?;
        let mut h = spf_event::default();
        // SAFETY: the first EVENT_FIXED bytes of the plain C struct are its
        // fields before `path`, whatever values they hold.
        unsafe {
            std::ptr::copy_nonoverlapping(fixed.as_ptr(), (&raw mut h).cast::<u8>(), EVENT_FIXED);
        }
        Some(h)
    }

    fn closed(&mut self, data: &[u8]) {
        if let Some(h) = Self::fixed_header(data) {
            if h.conn != 0 {
                self.batch.push(SourceItem::Closed {
                    conn: h.conn,
                    ts_ns: h.ts_ns,
                });
            }
        }
    }

    fn event(&mut self, data: &[u8]) {
        // The record: the header up to `path`, then path_len bytes of path,
        // then the data (see spf.h).
        let Some(mut h) = Self::fixed_header(data) else {
            return;
        };
        let rest = &data[EVENT_FIXED..];
        let path_len = (h.path_len as usize).min(h.path.len()).min(rest.len());
        h.path[..path_len].copy_from_slice(&rest[..path_len]);
        h.path_len = path_len as u16;
        let body = &rest[path_len..];
        let bytes = if h.flags & F_CHUNKED != 0 {
            match self.pending.remove(&h.tid) {
                Some(p) if p.cookie == h.cookie => self.pool.bytes(p.data),
                _ => Bytes::new(),
            }
        } else {
            Bytes::copy_from_slice(&body[..(h.captured as usize).min(body.len())])
        };
        let path = self.path(&h);
        let by_path = h.flags & F_CONN_BY_PATH != 0;
        let conn = if by_path {
            self.learned.get(&path).copied().unwrap_or(0)
        } else {
            h.conn
        };
        if !by_path
            && h.sock_type == 2
            && h.flags & F_RECV != 0
            && h.conn == h.own_ino
            && !path.is_empty()
        {
            // An unconnected datagram receiver: its conn is its own inode.
            if self.learned.len() > 4096 {
                self.learned.clear();
            }
            self.learned.insert(path.clone(), h.own_ino);
        }
        if by_path && conn == 0 {
            self.unresolved
                .push((self.batch.len(), path.clone(), h.own_ino));
        }
        let comm = self.comm(&h.comm);
        self.seq += 1;
        if h.flags & F_DROPPED != 0 {
            self.delivered_dropped += 1;
        }
        let len = u64::from(h.len);
        let skip = u64::from(h.skip).min(len);
        let truncated = h.flags & F_TRUNCATED != 0 || (bytes.len() as u64) + skip < len;
        let role = if h.flags & F_CLIENT != 0 {
            Role::Client
        } else if h.flags & F_SERVER != 0 {
            Role::Server
        } else {
            Role::Unknown
        };
        let positioned = h.flags & F_POS != 0;
        let rpos = (h.flags & F_RPOS != 0).then_some(h.rpos);
        let dir = if h.flags & F_RECV != 0 {
            Direction::Recv
        } else {
            Direction::Send
        };
        let ev = Event {
            seq: self.seq,
            ts_ns: h.ts_ns,
            time_ns: self.wall(h.ts_ns),
            pid: h.pid,
            tid: h.tid,
            comm,
            peer_pid: h.peer_pid,
            peer_comm: self.peers.of(h.peer_pid),
            path,
            sock: match h.sock_type {
                2 => SockKind::Dgram,
                5 => SockKind::Seqpacket,
                _ => SockKind::Stream,
            },
            dir,
            conn,
            socket: h.own_ino,
            peer_socket: h.peer_ino,
            role,
            lane: u8::from(h.flags & F_TO_HI != 0),
            pos: positioned.then_some(h.pos),
            rpos,
            epoch: if positioned || rpos.is_some() {
                h.epoch
            } else {
                0
            },
            skip,
            len,
            data: bytes,
            truncated,
            cgroup: h.cgroup,
            container: self.containers.of(h.cgroup, h.pid),
            ..Event::default()
        };
        self.batch_bytes += ev.data.len();
        self.batch.push(SourceItem::Event(Arc::new(ev)));
    }

    /// Hands the batch over, first giving datagrams sent to an address the
    /// inode of their receiver: learned from the receiver's events in this
    /// batch if any, else from /proc/net/unix, else (the receiver is gone) the
    /// sender's own.
    pub(crate) fn take_batch(&mut self) -> Batch {
        self.peers.new_batch();
        for (idx, path, fallback) in std::mem::take(&mut self.unresolved) {
            let ino = match self.learned.get(&path) {
                Some(i) => *i,
                None => self.resolver.inode(&path).unwrap_or(fallback),
            };
            if let Some(SourceItem::Event(e)) = self.batch.get_mut(idx) {
                if let Some(e) = Arc::get_mut(e) {
                    e.conn = ino;
                }
            }
        }
        self.batch_bytes = 0;
        if self.batch.is_empty() {
            // The reader polls every few milliseconds while idle: hand over
            // an empty batch without allocating a new one.
            return Vec::new();
        }
        std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH))
    }

    pub(crate) fn batch_full(&self) -> bool {
        self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES
    }

    fn comm(&mut self, raw: &[i8; 16]) -> Arc<str> {
        let key: [u8; 16] = raw.map(|c| c as u8);
        if let Some((k, c)) = &self.last_comm {
            if *k == key {
                return c.clone();
            }
        }
        if let Some(c) = self.comms.get(&key) {
            let c = c.clone();
            self.last_comm = Some((key, c.clone()));
            return c;
        }
        let end = key.iter().position(|&b| b == 0).unwrap_or(16);
        let s: Arc<str> = Arc::from(String::from_utf8_lossy(&key[..end]).as_ref());
        if self.comms.len() > 4096 {
            self.comms.clear();
        }
        self.comms.insert(key, s.clone());
        self.last_comm = Some((key, s.clone()));
        s
    }

    fn path(&mut self, h: &spf_event) -> Arc<str> {
        let raw = &h.path[..(h.path_len as usize).min(h.path.len())];
        if raw.is_empty() {
            return self.empty.clone();
        }
        if let Some((k, p)) = &self.last_path {
            if **k == *raw {
                return p.clone();
            }
        }
        if let Some(p) = self.paths.get(raw) {
            let p = p.clone();
            self.last_path = Some((raw.into(), p.clone()));
            return p;
        }
        let s = match raw.split_first() {
            Some((0, name)) => format!("@{}", String::from_utf8_lossy(name)),
            _ => String::from_utf8_lossy(raw).into_owned(),
        };
        let s: Arc<str> = Arc::from(s);
        if self.paths.len() > 4096 {
            self.paths.clear();
        }
        self.paths.insert(raw.into(), s.clone());
        self.last_path = Some((raw.into(), s.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain C struct.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    /// An event record as the probe writes it.
    fn wire(h: &spf_event) -> Vec<u8> {
        let mut v = as_bytes(h);
        v.truncate(EVENT_FIXED);
        v.extend_from_slice(&h.path[..h.path_len as usize]);
        v
    }

    fn header(flags: u32, len: u32, captured: u32) -> spf_event {
        let mut h = spf_event {
            kind: REC_EVENT,
            flags,
            ts_ns: 1000,
            cookie: 7,
            len,
            captured,
            conn: 42,
            pid: 10,
            tid: 11,
            peer_pid: 12,
            sock_type: 5,
            ..Default::default()
        };
        h.comm[..3].copy_from_slice(&[b'c' as i8, b'a' as i8, b't' as i8]);
        h.path[..4].copy_from_slice(b"\0abs");
        h.path_len = 4;
        h
    }

    fn only_event(c: &mut Converter) -> Arc<Event> {
        assert_eq!(c.batch.len(), 1);
        match c.batch.pop() {
            Some(SourceItem::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn inline_event() {
        let mut c = Converter::new();
        let mut rec = wire(&header(F_RECV, 5, 5));
        rec.extend_from_slice(b"hello\0\0\0");
        c.record(&rec);
        let e = only_event(&mut c);
        assert_eq!(&e.data[..], b"hello");
        assert_eq!(
            (&*e.path, &*e.comm, e.dir, e.sock, e.truncated),
            ("@abs", "cat", Direction::Recv, SockKind::Seqpacket, false)
        );
        assert_eq!(
            (e.pid, e.tid, e.peer_pid, e.conn, e.seq),
            (10, 11, 12, 42, 1)
        );
        assert!(e.time_ns > e.ts_ns);
    }

    #[test]
    fn closed_record_becomes_a_closed_item() {
        let mut c = Converter::new();
        let mut h = header(F_RECV, 0, 0);
        h.kind = REC_CLOSED;
        c.record(&wire(&h));
        h.conn = 0;
        c.record(&wire(&h));
        let items = c.take_batch();
        assert_eq!(items.len(), 1, "a record without a connection is dropped");
        assert!(matches!(
            items[0],
            SourceItem::Closed {
                conn: 42,
                ts_ns: 1000
            }
        ));
    }

    #[test]
    fn unnamed_event_has_its_data_right_after_the_header() {
        let mut c = Converter::new();
        let mut h = header(0, 3, 3);
        h.path_len = 0;
        let mut rec = wire(&h);
        assert_eq!(rec.len(), EVENT_FIXED);
        rec.extend_from_slice(b"xyz\0\0\0\0\0");
        c.record(&rec);
        let e = only_event(&mut c);
        assert_eq!((&e.data[..], &*e.path), (&b"xyz"[..], ""));
    }

    #[test]
    fn path_longer_than_the_record_is_cut_to_it() {
        let mut c = Converter::new();
        let mut h = header(0, 0, 0);
        h.path_len = 100;
        let mut rec = wire(&h);
        rec.truncate(EVENT_FIXED + 4);
        c.record(&rec);
        assert_eq!(&*only_event(&mut c).path, "@abs");
    }

    #[test]
    fn chunks_reassemble_and_orphans_are_dropped() {
        let mut c = Converter::new();
        let chunk = |cookie: u64, body: &[u8]| {
            let h = spf_chunk {
                kind: REC_CHUNK,
                len: body.len() as u32,
                cookie,
                tid: 11,
                total: 6,
            };
            let mut v = as_bytes(&h);
            v.extend_from_slice(body);
            v.resize(v.len() + 16, 0);
            v
        };
        c.record(&chunk(6, b"stale"));
        c.record(&chunk(7, b"abc"));
        c.record(&chunk(7, b"def"));
        c.record(&wire(&header(F_CHUNKED | F_TRUNCATED, 10, 6)));
        let e = only_event(&mut c);
        assert_eq!(&e.data[..], b"abcdef");
        assert!(e.truncated);
        assert_eq!(e.len, 10);
        assert!(c.pending.is_empty());
    }

    #[test]
    fn positions_in_either_counting_come_with_their_epoch() {
        let mut c = Converter::new();
        let mut early = header(F_RECV | F_RPOS, 0, 0);
        (early.rpos, early.pos, early.epoch) = (1 << 62, 99, 5);
        c.record(&wire(&early));
        let e = only_event(&mut c);
        assert_eq!((e.pos, e.rpos, e.epoch), (None, Some(1 << 62), 5));
        let mut both = header(F_POS | F_RPOS, 0, 0);
        (both.rpos, both.pos, both.epoch) = ((1 << 62) + 3, 1 << 62, 5);
        c.record(&wire(&both));
        let e = only_event(&mut c);
        assert_eq!(
            (e.pos, e.rpos, e.epoch),
            (Some(1 << 62), Some((1 << 62) + 3), 5)
        );
        let mut none = header(0, 0, 0);
        (none.rpos, none.pos, none.epoch) = (1, 2, 5);
        c.record(&wire(&none));
        let e = only_event(&mut c);
        assert_eq!((e.pos, e.rpos, e.epoch), (None, None, 0));
    }

    #[test]
    fn datagram_to_an_address_gets_the_receivers_inode() {
        let mut c = Converter::new();
        let mut send = header(F_CONN_BY_PATH, 0, 0);
        send.sock_type = 2;
        send.conn = 0;
        send.own_ino = 5;
        let mut recv = header(F_RECV, 0, 0);
        recv.sock_type = 2;
        recv.conn = 77;
        recv.own_ino = 77;
        c.record(&wire(&send));
        c.record(&wire(&recv));
        let batch = c.take_batch();
        let conns: Vec<u64> = batch
            .iter()
            .map(|i| match i {
                SourceItem::Event(e) => e.conn,
                _ => 0,
            })
            .collect();
        assert_eq!(conns, [77, 77]);
        // Later sends to the same name resolve at once.
        c.record(&wire(&send));
        assert!(c.unresolved.is_empty());
        assert_eq!(only_event(&mut c).conn, 77);
    }

    #[test]
    fn short_records_are_ignored() {
        let mut c = Converter::new();
        c.record(&[1, 0]);
        c.record(&[1, 0, 0, 0, 9]);
        c.record(&[2, 0, 0, 0]);
        assert!(c.batch.is_empty());
    }
}
