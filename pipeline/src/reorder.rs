//! The reorder stage: hands items on in kernel-time order.
//!
//! Events of different CPUs can reach user space out of order. The stage holds items
//! for up to `window` (measured in kernel time against the newest item seen, and in
//! wall time for quiet periods) and releases them smallest timestamp first. Two
//! rules hold whatever the timestamps say:
//!
//! * the items of one flow (connection + direction) leave in the order they came,
//!   because decoders reassemble byte streams and a swapped pair would corrupt them;
//! * at most `max_events` items are held, so memory stays bounded under any load.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use crate::config::ReorderConfig;
use crate::event::{Flow, SourceItem};

const EPOCH_JUMP_NS: u64 = 60_000_000_000;

#[derive(Default)]
struct FlowHeld {
    /// Largest sort key given to an item of this flow still held.
    key: u64,
    held: u32,
}

struct Entry {
    key: u64,
    arrival: u64,
    at: Instant,
    item: SourceItem,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.arrival) == (other.key, other.arrival)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.arrival).cmp(&(other.key, other.arrival))
    }
}

pub struct Reorder {
    window_ns: u64,
    window: Duration,
    max: usize,
    max_bytes: usize,
    bytes: usize,
    /// Items that arrived in key order (the common case): a queue, O(1) each way.
    run: VecDeque<Entry>,
    /// Items that arrived out of order.
    heap: BinaryHeap<Reverse<Entry>>,
    /// Per flow with held items: the largest sort key given and how many are held.
    flow_key: FxHashMap<Flow, FlowHeld>,
    newest: u64,
    arrivals: u64,
    /// Items released early because the buffer was full.
    pub forced: u64,
}

impl Reorder {
    pub fn new(cfg: &ReorderConfig) -> Self {
        Reorder {
            window_ns: cfg.window_ms.saturating_mul(1_000_000),
            window: Duration::from_millis(cfg.window_ms),
            max: cfg.max_events.max(1),
            max_bytes: cfg.max_bytes,
            bytes: 0,
            run: VecDeque::new(),
            heap: BinaryHeap::new(),
            flow_key: FxHashMap::default(),
            newest: 0,
            arrivals: 0,
            forced: 0,
        }
    }

    pub fn held(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    /// The held item that leaves next.
    fn peek(&self) -> Option<&Entry> {
        match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if a <= b { a } else { b }),
            (Some(a), None) => Some(a),
            (None, Some(Reverse(b))) => Some(b),
            (None, None) => None,
        }
    }

    /// Takes one item; releases (through `out`) whatever is now old enough.
    pub fn push(&mut self, item: SourceItem, now: Instant, out: &mut impl FnMut(SourceItem)) {
        if self.window_ns == 0 {
            out(item);
            return;
        }
        let ts = item.ts_ns();
        // A jump of more than a minute either way is not disorder between CPUs but
        // another clock (captures of two boots, one after the other): hand on
        // everything held and start over from the new time, rather than let one
        // outlier decide the watermark for the rest of the run.
        if self.held() > 0 && ts.abs_diff(self.newest) > EPOCH_JUMP_NS {
            self.drain(out);
            self.newest = ts;
        }
        let key = match &item {
            SourceItem::Event(e) => {
                let f = self.flow_key.entry(e.flow()).or_default();
                f.key = f.key.max(ts);
                f.held += 1;
                f.key
            }
            // A close must not overtake data of its connection, whichever flow.
            SourceItem::Closed { conn, .. } => self
                .flow_key
                .iter()
                .filter(|(f, _)| f.conn == *conn)
                .fold(ts, |a, (_, b)| a.max(b.key)),
            SourceItem::Lost(_) => ts,
        };
        self.newest = self.newest.max(ts);
        self.arrivals += 1;
        self.bytes += payload(&item);
        let entry = Entry {
            key,
            arrival: self.arrivals,
            at: now,
            item,
        };
        if self.run.back().is_none_or(|b| b.key <= key) {
            self.run.push_back(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
        while self.held() > self.max || (self.bytes > self.max_bytes && self.held() > 1) {
            self.forced += 1;
            self.pop(out);
        }
        let limit = self.newest.saturating_sub(self.window_ns);
        while self.peek().is_some_and(|e| e.key <= limit) {
            self.pop(out);
        }
    }

    /// Releases items that have waited a whole window of wall time: when input goes
    /// quiet there is no newer timestamp to push them out.
    pub fn tick(&mut self, now: Instant, out: &mut impl FnMut(SourceItem)) {
        // The heap is ordered by key, not arrival, so look for the oldest arrival
        // among the smallest keys: release from the top while the top has waited long
        // enough or anything held has waited twice as long.
        while let Some(top) = self.peek() {
            if now.duration_since(top.at) >= self.window {
                self.pop(out);
            } else {
                break;
            }
        }
        let stale = |e: &Entry| now.duration_since(e.at) >= self.window * 2;
        if self.run.front().is_some_and(stale) || self.heap.iter().any(|Reverse(e)| stale(e)) {
            self.drain(out);
        }
    }

    /// Releases everything, in order (end of input, shutdown).
    pub fn drain(&mut self, out: &mut impl FnMut(SourceItem)) {
        while self.held() > 0 {
            self.pop(out);
        }
    }

    fn pop(&mut self, out: &mut impl FnMut(SourceItem)) {
        let from_run = match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return,
        };
        let e = if from_run {
            self.run.pop_front()
        } else {
            self.heap.pop().map(|Reverse(e)| e)
        };
        if let Some(e) = e {
            self.bytes -= payload(&e.item);
            // Only flows with held items need their key: forget the rest, so the
            // map stays as small as the buffer whatever the connection churn.
            if let SourceItem::Event(ev) = &e.item
                && let std::collections::hash_map::Entry::Occupied(mut f) =
                    self.flow_key.entry(ev.flow())
            {
                f.get_mut().held -= 1;
                if f.get().held == 0 {
                    f.remove();
                }
            }
            out(e.item);
        }
    }
}

fn payload(item: &SourceItem) -> usize {
    match item {
        SourceItem::Event(e) => e.data.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, Event, Lost, SockKind};
    use std::sync::Arc;

    fn ev(seq: u64, ts: u64, conn: u64, dir: Direction) -> SourceItem {
        SourceItem::Event(Arc::new(Event {
            seq,
            ts_ns: ts,
            time_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            peer_pid: 0,
            path: "".into(),
            sock: SockKind::Stream,
            dir,
            conn,
            socket: 0,
            len: 1,
            data: vec![seq as u8].into(),
            truncated: false,
            ..Event::default()
        }))
    }

    fn seqs(items: &[SourceItem]) -> Vec<u64> {
        items
            .iter()
            .map(|i| match i {
                SourceItem::Event(e) => e.seq,
                SourceItem::Lost(l) => 1000 + l.count,
                SourceItem::Closed { conn, .. } => 2000 + conn,
            })
            .collect()
    }

    fn run(cfg: ReorderConfig, items: Vec<SourceItem>) -> Vec<SourceItem> {
        let mut r = Reorder::new(&cfg);
        let mut out = Vec::new();
        let now = Instant::now();
        for i in items {
            r.push(i, now, &mut |x| out.push(x));
        }
        r.drain(&mut |x| out.push(x));
        out
    }

    const MS: u64 = 1_000_000;

    fn cfg(window_ms: u64, max_events: usize) -> ReorderConfig {
        ReorderConfig {
            window_ms,
            max_events,
            ..Default::default()
        }
    }

    #[test]
    fn sorts_by_kernel_time_across_flows() {
        let cfg = cfg(10, 100);
        let out = run(
            cfg,
            vec![
                ev(1, 5 * MS, 1, Direction::Send),
                ev(2, 3 * MS, 2, Direction::Send),
                ev(3, 4 * MS, 3, Direction::Recv),
            ],
        );
        assert_eq!(seqs(&out), vec![2, 3, 1]);
    }

    #[test]
    fn never_reorders_one_flow() {
        let cfg = cfg(10, 100);
        // Same flow, timestamps going backwards (two threads on one socket): arrival
        // order wins. The other flow still sorts around them.
        let out = run(
            cfg,
            vec![
                ev(1, 5 * MS, 1, Direction::Send),
                ev(2, 2 * MS, 1, Direction::Send),
                ev(3, 3 * MS, 2, Direction::Send),
            ],
        );
        assert_eq!(seqs(&out), vec![3, 1, 2]);
    }

    #[test]
    fn releases_once_window_passed() {
        let cfg = cfg(10, 100);
        let mut r = Reorder::new(&cfg);
        let mut out = Vec::new();
        let now = Instant::now();
        r.push(ev(1, MS, 1, Direction::Send), now, &mut |x| out.push(x));
        assert!(out.is_empty());
        r.push(ev(2, 12 * MS, 1, Direction::Send), now, &mut |x| {
            out.push(x)
        });
        assert_eq!(seqs(&out), vec![1]);
        r.tick(now + Duration::from_millis(11), &mut |x| out.push(x));
        assert_eq!(seqs(&out), vec![1, 2]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn cap_bounds_memory() {
        let cfg = cfg(1000, 3);
        let mut r = Reorder::new(&cfg);
        let mut out = Vec::new();
        let now = Instant::now();
        for i in 0..10 {
            r.push(ev(i, 100 - i, i, Direction::Send), now, &mut |x| {
                out.push(x)
            });
            assert!(r.held() <= 3);
        }
        assert_eq!(out.len(), 7);
        assert_eq!(r.forced, 7);
    }

    #[test]
    fn byte_cap_bounds_memory() {
        let cfg = ReorderConfig {
            window_ms: 1000,
            max_events: 1000,
            max_bytes: 2,
        };
        let mut r = Reorder::new(&cfg);
        let mut out = Vec::new();
        let now = Instant::now();
        for i in 0..10 {
            // Each test event carries one byte.
            r.push(ev(i, 100 + i, 1, Direction::Send), now, &mut |x| {
                out.push(x)
            });
            assert!(r.held() <= 2);
        }
        assert_eq!(seqs(&out), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn flow_map_stays_as_small_as_the_buffer() {
        let cfg = cfg(20, 1000);
        let mut r = Reorder::new(&cfg);
        let mut n = 0;
        let now = Instant::now();
        for i in 0..10_000u64 {
            // A new connection every millisecond.
            r.push(ev(i, i * MS, i, Direction::Send), now, &mut |_| n += 1);
            assert!(r.flow_key.len() <= r.held());
        }
        r.drain(&mut |_| n += 1);
        assert_eq!(n, 10_000);
        assert!(r.flow_key.is_empty());
    }

    #[test]
    fn a_jump_to_another_clock_does_not_stop_reordering() {
        let cfg = cfg(10, 100);
        // A far-future outlier, then ordinary disorder that must still be sorted.
        let out = run(
            cfg,
            vec![
                ev(1, 1_000_000 * MS, 1, Direction::Send),
                ev(2, 5 * MS, 2, Direction::Send),
                ev(3, 3 * MS, 3, Direction::Send),
            ],
        );
        assert_eq!(seqs(&out), vec![1, 3, 2]);
    }

    #[test]
    fn zero_window_passes_through() {
        let cfg = cfg(0, 1);
        let out = run(
            cfg,
            vec![ev(1, 9, 1, Direction::Send), ev(2, 1, 2, Direction::Send)],
        );
        assert_eq!(seqs(&out), vec![1, 2]);
    }

    #[test]
    fn close_waits_for_its_connection() {
        let cfg = cfg(10, 100);
        let out = run(
            cfg,
            vec![
                ev(1, 5 * MS, 7, Direction::Recv),
                SourceItem::Closed { conn: 7, ts_ns: MS },
                SourceItem::Lost(Lost {
                    ts_ns: 2 * MS,
                    time_ns: 0,
                    count: 3,
                }),
            ],
        );
        assert_eq!(seqs(&out), vec![1003, 1, 2007]);
    }

    #[test]
    fn flow_order_holds_under_random_input() {
        // Deterministic pseudo-random timestamps; check the flow invariant and that
        // nothing is lost or duplicated.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut items = Vec::new();
        for seq in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let conn = x % 8;
            let dir = if x & 256 == 0 {
                Direction::Send
            } else {
                Direction::Recv
            };
            items.push(ev(seq, seq * 1000 + (x >> 40) % 5_000_000, conn, dir));
        }
        let cfg = cfg(2, 64);
        let out = run(cfg, items);
        assert_eq!(out.len(), 5000);
        let mut last: std::collections::HashMap<Flow, u64> = std::collections::HashMap::new();
        for i in &out {
            let SourceItem::Event(e) = i else {
                unreachable!()
            };
            if let Some(prev) = last.insert(e.flow(), e.seq) {
                assert!(
                    prev < e.seq,
                    "flow {:?} reordered: {prev} then {}",
                    e.flow(),
                    e.seq
                );
            }
        }
    }
}
