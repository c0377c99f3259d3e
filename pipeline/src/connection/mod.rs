//! The connection stage: the two ends of each connection joined, each byte once.
//!
//! With both ends of a connection captured, every byte shows up twice: in the
//! sender's `send` and in the receiver's `recv`. This stage turns the syscall
//! events of each direction ("lane") of a connection into one ordered stream
//! of events seen from the sender, each unit (byte, or message) once:
//!
//! * Stream and seqpacket lanes with positions (the kernel counts every
//!   direction; see the probe's position.h) are merged by position: a unit is
//!   taken from whichever event holds it first, sends and receives alike, and
//!   a unit no event holds becomes a gap the decoder is told of.
//! * Lanes without positions (captures written before positions existed, or
//!   directions whose counting the kernel gave up on) take the sender's events
//!   and use the receiver's only while no send of that lane was seen.
//! * Datagram lanes have no positions: a receive is taken as the copy of a
//!   captured send when one is outstanding, by count, within a short time.
//!
//! Every event handed on has `dir = send`, the sender as `pid`/`comm`, the
//! receiver as `peer_pid`/`peer_comm`, and `via` saying whose syscall held
//! the bytes.

mod datagram;
mod ident;
mod lane;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::event::{Direction, Event, Lost, SockKind, SourceItem};

use ident::Identities;
use lane::Lane;

/// How long a lane waits for the units before a held piece (in kernel time,
/// or in wall time when no event comes) before it calls them missing. Kernel
/// records of one byte's send and receive are a few microseconds apart; the
/// reorder window has already sorted them by time.
const GAP_GRACE_NS: u64 = 50_000_000;
const GAP_GRACE: Duration = Duration::from_millis(50);
/// Lanes kept before the longest idle ones are forgotten.
const MAX_LANES: usize = 65_536;
/// Units a lane may hold back while it waits for a gap to fill, before it
/// gives up waiting.
const MAX_HELD_BYTES: usize = 16 << 20;

/// What the stage hands on.
#[derive(Debug)]
pub enum Output {
    Item(SourceItem),
    /// A loss the stage could not place on a lane: decoders must treat every
    /// connection without positions as having a gap.
    LostUnplaced(Lost),
}

/// The connection stage.
pub struct Connections {
    lanes: FxHashMap<LaneKey, Lane>,
    idents: Identities,
    /// Newest kernel time seen, per node: the clocks for gap timeouts.
    clocks: Clocks,
    /// Some lane has no positions: a kernel loss cannot be placed.
    unpositioned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct LaneKey {
    conn: u64,
    lane: u8,
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

impl Connections {
    pub fn new() -> Self {
        Connections {
            lanes: FxHashMap::default(),
            idents: Identities::default(),
            clocks: Clocks::default(),
            unpositioned: false,
        }
    }

    /// Lanes currently tracked.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Takes one item in kernel-time order (per lane in capture order), handing
    /// on whatever it completes.
    pub fn push(&mut self, item: SourceItem, now: Instant, out: &mut impl FnMut(Output)) {
        match item {
            SourceItem::Event(ev) => {
                self.clocks.see(&ev.node, ev.ts_ns);
                self.idents.learn(&ev);
                if ev.via.is_some() {
                    // Already a connection-view event (a replay of one).
                    out(Output::Item(SourceItem::Event(ev)));
                    return;
                }
                let key = self.key_of(&ev);
                if !self.lanes.contains_key(&key) && self.lanes.len() >= MAX_LANES {
                    self.evict(now, out);
                }
                let lane = self
                    .lanes
                    .entry(key)
                    .or_insert_with(|| Lane::new(ev.sock, Arc::clone(&ev.node)));
                // A receive waiting for its lane's offset counts as without
                // a position: its lane may never get one.
                if ev.pos.is_none() && ev.sock != SockKind::Dgram {
                    self.unpositioned = true;
                }
                lane.push(&ev, &self.idents, now, &mut |e| {
                    out(Output::Item(SourceItem::Event(Arc::new(e))))
                });
                self.expire(now, out);
            }
            SourceItem::Lost(l) => {
                if self.unpositioned || self.lanes.is_empty() {
                    out(Output::LostUnplaced(l));
                } else {
                    out(Output::Item(SourceItem::Lost(l)));
                }
            }
            SourceItem::Closed { conn, ts_ns } => {
                for lane in [0, 1] {
                    if let Some(mut l) = self.lanes.remove(&LaneKey { conn, lane }) {
                        l.flush(&self.idents, now, &mut |e| {
                            out(Output::Item(SourceItem::Event(Arc::new(e))))
                        });
                    }
                }
                out(Output::Item(SourceItem::Closed { conn, ts_ns }));
            }
        }
    }

    /// Called now and then when no item comes: lanes that waited long enough
    /// for missing units give up and hand on what they hold.
    pub fn tick(&mut self, now: Instant, out: &mut impl FnMut(Output)) {
        self.expire(now, out);
    }

    /// The input ended: everything held goes out, gaps included.
    pub fn finish(&mut self, out: &mut impl FnMut(Output)) {
        let now = Instant::now();
        let mut keys: Vec<LaneKey> = self.lanes.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            if let Some(mut l) = self.lanes.remove(&k) {
                l.flush(&self.idents, now, &mut |e| {
                    out(Output::Item(SourceItem::Event(Arc::new(e))))
                });
            }
        }
    }

    fn key_of(&mut self, ev: &Event) -> LaneKey {
        // A datagram connection is its receiving socket: one way, one lane,
        // whoever sends to it, connected or not (the probe tells only a
        // connected sender's peer).
        let lane = if ev.sock == SockKind::Dgram {
            0
        } else if ev.pos.is_some() || ev.rpos.is_some() || ev.lane != 0 || ev.peer_socket != 0 {
            ev.lane
        } else {
            // A capture without lanes: the two ends are told apart by socket,
            // as the first and second socket seen of the connection.
            self.idents.lane_of(ev)
        };
        LaneKey {
            conn: ev.conn,
            lane,
        }
    }

    fn expire(&mut self, now: Instant, out: &mut impl FnMut(Output)) {
        for lane in self.lanes.values_mut() {
            // The clock is looked up only for a lane that waits: this runs
            // for every lane at every event.
            if lane.is_waiting() && lane.waiting(self.clocks.now(lane.node()), now) {
                lane.give_up_waiting(&self.idents, now, &mut |e| {
                    out(Output::Item(SourceItem::Event(Arc::new(e))))
                });
            }
        }
    }

    /// Forgets the longest idle quarter of the lanes, handing on what they
    /// held. Idle by arrival (the sequence number of a lane's last event),
    /// not by kernel time: nodes' clocks are not comparable.
    fn evict(&mut self, now: Instant, out: &mut impl FnMut(Output)) {
        let mut by_age: Vec<(u64, LaneKey)> =
            self.lanes.iter().map(|(k, l)| (l.last_seq(), *k)).collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(MAX_LANES / 4) {
            if let Some(mut l) = self.lanes.remove(&k) {
                l.flush(&self.idents, now, &mut |e| {
                    out(Output::Item(SourceItem::Event(Arc::new(e))))
                });
            }
        }
    }
}

/// The newest kernel time seen from each node (one, unnamed, for a capture
/// of one machine). Each kernel counts from its own boot, so a lane waits by
/// its own node's clock: with one clock for all, the node booted last would
/// see every wait of its lanes already over, and call bytes missing that
/// were only a moment late.
#[derive(Default)]
struct Clocks {
    by_node: FxHashMap<Arc<str>, u64>,
}

/// Nodes whose clocks are kept before they start over (a hostile replay
/// could name endless nodes); a forgotten clock only makes its lanes wait
/// by wall time alone.
const MAX_CLOCKS: usize = 4096;

impl Clocks {
    fn see(&mut self, node: &Arc<str>, ts_ns: u64) {
        if let Some(t) = self.by_node.get_mut(&**node) {
            *t = (*t).max(ts_ns);
            return;
        }
        if self.by_node.len() >= MAX_CLOCKS {
            self.by_node.clear();
        }
        self.by_node.insert(Arc::clone(node), ts_ns);
    }

    fn now(&self, node: &str) -> u64 {
        self.by_node.get(node).copied().unwrap_or(0)
    }
}

/// The sockets at the two ends of a lane, as far as its events told them:
/// (sender's, receiver's), 0 where not known yet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ends {
    pub sender: u64,
    pub receiver: u64,
}

impl Ends {
    /// Learns what `ev` says of the two sockets.
    fn learn(&mut self, ev: &Event) {
        let (s, r) = match ev.dir {
            Direction::Send => (ev.socket, ev.peer_socket),
            Direction::Recv => (ev.peer_socket, ev.socket),
        };
        if s != 0 {
            self.sender = s;
        }
        if r != 0 {
            self.receiver = r;
        }
    }
}

/// A name the capture's own events taught, else the one the source found for
/// the peer (the process may never have made a syscall spf saw).
fn known_or(seen: Arc<str>, source: &Arc<str>) -> Arc<str> {
    if seen.is_empty() {
        Arc::clone(source)
    } else {
        seen
    }
}

/// The connection-view event for `data` of `src`, seen from the sender.
fn from_sender(
    src: &Event,
    ends: Ends,
    idents: &Identities,
    data: bytes::Bytes,
    pos: Option<u64>,
    missing: u64,
) -> Event {
    let mut e = Event {
        seq: src.seq,
        ts_ns: src.ts_ns,
        time_ns: src.time_ns,
        path: Arc::clone(&src.path),
        sock: src.sock,
        dir: Direction::Send,
        conn: src.conn,
        lane: src.lane,
        pos,
        epoch: src.epoch,
        skip: 0,
        len: data.len() as u64 + missing,
        truncated: missing > 0,
        data,
        via: Some(src.dir),
        node: Arc::clone(&src.node),
        ..Event::default()
    };
    match src.dir {
        Direction::Send => {
            e.pid = src.pid;
            e.tid = src.tid;
            e.comm = Arc::clone(&src.comm);
            e.cgroup = src.cgroup;
            e.container = src.container.clone();
            e.socket = src.socket;
            e.peer_socket = ends.receiver;
            e.role = src.role;
            e.peer_pid = src.peer_pid;
            if let Some(r) = idents.of_socket(ends.receiver) {
                e.peer_pid = r.pid;
                e.peer_comm = Arc::clone(&r.comm);
            } else {
                e.peer_comm = known_or(idents.comm_of_pid(&src.node, src.peer_pid), &src.peer_comm);
            }
        }
        Direction::Recv => {
            e.peer_pid = src.pid;
            e.peer_comm = Arc::clone(&src.comm);
            e.peer_socket = src.socket;
            e.socket = ends.sender;
            e.role = src.role.other();
            match idents.of_socket(ends.sender) {
                Some(s) => {
                    e.pid = s.pid;
                    e.comm = Arc::clone(&s.comm);
                    e.cgroup = s.cgroup;
                    e.container = s.container.clone();
                }
                None => {
                    e.pid = src.peer_pid;
                    e.comm = known_or(idents.comm_of_pid(&src.node, src.peer_pid), &src.peer_comm);
                }
            }
        }
    }
    e
}

#[cfg(test)]
mod tests;
