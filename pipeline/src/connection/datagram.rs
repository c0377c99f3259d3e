//! Datagrams to one receiving socket, each kept once.
//!
//! Datagrams have no stream positions (a sender that names its destination
//! never tells the probe which socket receives), but they keep their
//! boundaries and their order per sender. A datagram captured at both ends
//! is one send and, later or earlier, one receive of the same connection
//! (its receiving socket): the first of the two to arrive is kept, and the
//! other, when it comes within the window and looks the same (no longer,
//! the same first bytes), is taken as its copy. Looks, not mere counting: a
//! receive whose send was never captured (queued before the capture began,
//! or from a sender the filters leave out) must not stand for another
//! datagram's send, which would lose that one and double this one.

use std::collections::VecDeque;

use crate::event::{Direction, Event};

/// How long a datagram captured at one end waits for its copy at the other
/// (kernel time): a receiver may read its queue late.
const WINDOW_NS: u64 = 5_000_000_000;
/// Datagrams remembered per connection and side.
const MAX_PENDING: usize = 4096;
/// Pending datagrams a new one is compared with: the copy of a datagram is
/// nearly always the oldest; the bound keeps hostile traffic linear.
const MAX_SCAN: usize = 64;
/// Leading bytes compared.
const HEAD: usize = 32;

/// One kept datagram whose copy has not come yet.
struct Kept {
    ts_ns: u64,
    /// Bytes the syscall moved.
    len: u64,
    head: [u8; HEAD],
    head_len: u8,
}

impl Kept {
    fn of(ev: &Event) -> Kept {
        let n = ev.data.len().min(HEAD);
        let mut head = [0u8; HEAD];
        head[..n].copy_from_slice(&ev.data[..n]);
        Kept {
            ts_ns: ev.ts_ns,
            len: ev.len,
            head,
            head_len: n as u8,
        }
    }

    /// Whether `recv` can be the receive of `send`: a receive may read less
    /// than was sent (a short buffer cuts a datagram), never more, and what
    /// both captured of its start is the same.
    fn pair(send: &Kept, recv: &Kept) -> bool {
        let n = usize::from(send.head_len.min(recv.head_len));
        recv.len <= send.len && send.head[..n] == recv.head[..n]
    }
}

#[derive(Default)]
pub(super) struct Datagrams {
    /// Kept sends whose receive has not come yet, oldest first.
    sends: VecDeque<Kept>,
    /// Kept receives whose send has not come yet, oldest first.
    recvs: VecDeque<Kept>,
}

impl Datagrams {
    /// Whether to hand `ev` on (false: it is the copy of one already kept).
    pub fn keep(&mut self, ev: &Event) -> bool {
        let horizon = ev.ts_ns.saturating_sub(WINDOW_NS);
        for q in [&mut self.sends, &mut self.recvs] {
            while q.front().is_some_and(|k| k.ts_ns < horizon) {
                q.pop_front();
            }
        }
        let this = Kept::of(ev);
        let (mine, theirs) = match ev.dir {
            Direction::Send => (&mut self.sends, &mut self.recvs),
            Direction::Recv => (&mut self.recvs, &mut self.sends),
        };
        let copy = theirs.iter().take(MAX_SCAN).position(|k| match ev.dir {
            Direction::Send => Kept::pair(&this, k),
            Direction::Recv => Kept::pair(k, &this),
        });
        if let Some(i) = copy {
            theirs.remove(i);
            return false;
        }
        if mine.len() >= MAX_PENDING {
            mine.pop_front();
        }
        mine.push_back(this);
        true
    }
}
