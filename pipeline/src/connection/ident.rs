//! Who is behind each socket, learned from the events themselves: a receive
//! holds the receiver's process, but the sender's is only known from the
//! sender's own events (or, by pid alone, from the kernel's peer credentials).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::event::{Direction, Event};

/// Entries kept per map before it starts over: the maps only name processes,
/// so forgetting under heavy churn costs names, not bytes.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone)]
pub(super) struct Ident {
    pub pid: u32,
    pub comm: Arc<str>,
    pub cgroup: u64,
    pub container: Option<Arc<crate::event::Container>>,
}

#[derive(Default)]
pub(super) struct Identities {
    sockets: FxHashMap<u64, Ident>,
    /// Command names by node, then pid: pids are one kernel's, and nodes
    /// reuse each other's.
    comms: FxHashMap<Arc<str>, FxHashMap<u32, Arc<str>>>,
    /// Entries in `comms`, all nodes together.
    comm_count: usize,
    /// For captures without lanes: the first two sockets seen of a connection.
    ends: FxHashMap<u64, [u64; 2]>,
    empty: Option<Arc<str>>,
}

impl Identities {
    pub fn learn(&mut self, ev: &Event) {
        if ev.socket != 0 {
            let known = self
                .sockets
                .get(&ev.socket)
                .is_some_and(|i| i.pid == ev.pid && Arc::ptr_eq(&i.comm, &ev.comm));
            if !known {
                if self.sockets.len() >= MAX_ENTRIES {
                    self.sockets.clear();
                }
                self.sockets.insert(
                    ev.socket,
                    Ident {
                        pid: ev.pid,
                        comm: Arc::clone(&ev.comm),
                        cgroup: ev.cgroup,
                        container: ev.container.clone(),
                    },
                );
            }
        }
        if ev.pid != 0 && !ev.comm.is_empty() {
            self.learn_comm(ev);
        }
    }

    pub fn of_socket(&self, socket: u64) -> Option<&Ident> {
        if socket == 0 {
            return None;
        }
        self.sockets.get(&socket)
    }

    /// The first name seen of `pid` on `node` (a process's threads may each
    /// have a name of their own; the first stays).
    fn learn_comm(&mut self, ev: &Event) {
        let known = self
            .comms
            .get(&*ev.node)
            .is_some_and(|m| m.contains_key(&ev.pid));
        if known {
            return;
        }
        if self.comm_count >= MAX_ENTRIES {
            self.comms.clear();
            self.comm_count = 0;
        }
        let by_pid = match self.comms.get_mut(&*ev.node) {
            Some(m) => m,
            None => self.comms.entry(Arc::clone(&ev.node)).or_default(),
        };
        by_pid.insert(ev.pid, Arc::clone(&ev.comm));
        self.comm_count += 1;
    }

    pub fn comm_of_pid(&self, node: &str, pid: u32) -> Arc<str> {
        match self.comms.get(node).and_then(|m| m.get(&pid)) {
            Some(c) => Arc::clone(c),
            None => self.empty.clone().unwrap_or_else(|| Arc::from("")),
        }
    }

    /// The lane of an event that carries none (a capture made before lanes
    /// existed): the first socket seen of its connection sends on lane 0 and
    /// receives on lane 1, the second the other way round.
    pub fn lane_of(&mut self, ev: &Event) -> u8 {
        if ev.socket == 0 {
            // One unknown end: what it sends and what it receives.
            return u8::from(ev.dir == Direction::Recv);
        }
        if self.ends.len() >= MAX_ENTRIES && !self.ends.contains_key(&ev.conn) {
            self.ends.clear();
        }
        let ends = self.ends.entry(ev.conn).or_insert([0, 0]);
        let first = if ends[0] == 0 || ends[0] == ev.socket {
            ends[0] = ev.socket;
            true
        } else {
            if ends[1] == 0 {
                ends[1] = ev.socket;
            }
            false
        };
        match (first, ev.dir) {
            (true, Direction::Send) | (false, Direction::Recv) => 0,
            (true, Direction::Recv) | (false, Direction::Send) => 1,
        }
    }
}
