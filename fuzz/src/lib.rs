//! What the fuzz targets share, so that each target stays a few lines long and an
//! API change is made here once rather than in every target:
//!
//! * [`event`]: the one place that builds an [`Event`];
//! * [`stream`]: fuzz input read as a script of events, losses and closes, fed to
//!   any [`Decoder`](spf_pipeline::Decoder), with every record it makes rendered
//!   the way the sinks render it.

pub mod stream;

use std::sync::Arc;

use spf_pipeline::{Direction, Event, SockKind};

/// The fields of an event that a fuzz input chooses; the rest are fixed.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec<'a> {
    pub seq: u64,
    pub conn: u64,
    /// Which of a connection's two sockets made the syscall (0 or 1): when both
    /// ends are captured, each end's bytes are a stream of their own.
    pub end: u8,
    pub dir: Direction,
    pub data: &'a [u8],
    /// Bytes the syscall moved beyond `data` (the capture was cut short).
    pub missing: u64,
}

/// Builds the event `spec` describes, as a source would hand it on.
pub fn event(spec: &EventSpec<'_>) -> Arc<Event> {
    let pid = 100 + u32::from(spec.end);
    Arc::new(Event {
        seq: spec.seq,
        ts_ns: spec.seq,
        time_ns: 1_700_000_000_000_000_000 + spec.seq,
        pid,
        tid: pid,
        comm: Arc::from("fuzz"),
        peer_pid: 201 - pid,
        path: Arc::from("/run/fuzz.sock"),
        sock: SockKind::Stream,
        dir: spec.dir,
        conn: spec.conn,
        // The probe always knows the socket; 0 would make decoders fall back to
        // telling the ends apart by pid.
        socket: 1000 * spec.conn + u64::from(spec.end),
        len: spec.data.len() as u64 + spec.missing,
        data: bytes::Bytes::copy_from_slice(spec.data),
        truncated: spec.missing > 0,
    })
}
