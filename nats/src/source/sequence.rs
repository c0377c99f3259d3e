//! Puts each sender's messages back in its order and drops repeats.
//!
//! Every message of a node's sink carries (node, run, kind, seq) with `seq`
//! 1, 2, 3, ... and the number of its first record. JetStream delivers at
//! least once, and a sink that republishes after a failed acknowledgement may
//! get a later message stored before an earlier one. So per sender: a message
//! below the next expected sequence is a repeat and is dropped; one above it
//! waits (bounded in count, bytes and time) for those before it; when the
//! wait gives up, the records that never came are reported as lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// Who sent a message: one sequence each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sender {
    pub node: Arc<str>,
    pub run: Arc<str>,
    pub kind: Arc<str>,
}

/// Where a message stands in its sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub seq: u64,
    /// Number of its first record in the sender's record numbering.
    pub first: u64,
    pub records: u64,
}

/// What comes out, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<T> {
    Msg(T),
    /// Records of this sender that never arrived.
    Gap {
        records: u64,
    },
}

pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
    pub wait: Duration,
    /// Senders remembered at most (the longest quiet are forgotten).
    pub senders: usize,
}

struct Track<T> {
    /// The next sequence number to hand on, and the record number it starts at.
    next: u64,
    next_record: u64,
    held: BTreeMap<u64, (Place, usize, T)>,
    waiting_since: Option<Instant>,
    last_seen: u64,
}

pub struct Resequencer<T> {
    tracks: FxHashMap<Sender, Track<T>>,
    limits: Limits,
    held_bytes: usize,
    held: usize,
    clock: u64,
    /// Repeats dropped.
    pub duplicates: u64,
}

impl<T> Resequencer<T> {
    pub fn new(limits: Limits) -> Self {
        Resequencer {
            tracks: FxHashMap::default(),
            limits,
            held_bytes: 0,
            held: 0,
            clock: 0,
            duplicates: 0,
        }
    }

    /// Messages held, waiting for earlier ones.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes one message of `bytes` bytes; hands on (through `out`) whatever
    /// is now in order. A repeat is handed back as `Err` (it is dropped).
    pub fn push(
        &mut self,
        from: &Sender,
        place: Place,
        bytes: usize,
        msg: T,
        now: Instant,
        out: &mut impl FnMut(Out<T>),
    ) -> Result<(), T> {
        self.clock += 1;
        if !self.tracks.contains_key(from) {
            self.forget_quiet(out);
            self.tracks.insert(
                from.clone(),
                Track {
                    // The first message seen of a sender: its sequence starts
                    // here (a consumer may begin in the middle of a stream).
                    next: place.seq,
                    next_record: place.first,
                    held: BTreeMap::new(),
                    waiting_since: None,
                    last_seen: 0,
                },
            );
        }
        let Some(t) = self.tracks.get_mut(from) else {
            return Err(msg);
        };
        t.last_seen = self.clock;
        if place.seq < t.next || t.held.contains_key(&place.seq) {
            self.duplicates += 1;
            return Err(msg);
        }
        if place.seq == t.next {
            t.next += 1;
            t.next_record = place.first.saturating_add(place.records);
            out(Out::Msg(msg));
            release(t, &mut self.held, &mut self.held_bytes, out);
            return Ok(());
        }
        t.held.insert(place.seq, (place, bytes, msg));
        t.waiting_since.get_or_insert(now);
        self.held += 1;
        self.held_bytes += bytes;
        if self.held > self.limits.messages || self.held_bytes > self.limits.bytes {
            self.give_up(from, out);
        }
        Ok(())
    }

    /// Gives up on gaps older than the wait.
    pub fn tick(&mut self, now: Instant, out: &mut impl FnMut(Out<T>)) {
        let late: Vec<Sender> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                t.waiting_since
                    .is_some_and(|w| now.duration_since(w) >= self.limits.wait)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in late {
            self.give_up(&s, out);
        }
    }

    /// Hands on everything held, gaps reported (the end of the input).
    pub fn drain(&mut self, out: &mut impl FnMut(Out<T>)) {
        let all: Vec<Sender> = self.tracks.keys().cloned().collect();
        for s in all {
            while self.tracks.get(&s).is_some_and(|t| !t.held.is_empty()) {
                self.give_up(&s, out);
            }
        }
    }

    /// Skips the gap before the first held message of `from`.
    fn give_up(&mut self, from: &Sender, out: &mut impl FnMut(Out<T>)) {
        let Some(t) = self.tracks.get_mut(from) else {
            return;
        };
        let Some((&seq, (place, _, _))) = t.held.iter().next() else {
            return;
        };
        let missing = place.first.saturating_sub(t.next_record);
        out(Out::Gap {
            records: missing.max(seq - t.next),
        });
        t.next = seq;
        t.next_record = place.first;
        release(t, &mut self.held, &mut self.held_bytes, out);
    }

    /// Keeps the number of senders bounded: the longest quiet one is
    /// forgotten (what it held handed on first).
    fn forget_quiet(&mut self, out: &mut impl FnMut(Out<T>)) {
        if self.tracks.len() < self.limits.senders {
            return;
        }
        let Some(oldest) = self
            .tracks
            .iter()
            .min_by_key(|(_, t)| t.last_seen)
            .map(|(s, _)| s.clone())
        else {
            return;
        };
        while self.tracks.get(&oldest).is_some_and(|t| !t.held.is_empty()) {
            self.give_up(&oldest, out);
        }
        self.tracks.remove(&oldest);
    }
}

/// Hands on the held messages that now follow in order.
fn release<T>(
    t: &mut Track<T>,
    held: &mut usize,
    held_bytes: &mut usize,
    out: &mut impl FnMut(Out<T>),
) {
    while let Some((place, bytes, msg)) = t.held.remove(&t.next) {
        *held -= 1;
        *held_bytes -= bytes;
        t.next += 1;
        t.next_record = place.first.saturating_add(place.records);
        out(Out::Msg(msg));
    }
    t.waiting_since = if t.held.is_empty() {
        None
    } else {
        t.waiting_since
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            messages: 4,
            bytes: 1 << 20,
            wait: Duration::from_secs(5),
            senders: 2,
        }
    }

    fn sender(node: &str) -> Sender {
        Sender {
            node: node.into(),
            run: "r".into(),
            kind: "events".into(),
        }
    }

    /// Message `seq` of 10 records each.
    fn place(seq: u64) -> Place {
        Place {
            seq,
            first: (seq - 1) * 10,
            records: 10,
        }
    }

    fn feed(r: &mut Resequencer<u64>, s: &Sender, seqs: &[u64], now: Instant) -> Vec<Out<u64>> {
        let mut got = Vec::new();
        for &q in seqs {
            let _ = r.push(s, place(q), 1, q, now, &mut |o| got.push(o));
        }
        got
    }

    #[test]
    fn order_is_restored_and_repeats_dropped() {
        let mut r = Resequencer::new(limits());
        let a = sender("a");
        let now = Instant::now();
        let got = feed(&mut r, &a, &[1, 3, 4, 2, 2, 3, 5, 1], now);
        let msgs: Vec<u64> = got
            .iter()
            .map(|o| match o {
                Out::Msg(m) => *m,
                Out::Gap { .. } => panic!("no gap expected"),
            })
            .collect();
        assert_eq!(msgs, [1, 2, 3, 4, 5]);
        assert_eq!(r.duplicates, 3);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait_and_counted_in_records() {
        let mut r = Resequencer::new(limits());
        let a = sender("a");
        let now = Instant::now();
        let mut got = feed(&mut r, &a, &[1, 4, 5], now);
        assert_eq!(got.len(), 1);
        r.tick(now + Duration::from_secs(1), &mut |o| got.push(o));
        assert_eq!(got.len(), 1);
        r.tick(now + Duration::from_secs(5), &mut |o| got.push(o));
        assert_eq!(
            got,
            [
                Out::Msg(1),
                Out::Gap { records: 20 },
                Out::Msg(4),
                Out::Msg(5)
            ]
        );
        // A late copy of a skipped message is too late now.
        assert!(feed(&mut r, &a, &[2], now).is_empty());
    }

    #[test]
    fn holding_is_bounded() {
        let mut r = Resequencer::new(limits());
        let a = sender("a");
        let got = feed(&mut r, &a, &[1, 3, 4, 5, 6, 7], Instant::now());
        assert_eq!(r.held(), 0);
        assert_eq!(got[1], Out::Gap { records: 10 });
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn senders_are_apart_and_bounded() {
        let mut r = Resequencer::new(limits());
        let now = Instant::now();
        let (a, b, c) = (sender("a"), sender("b"), sender("c"));
        let mut got = feed(&mut r, &a, &[1, 3], now);
        got.extend(feed(&mut r, &b, &[7, 8], now));
        assert_eq!(got, [Out::Msg(1), Out::Msg(7), Out::Msg(8)]);
        // A third sender: `a`, the quietest, is forgotten, its held message
        // handed on after its gap.
        got.clear();
        got.extend(feed(&mut r, &c, &[1], now));
        assert_eq!(got, [Out::Gap { records: 10 }, Out::Msg(3), Out::Msg(1)]);
    }
}
