//! What the fuzz targets share, so that each target stays a few lines long and an
//! API change is made here once rather than in every target:
//!
//! * [`event`]: the one place that builds an [`Event`];
//! * [`stream`]: fuzz input read as a script of events, losses and closes, fed to
//!   any [`Decoder`](spf_pipeline::Decoder), with every record it makes rendered
//!   the way the sinks render it.

pub mod stream;

use std::sync::Arc;

use spf_pipeline::{Direction, Event, Role, SockKind, View};

/// The fields of an event that a fuzz input chooses; the rest are fixed.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec<'a> {
    pub seq: u64,
    pub view: View,
    pub conn: u64,
    /// Which end of the connection (0: the client, 1: the server). Syscall
    /// view: the end that made the syscall. Connection view: the end that sent
    /// the bytes.
    pub end: u8,
    /// Syscall view: the syscall's direction. Connection view: whose syscall
    /// captured the bytes (`Send`: the sender's own; `Recv`: the receiver's).
    pub dir: Direction,
    pub data: &'a [u8],
    /// Bytes the syscall moved beyond `data` (the capture was cut short).
    pub missing: u64,
}

/// Builds the event `spec` describes, as a source (syscall view) or the
/// connection stage (connection view) would hand it on.
pub fn event(spec: &EventSpec<'_>) -> Arc<Event> {
    let end = spec.end & 1;
    let pid = |end: u8| 100 + u32::from(end);
    // The probe always knows the sockets; 0 would make decoders fall back to
    // telling the ends apart by pid.
    let socket = |end: u8| 1000 * spec.conn + u64::from(end);
    let role = |end: u8| if end == 0 { Role::Client } else { Role::Server };
    let (dir, via) = match spec.view {
        View::Syscalls => (spec.dir, None),
        View::Connection => (Direction::Send, Some(spec.dir)),
    };
    // The lane is the direction of the bytes within the connection: 0 from the
    // client, 1 from the server.
    let sender = match dir {
        Direction::Send => end,
        Direction::Recv => 1 - end,
    };
    Arc::new(Event {
        seq: spec.seq,
        ts_ns: spec.seq,
        time_ns: 1_700_000_000_000_000_000 + spec.seq,
        pid: pid(end),
        tid: pid(end),
        comm: Arc::from("fuzz"),
        peer_pid: pid(1 - end),
        peer_comm: Arc::from("peer"),
        path: Arc::from("/run/fuzz.sock"),
        sock: SockKind::Stream,
        dir,
        conn: spec.conn,
        socket: socket(end),
        peer_socket: socket(1 - end),
        role: role(end),
        lane: sender,
        len: spec.data.len() as u64 + spec.missing,
        data: bytes::Bytes::copy_from_slice(spec.data),
        truncated: spec.missing > 0,
        via,
        // Positions, containers and the like: what a source that does not know
        // them hands on.
        ..Event::default()
    })
}
