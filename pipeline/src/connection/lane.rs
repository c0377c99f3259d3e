//! One direction of one connection: its events merged into one stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::datagram::Datagrams;
use super::ident::Identities;
use super::{Ends, GAP_GRACE, GAP_GRACE_NS, MAX_HELD_BYTES, from_sender};
use crate::event::{Direction, Event, SockKind};

/// What one event held while its lane aligns counts as, besides its data:
/// events without data must not be free to hold.
const ALIGNING_EVENT_COST: usize = 256;

/// A piece that begins after the next unit to hand on: held until the units
/// before it arrive, or until waiting for them is given up.
struct Held {
    /// Units of the piece: bytes, or one message.
    data: Bytes,
    src: Arc<Event>,
}

pub(super) struct Lane {
    kind: SockKind,
    /// The node of its events: its waits go by that node's clock.
    node: Arc<str>,
    /// The sequence number of the latest event: how recently it was used.
    last_seq: u64,
    /// Positioned lanes: the epoch of the positions in use.
    epoch: u32,
    /// The next unit to hand on, in the kernel's counting.
    next: Option<u64>,
    /// Units handed on so far (gaps included): the position of what goes next
    /// in the lane's own counting, which starts at 0 and survives new epochs.
    handed: u64,
    /// Pieces beginning after `next`, by their first unit.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// The end of the furthest syscall seen: units up to here exist, even if
    /// no event held them (a send cut at snaplen whose receive is not in).
    want_end: u64,
    /// Since when the lane waits for units it has not got.
    waiting: Option<(u64, Instant)>,
    /// The latest event, for the metadata of a gap's record.
    last_src: Option<Arc<Event>>,
    /// A send was seen: where positions are unknown, receives are copies.
    has_sends: bool,
    /// Receives the source counted before it had aligned the two ends'
    /// counts (`rpos` without `pos`), handed on before any positioned event
    /// began the lane: their epoch, and where they end in the receiver's
    /// counting. Such a receive may hold bytes of a send whose event comes
    /// later with a position of its own, or bytes queued before the capture
    /// (which come before the first send's). It goes out at once, in the
    /// receiver's order (the other direction's records, a response to it,
    /// must not overtake it); the positioned events after it wait in
    /// `aligning`.
    early: Option<(u32, u64)>,
    /// Held while `early` waits for the offset between the two countings
    /// (an event with both `pos` and `rpos` gives it): then the lane begins
    /// where the early receives end, and what the held events repeat of
    /// them is dropped.
    aligning: Vec<Arc<Event>>,
    /// What `aligning` holds, counted as bytes (see ALIGNING_EVENT_COST).
    aligning_bytes: usize,
    /// `rpos - pos` of the latest event with both, and its epoch.
    offset: Option<(u32, u64)>,
    /// An epoch whose early receives were handed on unplaced: its later ones
    /// are not held any more.
    unplaced_epoch: Option<u32>,
    ends: Ends,
    dgram: Datagrams,
}

impl Lane {
    pub fn new(kind: SockKind, node: Arc<str>) -> Self {
        Lane {
            kind,
            node,
            last_seq: 0,
            epoch: 0,
            next: None,
            handed: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            want_end: 0,
            waiting: None,
            last_src: None,
            has_sends: false,
            early: None,
            aligning: Vec::new(),
            aligning_bytes: 0,
            offset: None,
            unplaced_epoch: None,
            ends: Ends::default(),
            dgram: Datagrams::default(),
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn push(
        &mut self,
        ev: &Arc<Event>,
        idents: &Identities,
        now: Instant,
        out: &mut impl FnMut(Event),
    ) {
        self.last_seq = self.last_seq.max(ev.seq);
        if self.kind == SockKind::Dgram {
            if self.dgram.keep(ev) {
                // Each datagram names its own ends: the receiver is the
                // connection's socket; the sender is the sending socket, or
                // for a receive, the peer a connected receiver has (else
                // unknown: several sockets may send to one).
                let ends = match ev.dir {
                    Direction::Send => Ends {
                        sender: ev.socket,
                        receiver: ev.conn,
                    },
                    Direction::Recv => Ends {
                        sender: ev.peer_socket,
                        receiver: ev.socket,
                    },
                };
                out(from_sender(
                    ev,
                    ends,
                    idents,
                    ev.data.clone(),
                    None,
                    self.missing_of(ev),
                ));
            }
            return;
        }
        // Datagrams name their own ends, each (above).
        self.ends.learn(ev);
        if let (Some(pos), Some(rpos)) = (ev.pos, ev.rpos) {
            self.offset = Some((ev.epoch, rpos.wrapping_sub(pos)));
        }
        if let (None, Some(rpos)) = (ev.pos, ev.rpos)
            && self.next.is_none()
            && self.offset_in(ev.epoch).is_none()
            && self.unplaced_epoch != Some(ev.epoch)
        {
            let end = rpos.saturating_add(self.units(ev.len, 1));
            match &mut self.early {
                Some((epoch, e)) if *epoch == ev.epoch => *e = (*e).max(end),
                _ => {
                    self.early = Some((ev.epoch, end));
                    // The wait for the offset starts now.
                    self.waiting = Some((ev.ts_ns, now));
                }
            }
            self.unpositioned(ev, idents, out);
            return;
        }
        if let Some((epoch, _)) = self.early {
            self.aligning_bytes += ev.data.len() + ALIGNING_EVENT_COST;
            self.aligning.push(Arc::clone(ev));
            if self.offset_in(epoch).is_some() || self.aligning_bytes > MAX_HELD_BYTES {
                self.place_aligning(idents, now, out);
            }
            return;
        }
        self.place(ev, idents, now, out);
    }

    /// The offset from the receiver's counting to the sender's in `epoch`.
    fn offset_in(&self, epoch: u32) -> Option<u64> {
        self.offset.filter(|(e, _)| *e == epoch).map(|(_, d)| d)
    }

    /// Where `ev` begins in the sender's counting, if known.
    fn placed(&self, ev: &Event) -> Option<u64> {
        ev.pos
            .or_else(|| Some(ev.rpos?.wrapping_sub(self.offset_in(ev.epoch)?)))
    }

    /// Hands `ev` to the positioned or the unpositioned path.
    fn place(
        &mut self,
        ev: &Arc<Event>,
        idents: &Identities,
        now: Instant,
        out: &mut impl FnMut(Event),
    ) {
        match self.placed(ev) {
            Some(pos) => self.positioned(ev, pos, idents, now, out),
            None => self.unpositioned(ev, idents, out),
        }
    }

    /// Ends the wait of the early receives: where the offset is known, the
    /// lane begins where they end (in the sender's counting); where it is
    /// not (waiting was given up), at the first positioned event, as before
    /// alignment existed. Then the held events are placed.
    fn place_aligning(&mut self, idents: &Identities, now: Instant, out: &mut impl FnMut(Event)) {
        let held = std::mem::take(&mut self.aligning);
        self.aligning_bytes = 0;
        if let Some((epoch, end)) = self.early.take() {
            match self.offset_in(epoch) {
                Some(d) if self.next.is_none() => {
                    self.epoch = epoch;
                    self.next = Some(end.wrapping_sub(d));
                }
                Some(_) => {}
                None => self.unplaced_epoch = Some(epoch),
            }
        }
        for ev in &held {
            self.place(ev, idents, now, out);
        }
    }

    /// Bytes an event moved that it neither holds nor skipped.
    fn missing_of(&self, ev: &Event) -> u64 {
        ev.len
            .saturating_sub(ev.skip)
            .saturating_sub(ev.data.len() as u64)
    }

    fn unpositioned(&mut self, ev: &Arc<Event>, idents: &Identities, out: &mut impl FnMut(Event)) {
        match ev.dir {
            Direction::Send => self.has_sends = true,
            // The sender's events hold these bytes.
            Direction::Recv if self.has_sends => return,
            Direction::Recv => {}
        }
        if ev.data.is_empty() && ev.skip >= ev.len {
            return;
        }
        let missing = self.missing_of(ev);
        let units = self.units(ev.data.len() as u64, 1);
        let pos = self.handed;
        self.handed = self
            .handed
            .saturating_add(units.saturating_add(self.units(missing, 0)));
        out(from_sender(
            ev,
            self.ends,
            idents,
            ev.data.clone(),
            Some(pos),
            missing,
        ));
    }

    /// Units of `bytes`: bytes on a stream, `messages` on seqpacket.
    fn units(&self, bytes: u64, messages: u64) -> u64 {
        if self.kind == SockKind::Seqpacket {
            messages
        } else {
            bytes
        }
    }

    fn positioned(
        &mut self,
        ev: &Arc<Event>,
        pos: u64,
        idents: &Identities,
        now: Instant,
        out: &mut impl FnMut(Event),
    ) {
        if ev.dir == Direction::Send {
            self.has_sends = true;
        }
        if ev.epoch != self.epoch {
            // The kernel counts this connection anew: what is held cannot be
            // placed against the new counting.
            if self.next.is_some() {
                self.flush(idents, now, out);
            }
            self.epoch = ev.epoch;
            self.next = None;
        }
        self.last_src = Some(Arc::clone(ev));
        let seqpacket = self.kind == SockKind::Seqpacket;
        // A seqpacket message is one unit, copied whole or skipped whole.
        let (start, span) = if seqpacket {
            (pos, u64::from(ev.skip == 0))
        } else {
            (pos.saturating_add(ev.skip), ev.data.len() as u64)
        };
        // Saturating: a replayed capture may carry any position.
        let end_of_call = pos.saturating_add(if seqpacket { 1 } else { ev.len });
        self.want_end = self.want_end.max(end_of_call);
        let next = *self.next.get_or_insert(pos);
        if span == 0 || (ev.data.is_empty() && !seqpacket) {
            // Nothing new here (a receive the sender's capture covers).
            self.note_wait(ev.ts_ns, now);
            return;
        }
        if start.saturating_add(span) <= next {
            return;
        }
        if start > next {
            self.hold(start, ev, idents, now, out);
            self.note_wait(ev.ts_ns, now);
            return;
        }
        let data = if seqpacket {
            ev.data.clone()
        } else {
            ev.data.slice((next - start) as usize..)
        };
        self.hand_on(ev, data, idents, out);
        self.release(idents, out);
        self.note_wait(ev.ts_ns, now);
    }

    fn hold(
        &mut self,
        start: u64,
        ev: &Arc<Event>,
        idents: &Identities,
        now: Instant,
        out: &mut impl FnMut(Event),
    ) {
        if let Some(h) = self.held.get(&start)
            && h.data.len() >= ev.data.len()
        {
            return;
        }
        self.held_bytes += ev.data.len();
        if let Some(old) = self.held.insert(
            start,
            Held {
                data: ev.data.clone(),
                src: Arc::clone(ev),
            },
        ) {
            self.held_bytes -= old.data.len();
        }
        if self.held_bytes > MAX_HELD_BYTES {
            self.give_up_waiting(idents, now, out);
        }
    }

    /// Hands on `data`, the units at `next`.
    fn hand_on(
        &mut self,
        src: &Event,
        data: Bytes,
        idents: &Identities,
        out: &mut impl FnMut(Event),
    ) {
        let units = self.units(data.len() as u64, 1);
        let pos = self.handed;
        self.handed = self.handed.saturating_add(units);
        if let Some(n) = self.next.as_mut() {
            *n = n.saturating_add(units);
        }
        out(from_sender(src, self.ends, idents, data, Some(pos), 0));
    }

    /// Hands on held pieces that now follow on.
    fn release(&mut self, idents: &Identities, out: &mut impl FnMut(Event)) {
        while let Some(next) = self.next {
            let Some(entry) = self.held.first_entry() else {
                break;
            };
            if *entry.key() > next {
                break;
            }
            let (start, h) = entry.remove_entry();
            self.held_bytes -= h.data.len();
            let span = self.units(h.data.len() as u64, 1);
            let (data, src) = (h.data, h.src);
            if start.saturating_add(span) <= next {
                continue;
            }
            let data = if self.kind == SockKind::Seqpacket {
                data
            } else {
                data.slice((next - start) as usize..)
            };
            self.hand_on(&src, data, idents, out);
        }
    }

    fn note_wait(&mut self, ts: u64, now: Instant) {
        let behind = self.next.is_some_and(|n| n < self.want_end) || !self.held.is_empty();
        match (behind, self.waiting) {
            (true, None) => self.waiting = Some((ts, now)),
            (false, _) => self.waiting = None,
            (true, Some(_)) => {}
        }
    }

    /// Whether the lane waits for missing units at all.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether the lane has waited long enough for missing units.
    pub fn waiting(&self, now_ns: u64, now: Instant) -> bool {
        self.waiting.is_some_and(|(ts, at)| {
            now_ns.saturating_sub(ts) > GAP_GRACE_NS || now.duration_since(at) > GAP_GRACE
        })
    }

    /// Calls the units up to the first held piece (or to the furthest end
    /// seen) missing, hands on what follows, and waits no more.
    pub fn give_up_waiting(
        &mut self,
        idents: &Identities,
        now: Instant,
        out: &mut impl FnMut(Event),
    ) {
        if self.early.is_some() {
            self.place_aligning(idents, now, out);
        }
        while let Some(next) = self.next {
            let until = match self.held.keys().next() {
                Some(&s) => s,
                None if next < self.want_end => self.want_end,
                None => break,
            };
            if until > next {
                self.gap(until - next, idents, out);
            }
            self.release(idents, out);
        }
        self.waiting = None;
    }

    /// `units` are missing at `next`: one record-less event says so.
    fn gap(&mut self, units: u64, idents: &Identities, out: &mut impl FnMut(Event)) {
        let Some(src) = self
            .held
            .values()
            .next()
            .map(|h| Arc::clone(&h.src))
            .or_else(|| self.last_src.clone())
        else {
            return;
        };
        let pos = self.handed;
        self.handed = self.handed.saturating_add(units);
        if let Some(n) = self.next.as_mut() {
            *n = n.saturating_add(units);
        }
        // A seqpacket gap is whole messages: no byte count to give.
        let missing = if self.kind == SockKind::Seqpacket {
            0
        } else {
            units
        };
        let mut e = from_sender(&src, self.ends, idents, Bytes::new(), Some(pos), missing);
        e.truncated = true;
        out(e);
    }

    /// The lane ends: everything held goes out, gaps included.
    pub fn flush(&mut self, idents: &Identities, now: Instant, out: &mut impl FnMut(Event)) {
        self.give_up_waiting(idents, now, out);
    }
}
