//! Per connection, the protocol its first bytes speak, then every event of it
//! to that protocol's decoder.
//!
//! While a connection is undecided its events are held (at most
//! [`WINDOW`] bytes per direction are looked at, at most [`MAX_EVENTS`]
//! events, at most [`MAX_WAIT`] once the run has caught up with its input),
//! then handed, in order, to the decoder chosen. Records are made by that
//! decoder and carry its name.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::evict;
use spf_pipeline::{Budget, Decoder, Event, Out};

use super::h2;

/// Candidates by position: the built-ins first, plugins after.
pub const HTTP1: usize = 0;
pub const HTTP2: usize = 1;
pub const RAW: usize = 2;

/// Bytes per direction looked at before deciding.
pub const WINDOW: usize = 4096;
/// Events held back at most before deciding.
pub const MAX_EVENTS: usize = 16;
/// Bytes held back at most before deciding: when one direction's window
/// shows nothing (joined in the middle of a body), the other's first bytes
/// may still tell, within this much.
pub const MAX_HELD: usize = 1 << 20;
/// How long a connection stays undecided at most, counted from its first
/// event, once the run has caught up with its input: a live connection
/// that speaks nothing recognised (an interactive redis-cli) shows within
/// this, not after its sixteenth event.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// Confidence that decides at once.
const SURE: u8 = 60;
/// Confidence that is enough when no more bytes can be waited for.
const LIKELY: u8 = 30;

struct Undecided {
    events: Vec<Arc<Event>>,
    /// The first bytes of each direction.
    seen: [Vec<u8>; 2],
    /// The first event of each direction, for `detect`.
    first: [Option<Arc<Event>>; 2],
    /// Budget held for the events' bytes.
    accounted: usize,
    held: usize,
}

enum State {
    Undecided(Box<Undecided>),
    Decided(usize),
}

struct Entry {
    end: u64,
    last_seq: u64,
    state: State,
}

pub struct Auto {
    name: Arc<str>,
    delegates: Vec<Box<dyn Decoder>>,
    conns: FxHashMap<u64, Vec<Entry>>,
    count: usize,
    max_conns: usize,
    budget: Arc<Budget>,
    /// Connections (conn, end) in the order they began undecided, with
    /// when: the ones to decide once [`MAX_WAIT`] is over. Entries decided
    /// or gone meanwhile are skipped.
    waiting: VecDeque<(Instant, u64, u64)>,
}

impl Auto {
    /// `delegates` are the candidates: `[http1, http2, raw, others...]`.
    pub fn new(delegates: Vec<Box<dyn Decoder>>, max_conns: usize, budget: Arc<Budget>) -> Self {
        assert!(delegates.len() > RAW, "auto needs http1, http2 and raw");
        Auto {
            name: Arc::from("auto"),
            delegates,
            conns: FxHashMap::default(),
            count: 0,
            max_conns: max_conns.max(1),
            budget,
            waiting: VecDeque::new(),
        }
    }

    /// Decides the connections undecided for [`MAX_WAIT`] at `now`.
    pub(crate) fn settle_waited(&mut self, now: Instant, out: &mut Out<'_>) {
        while let Some(&(since, conn, end)) = self.waiting.front() {
            if now.saturating_duration_since(since) < MAX_WAIT {
                break;
            }
            self.waiting.pop_front();
            if let Some(e) = self
                .conns
                .get_mut(&conn)
                .and_then(|l| l.iter_mut().find(|e| e.end == end))
            {
                settle(&mut self.delegates, &self.budget, e, out);
            }
        }
    }

    /// Connections (ends, in the syscall view) tracked.
    pub fn connection_count(&self) -> usize {
        self.count
    }

    /// The decoder chosen for an event's connection, by name, once decided.
    pub fn chosen(&self, ev: &Event) -> Option<&str> {
        let k = ev.stream_key();
        let e = self.conns.get(&k.conn)?.iter().find(|e| e.end == k.end)?;
        match e.state {
            State::Decided(i) => Some(self.delegates[i].name()),
            State::Undecided(_) => None,
        }
    }

    fn evict_idle(&mut self, out: &mut Out<'_>) {
        let states = self
            .conns
            .iter()
            .flat_map(|(c, v)| v.iter().map(move |e| (e.last_seq, *c, e.end)));
        for (c, end) in evict::idlest(states, evict::how_many(self.max_conns)) {
            let Some(mut e) = evict::take_end(&mut self.conns, c, |e| e.end == end) else {
                continue;
            };
            self.count -= 1;
            let which = settle(&mut self.delegates, &self.budget, &mut e, out);
            self.delegates[which].closed(c, out);
        }
    }

    /// Decides every undecided connection with what it has.
    fn settle_all(&mut self, out: &mut Out<'_>) {
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for c in keys {
            if let Some(list) = self.conns.get_mut(&c) {
                for e in list.iter_mut() {
                    settle(&mut self.delegates, &self.budget, e, out);
                }
            }
        }
    }
}

/// How sure each candidate is; `Some(choice)` once one is sure, or, when
/// `last`, whatever is likely enough, else raw.
fn judge(delegates: &mut [Box<dyn Decoder>], u: &Undecided, last: bool) -> Option<usize> {
    let mut best = (0u8, RAW);
    for side in 0..2 {
        let (Some(ev), data) = (&u.first[side], &u.seen[side]) else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        for (i, d) in delegates.iter_mut().enumerate() {
            if i == RAW {
                continue;
            }
            let mut c = d.detect(data, ev).min(100);
            if i == HTTP2 {
                c = c.max(h2::confidence(data));
            }
            if c > best.0 {
                best = (c, i);
            }
        }
    }
    if best.0 >= SURE || (last && best.0 >= LIKELY) {
        Some(best.1)
    } else if last {
        Some(RAW)
    } else {
        None
    }
}

/// Decides `e` now if it is undecided, handing its held events on; returns
/// the decoder it uses.
fn settle(
    delegates: &mut [Box<dyn Decoder>],
    budget: &Budget,
    e: &mut Entry,
    out: &mut Out<'_>,
) -> usize {
    match &e.state {
        State::Decided(i) => *i,
        State::Undecided(u) => {
            let which = judge(delegates, u, true).unwrap_or(RAW);
            hand_on(delegates, budget, e, which, out);
            which
        }
    }
}

fn hand_on(
    delegates: &mut [Box<dyn Decoder>],
    budget: &Budget,
    e: &mut Entry,
    which: usize,
    out: &mut Out<'_>,
) {
    if let State::Undecided(u) = std::mem::replace(&mut e.state, State::Decided(which)) {
        budget.give(u.accounted);
        for ev in &u.events {
            delegates[which].decode(ev, out);
        }
    }
}

impl Decoder for Auto {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, ev: &Arc<Event>, out: &mut Out<'_>) {
        let key = ev.stream_key();
        let known = self
            .conns
            .get(&key.conn)
            .is_some_and(|l| l.iter().any(|e| e.end == key.end));
        if !known {
            if self.count >= self.max_conns {
                self.evict_idle(out);
            }
            self.conns.entry(key.conn).or_default().push(Entry {
                end: key.end,
                last_seq: ev.seq,
                state: State::Undecided(Box::new(Undecided {
                    events: Vec::new(),
                    seen: [Vec::new(), Vec::new()],
                    first: [None, None],
                    accounted: 0,
                    held: 0,
                })),
            });
            self.count += 1;
            // Bounded like the connections: past that, the oldest wait
            // only for their events or their close.
            if self.waiting.len() >= 2 * self.max_conns {
                self.waiting.pop_front();
            }
            self.waiting.push_back((Instant::now(), key.conn, key.end));
        }
        let Some(e) = self
            .conns
            .get_mut(&key.conn)
            .and_then(|l| l.iter_mut().find(|e| e.end == key.end))
        else {
            return;
        };
        e.last_seq = ev.seq;
        let u = match &mut e.state {
            State::Decided(i) => return self.delegates[*i].decode(ev, out),
            State::Undecided(u) => u,
        };
        u.events.push(Arc::clone(ev));
        let seen = &mut u.seen[key.side];
        let take = (WINDOW - seen.len()).min(ev.data.len());
        seen.extend_from_slice(&ev.data[..take]);
        u.first[key.side].get_or_insert_with(|| Arc::clone(ev));
        let held = ev.data.len() + std::mem::size_of::<Event>();
        let room = self.budget.try_take(held);
        if room {
            u.accounted += held;
        }
        u.held += ev.data.len();
        // No more waiting once bytes are missing (what follows is not the
        // continuation), both windows are full, or enough is held.
        let last = !room
            || ev.truncated
            || u.seen.iter().all(|s| s.len() >= WINDOW)
            || u.events.len() >= MAX_EVENTS
            || u.held >= MAX_HELD;
        if let Some(which) = judge(&mut self.delegates, u, last) {
            hand_on(&mut self.delegates, &self.budget, e, which, out);
        }
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        self.settle_all(out);
        for d in &mut self.delegates {
            d.lost(count, out);
        }
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        let Some(list) = self.conns.remove(&conn) else {
            return;
        };
        self.count -= list.len();
        let mut used = Vec::new();
        for mut e in list {
            let which = settle(&mut self.delegates, &self.budget, &mut e, out);
            if !used.contains(&which) {
                used.push(which);
            }
        }
        for which in used {
            self.delegates[which].closed(conn, out);
        }
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        self.settle_all(out);
        self.conns.clear();
        self.waiting.clear();
        self.count = 0;
        for d in &mut self.delegates {
            d.finish(out);
        }
    }

    fn flush(&mut self, out: &mut Out<'_>) {
        self.settle_waited(Instant::now(), out);
        for d in &mut self.delegates {
            d.flush(out);
        }
    }

    fn detect(&mut self, data: &[u8], event: &Event) -> u8 {
        let mut best = h2::confidence(data);
        for (i, d) in self.delegates.iter_mut().enumerate() {
            if i != RAW {
                best = best.max(d.detect(data, event));
            }
        }
        best
    }
}
