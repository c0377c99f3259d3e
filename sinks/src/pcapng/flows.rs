//! Every connection's flow: the table, bounded by `limits.connections`, and
//! the connections whose packets wait for their protocol to be known.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use spf_pipeline::Event;

use super::addr;
use super::flow::{Flow, State};
use super::write::Shared;

/// How a connection's server port is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The run's decoder names one protocol: its port for every stream.
    Fixed(u16),
    /// Nothing names protocols (the `raw` decoder): one port per socket path.
    PerPath,
    /// Decoded records name each connection's protocol (`auto`, plugins):
    /// a new stream connection's packets wait for its first decoded record,
    /// within bounds, then take that protocol's port.
    FromRecords,
}

/// Bounds on holding a connection's packets while its protocol is unknown.
const HOLD_EVENTS: usize = 64;
const HOLD_BYTES: usize = 256 << 10;
const HOLD_TOTAL_EVENTS: usize = 16 << 10;
const HOLD_TOTAL_BYTES: usize = 16 << 20;
/// Held at most this long in kernel time (later events let it go) and in
/// wall time (a flush lets it go).
const HOLD_NS: u64 = 100_000_000;
const HOLD_WALL: Duration = Duration::from_millis(100);

/// Every connection's flow and what they share.
pub struct Flows {
    table: FxHashMap<u64, Flow>,
    /// Held flows in the order they began to wait: (conn, serial, kernel
    /// time of the first event, wall time).
    waiting: VecDeque<(u64, u64, u64, Instant)>,
    held_events: usize,
    held_bytes: usize,
    shared: Shared,
}

impl Flows {
    pub fn new(ports: Ports, comments: bool, max_flows: usize) -> Flows {
        Flows {
            table: FxHashMap::default(),
            waiting: VecDeque::new(),
            held_events: 0,
            held_bytes: 0,
            shared: Shared::new(ports, comments, max_flows),
        }
    }

    /// Writes an event's packets (or holds them while its connection's
    /// protocol is unknown).
    pub fn event(&mut self, ev: &Arc<Event>, out: &mut Vec<u8>) {
        let sh = &mut self.shared;
        sh.clock = (ev.time_ns as i64).wrapping_sub(ev.ts_ns as i64);
        sh.events += 1;
        if sh.first_time == 0 {
            sh.first_time = ev.time_ns;
        }
        sh.last_time = sh.last_time.max(ev.time_ns);
        if !self.table.contains_key(&ev.conn) {
            self.add(ev, out);
        }
        let Some(flow) = self.table.get_mut(&ev.conn) else {
            return;
        };
        flow.last_ts = ev.ts_ns;
        if !flow.held() {
            self.shared.packets(flow, ev, out);
        } else if flow.direction_of(ev).is_some() {
            if let State::Held { events, bytes } = &mut flow.state {
                events.push(Arc::clone(ev));
                *bytes += ev.data.len();
                self.held_events += 1;
                self.held_bytes += ev.data.len();
                if events.len() >= HOLD_EVENTS || *bytes >= HOLD_BYTES {
                    self.open(ev.conn, None, out);
                }
            }
        }
        // Flows that waited long enough, or too many waiting.
        while let Some(&(conn, serial, first_ts, _)) = self.waiting.front() {
            let over = self.held_events > HOLD_TOTAL_EVENTS || self.held_bytes > HOLD_TOTAL_BYTES;
            if !over && first_ts.saturating_add(HOLD_NS) > ev.ts_ns {
                break;
            }
            self.waiting.pop_front();
            self.open_if_waiting(conn, serial, out);
        }
    }

    /// A decoded record: its decoder names its connection's protocol.
    pub fn decoded(&mut self, conn: u64, decoder: &str, out: &mut Vec<u8>) {
        if self.shared.ports == Ports::FromRecords && self.table.get(&conn).is_some_and(Flow::held)
        {
            self.open(conn, addr::protocol_port(decoder), out);
        }
    }

    /// `count` events were lost somewhere in the run.
    pub fn lost(&mut self, count: u64) {
        self.shared.lost = self.shared.lost.saturating_add(count);
    }

    /// A connection ended: its FIN, and the flow goes.
    pub fn closed(&mut self, conn: u64, ts_ns: u64, out: &mut Vec<u8>) {
        if self.table.get(&conn).is_some_and(Flow::held) {
            self.open(conn, None, out);
        }
        let Some(mut flow) = self.table.remove(&conn) else {
            return;
        };
        let time = (ts_ns as i64).wrapping_add(self.shared.clock).max(0) as u64;
        if !flow.udp {
            self.shared.fin(&mut flow, time, out);
        }
        self.shared.forget(&flow);
    }

    /// Lets go of flows that waited past [`HOLD_WALL`]; all of them with
    /// `all`.
    pub fn expire(&mut self, now: Instant, all: bool, out: &mut Vec<u8>) {
        while let Some(&(conn, serial, _, since)) = self.waiting.front() {
            if !all && now.duration_since(since) < HOLD_WALL {
                break;
            }
            self.waiting.pop_front();
            self.open_if_waiting(conn, serial, out);
        }
    }

    /// Interface statistics for the end of the file.
    pub fn statistics(&self, out: &mut Vec<u8>) {
        self.shared.statistics(out);
    }

    fn add(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if self.table.len() >= self.shared.max_flows {
            self.evict(out);
        }
        let sh = &mut self.shared;
        sh.serial += 1;
        let mut flow = Flow::new(ev, sh.serial, sh.lost);
        let wait = !flow.udp && sh.ports == Ports::FromRecords;
        if wait {
            flow.state = State::Held {
                events: Vec::new(),
                bytes: 0,
            };
            self.waiting
                .push_back((ev.conn, flow.serial, ev.ts_ns, Instant::now()));
            if self.waiting.len() > 4 * sh.max_flows {
                // Entries of flows that no longer wait, dropped in one go.
                let table = &self.table;
                self.waiting
                    .retain(|&(c, s, ..)| table.get(&c).is_some_and(|f| f.serial == s && f.held()));
            }
            self.table.insert(ev.conn, flow);
        } else {
            sh.open(&mut flow, None, out);
            self.table.insert(ev.conn, flow);
        }
    }

    /// Forgets the least recently active eighth of the flows (writing what
    /// they hold first), to stay within `limits.connections`.
    fn evict(&mut self, out: &mut Vec<u8>) {
        let mut ages: Vec<(u64, u64)> = self.table.iter().map(|(&c, f)| (f.last_ts, c)).collect();
        let k = (ages.len() / 8).max(1).min(ages.len());
        ages.select_nth_unstable(k - 1);
        for &(_, conn) in &ages[..k] {
            if self.table.get(&conn).is_some_and(Flow::held) {
                self.open(conn, None, out);
            }
            if let Some(flow) = self.table.remove(&conn) {
                self.shared.forget(&flow);
            }
        }
    }

    fn open_if_waiting(&mut self, conn: u64, serial: u64, out: &mut Vec<u8>) {
        if self
            .table
            .get(&conn)
            .is_some_and(|f| f.serial == serial && f.held())
        {
            self.open(conn, None, out);
        }
    }

    /// Fixes a held flow's addresses (`port`: its protocol's, if known) and
    /// writes what it held.
    fn open(&mut self, conn: u64, port: Option<u16>, out: &mut Vec<u8>) {
        let Some(flow) = self.table.get_mut(&conn) else {
            return;
        };
        let State::Held { events, bytes } = std::mem::replace(&mut flow.state, State::Open) else {
            return;
        };
        self.held_events -= events.len();
        self.held_bytes -= bytes;
        self.shared.open(flow, port, out);
        for ev in &events {
            self.shared.packets(flow, ev, out);
        }
    }
}
