//! The sink's bounded buffer between the pipeline and the publisher: memory
//! first, then (when configured) the spool file, one first-in-first-out order
//! across both. What fits in neither is counted, and the count goes out as a
//! `lost` marker ahead of the next message that fits.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use super::spool::{Spool, SpoolError};
use crate::wire::Kind;

/// One NATS message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    /// Its place in the (node, run, kind) sequence, from 1.
    pub seq: u64,
    /// The number of its first record in the (node, run, kind) numbering.
    pub first: u64,
    /// Records (NDJSON lines) in the payload.
    pub records: u64,
    /// Kernel and wall-clock time of its last record (for a lost marker built
    /// from it).
    pub ts_ns: u64,
    pub time_ns: u64,
    pub payload: Bytes,
}

/// What the buffer holds and what became of the records it was given.
pub struct State {
    memory: VecDeque<Msg>,
    memory_bytes: usize,
    memory_limit: usize,
    spool: Option<Spool>,
    /// Next sequence number and record number per kind.
    next_seq: [u64; 3],
    next_record: [u64; 3],
    /// Records dropped since the last lost marker went into the buffer, and
    /// the time of the last of them.
    pub lost_pending: u64,
    lost_ts: (u64, u64),
    /// Records dropped in all.
    pub lost_total: u64,
    /// Records the server acknowledged.
    pub acked: u64,
    /// Records the publisher holds (published or about to be), not yet
    /// acknowledged.
    pub in_flight: u64,
    /// Set by `close`: publish what is left, then stop.
    pub closing: bool,
    /// Set when `close` gave up waiting: stop now.
    pub abandon: bool,
    /// The publisher ended.
    pub stopped: bool,
    /// A spool that failed: reported once, then only memory is used.
    pub spool_error: Option<SpoolError>,
}

/// Shared by the sink (pipeline thread) and the publisher (its own thread).
pub struct Queue {
    state: Mutex<State>,
    /// The publisher made progress (for `close`, which waits on it).
    pub progress: Condvar,
    /// Something new to publish (for the publisher, which waits on it).
    pub ready: tokio::sync::Notify,
}

/// How the lost marker of the records dropped is written.
pub type MarkerFn<'a> = &'a dyn Fn(u64, u64, u64) -> Bytes;

impl Queue {
    pub fn new(memory_limit: usize, spool: Option<Spool>) -> Queue {
        Queue {
            state: Mutex::new(State {
                memory: VecDeque::new(),
                memory_bytes: 0,
                memory_limit,
                spool,
                next_seq: [1; 3],
                next_record: [0; 3],
                lost_pending: 0,
                lost_ts: (0, 0),
                lost_total: 0,
                acked: 0,
                in_flight: 0,
                closing: false,
                abandon: false,
                stopped: false,
                spool_error: None,
            }),
            progress: Condvar::new(),
            ready: tokio::sync::Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are
        // still worth reporting.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message of `records` records (its sequence number is given
    /// here, so that dropped messages leave no gap), preceded by a lost marker
    /// on `marker_kind` when records were dropped before. Never blocks: what
    /// does not fit is counted as lost.
    pub fn offer(
        &self,
        kind: Kind,
        records: u64,
        ts: (u64, u64),
        payload: Bytes,
        marker_kind: Kind,
        marker: MarkerFn<'_>,
    ) {
        let mut st = self.lock();
        let msg = Msg {
            kind,
            seq: 0,
            first: 0,
            records,
            ts_ns: ts.0,
            time_ns: ts.1,
            payload,
        };
        // A lost marker goes in only together with the message after it: a
        // marker alone would take the room that message needs, and every
        // message dropped after would leave one more marker.
        let marker = (st.lost_pending > 0).then(|| st.marker(marker_kind, marker));
        let need = msg.payload.len() + marker.as_ref().map_or(0, |m| m.payload.len());
        if !st.fits(need, 1 + usize::from(marker.is_some())) {
            st.drop_records(records, ts);
            return;
        }
        if let Some(m) = marker {
            st.put_numbered(m);
            st.lost_pending = 0;
        }
        st.put_numbered(msg);
        drop(st);
        self.ready.notify_one();
    }

    /// Counts records that never reached the buffer (e.g. larger than the
    /// server takes).
    pub fn drop_records(&self, records: u64, ts: (u64, u64)) {
        self.lock().drop_records(records, ts);
    }

    /// Queues the lost marker of what was dropped, if there is room.
    pub fn offer_marker(&self, marker_kind: Kind, marker: MarkerFn<'_>) {
        let mut st = self.lock();
        if st.lost_pending > 0 {
            st.put_marker(marker_kind, marker);
        }
        drop(st);
        self.ready.notify_one();
    }
}

impl State {
    fn drop_records(&mut self, records: u64, ts: (u64, u64)) {
        self.lost_pending += records;
        self.lost_total += records;
        self.lost_ts = ts;
    }

    /// The lost marker of the records dropped so far (not numbered yet).
    fn marker(&self, kind: Kind, marker: MarkerFn<'_>) -> Msg {
        let (ts_ns, time_ns) = self.lost_ts;
        Msg {
            kind,
            seq: 0,
            first: 0,
            records: 1,
            ts_ns,
            time_ns,
            payload: marker(self.lost_pending, ts_ns, time_ns),
        }
    }

    fn put_marker(&mut self, kind: Kind, marker: MarkerFn<'_>) -> bool {
        let m = self.marker(kind, marker);
        if !self.fits(m.payload.len(), 1) {
            return false;
        }
        self.put_numbered(m);
        self.lost_pending = 0;
        true
    }

    /// Whether `count` messages of `bytes` bytes in all fit, all in memory
    /// or all in the spool.
    fn fits(&self, bytes: usize, count: usize) -> bool {
        let spooling = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        (!spooling && self.memory_bytes + bytes <= self.memory_limit)
            || self
                .spool
                .as_ref()
                .is_some_and(|s| s.room() >= (bytes + count * Spool::ENTRY_OVERHEAD) as u64)
    }

    /// Gives `msg` the next sequence and record numbers of its kind and
    /// queues it; `fits` said there is room.
    fn put_numbered(&mut self, mut msg: Msg) {
        let k = msg.kind.index();
        msg.seq = self.next_seq[k];
        msg.first = self.next_record[k];
        let records = msg.records;
        if self.put(msg) {
            self.next_seq[k] += 1;
            self.next_record[k] += records;
        } else {
            // Only a failing spool file gets here: counted, and marked later.
            self.drop_records(records, self.lost_ts);
        }
    }

    /// Memory while nothing waits in the spool (order is kept across both),
    /// else the spool.
    fn put(&mut self, msg: Msg) -> bool {
        let spooling = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        if !spooling && self.memory_bytes + msg.payload.len() <= self.memory_limit {
            self.memory_bytes += msg.payload.len();
            self.memory.push_back(msg);
            return true;
        }
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        match spool.push(&msg) {
            Ok(()) => true,
            Err(Some(e)) => {
                self.spool_error.get_or_insert(e);
                false
            }
            Err(None) => false,
        }
    }

    /// The oldest message, for the publisher.
    pub fn take(&mut self) -> Option<Msg> {
        if let Some(m) = self.memory.pop_front() {
            self.memory_bytes -= m.payload.len();
            return Some(m);
        }
        let spool = self.spool.as_mut()?;
        match spool.pop() {
            Ok(m) => m,
            Err(e) => {
                // What the spool held cannot be read back: count it (one
                // per message, their record counts being unreadable too) and
                // go on with memory alone.
                let held = spool.entries;
                self.spool = None;
                self.spool_error.get_or_insert(e);
                self.lost_pending += held;
                self.lost_total += held;
                None
            }
        }
    }

    /// Records still waiting in the buffer (not yet taken by the publisher).
    pub fn waiting(&self) -> (u64, bool) {
        let records = self.memory.iter().map(|m| m.records).sum::<u64>();
        let spooled = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        (records, spooled)
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(n: u64, _: u64, _: u64) -> Bytes {
        Bytes::from(format!("lost {n}"))
    }

    fn payload(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn overflow_is_counted_and_marked_before_the_next_message() {
        let q = Queue::new(100, None);
        q.offer(Kind::Events, 3, (1, 1), payload(60), Kind::Events, &marker);
        // Does not fit next to the first: dropped, no sequence number used.
        q.offer(Kind::Events, 5, (2, 2), payload(60), Kind::Events, &marker);
        assert_eq!(q.lock().lost_pending, 5);
        // The marker goes in only with a message that fits beside it.
        q.offer(Kind::Events, 2, (3, 3), payload(35), Kind::Events, &marker);
        assert_eq!(q.lock().lost_pending, 7);
        let first = q.lock().take().unwrap();
        assert_eq!((first.seq, first.first, first.records), (1, 0, 3));
        q.offer(Kind::Events, 7, (4, 4), payload(10), Kind::Events, &marker);
        let mut st = q.lock();
        let m = st.take().unwrap();
        assert_eq!((m.seq, m.first, m.records, m.ts_ns), (2, 3, 1, 3));
        assert_eq!(m.payload, Bytes::from("lost 7"));
        let m = st.take().unwrap();
        assert_eq!((m.seq, m.first, m.records), (3, 4, 7));
        assert!(st.take().is_none());
        assert_eq!((st.lost_pending, st.lost_total), (0, 7));
    }

    #[test]
    fn the_spool_takes_over_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s"), 1 << 20).unwrap();
        let q = Queue::new(100, Some(spool));
        for i in 0..5u64 {
            q.offer(
                Kind::Records,
                i + 1,
                (i, i),
                payload(40),
                Kind::Events,
                &marker,
            );
        }
        let mut st = q.lock();
        assert_eq!(st.lost_total, 0);
        let seqs: Vec<u64> = std::iter::from_fn(|| st.take()).map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert!(st.is_empty());
    }
}
