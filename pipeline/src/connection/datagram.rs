//! Datagrams of one receiving socket, each kept once.
//!
//! Datagrams have no stream positions (a sender that names its destination
//! never tells the probe which socket receives), but they keep their
//! boundaries and their order per sender. A datagram captured at both ends
//! is one send and, later or earlier, one receive on the same lane: the
//! first of the two to arrive is kept, and the other, when it comes within
//! the window, is taken as its copy. Counting, not comparing contents: with
//! several senders, a receive may be matched to another sender's send of the
//! same moment, which keeps each datagram once but may swap which of two
//! near-simultaneous ones carries which sender's name.

use std::collections::VecDeque;

use crate::event::{Direction, Event};

/// How long a datagram captured at one end waits for its copy at the other
/// (kernel time): a receiver may read its queue late.
const WINDOW_NS: u64 = 5_000_000_000;
/// Datagrams remembered per lane and side.
const MAX_PENDING: usize = 4096;

#[derive(Default)]
pub(super) struct Datagrams {
    /// Kernel times of kept sends whose receive has not come yet.
    sends: VecDeque<u64>,
    /// Kernel times of kept receives whose send has not come yet.
    recvs: VecDeque<u64>,
}

impl Datagrams {
    /// Whether to hand `ev` on (false: it is the copy of one already kept).
    pub fn keep(&mut self, ev: &Event) -> bool {
        let horizon = ev.ts_ns.saturating_sub(WINDOW_NS);
        for q in [&mut self.sends, &mut self.recvs] {
            while q.front().is_some_and(|&t| t < horizon) {
                q.pop_front();
            }
        }
        let (mine, theirs) = match ev.dir {
            Direction::Send => (&mut self.sends, &mut self.recvs),
            Direction::Recv => (&mut self.recvs, &mut self.sends),
        };
        if theirs.pop_front().is_some() {
            return false;
        }
        if mine.len() >= MAX_PENDING {
            mine.pop_front();
        }
        mine.push_back(ev.ts_ns);
        true
    }
}
