//! What a source produces: one [`Event`] per syscall's worth of socket data, plus
//! markers for data the kernel could not hand over and for connections that ended.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Which way the bytes went, seen from the process that made the syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Send,
    Recv,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "send" => Some(Direction::Send),
            "recv" => Some(Direction::Recv),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The AF_UNIX socket type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockKind {
    Stream,
    Dgram,
    Seqpacket,
}

impl SockKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            SockKind::Stream => "stream",
            SockKind::Dgram => "dgram",
            SockKind::Seqpacket => "seqpacket",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stream" => Some(SockKind::Stream),
            "dgram" => Some(SockKind::Dgram),
            "seqpacket" => Some(SockKind::Seqpacket),
            _ => None,
        }
    }
}

impl fmt::Display for SockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One syscall's worth of data through one AF_UNIX socket.
///
/// `comm` and `path` are shared strings because a source sees the same few values
/// millions of times; cloning an `Arc` is cheaper than allocating each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Per-source, strictly increasing.
    pub seq: u64,
    /// Kernel clock (CLOCK_MONOTONIC, nanoseconds since boot).
    pub ts_ns: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Arc<str>,
    /// Pid of the process at the other end, 0 when unknown.
    pub peer_pid: u32,
    /// Bound path of the socket or of its peer; `@name` for abstract names; empty
    /// for unnamed sockets.
    pub path: Arc<str>,
    pub sock: SockKind,
    pub dir: Direction,
    /// The same for both directions and both ends of one connection.
    pub conn: u64,
    /// The socket the syscall used (its inode), 0 when unknown. Tells the two ends
    /// of a connection apart when both are captured: one end's sends are the
    /// other's receives.
    pub socket: u64,
    /// Bytes the syscall really moved.
    pub len: u64,
    /// The captured bytes: the first `data.len()` of the `len` moved.
    pub data: Bytes,
    /// True when `data` holds fewer bytes than `len`.
    pub truncated: bool,
}

impl Event {
    /// Identifies one direction of one connection: the unit whose byte order
    /// must never change.
    pub fn flow(&self) -> Flow {
        Flow {
            conn: self.conn,
            socket: self.socket,
            dir: self.dir,
        }
    }
}

/// One direction of one connection, seen from one of its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub conn: u64,
    pub socket: u64,
    pub dir: Direction,
}

/// Events the kernel (or a source) could not hand over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Kernel clock at which the loss was noticed.
    pub ts_ns: u64,
    pub time_ns: u64,
    /// How many events were lost.
    pub count: u64,
}

/// What a source yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceItem {
    Event(Arc<Event>),
    /// A gap: every decoder resets the state it can no longer trust.
    Lost(Lost),
    /// A connection ended; decoders may drop its state.
    Closed {
        conn: u64,
        ts_ns: u64,
    },
}

impl SourceItem {
    /// Kernel time of the item, used for ordering.
    pub fn ts_ns(&self) -> u64 {
        match self {
            SourceItem::Event(e) => e.ts_ns,
            SourceItem::Lost(l) => l.ts_ns,
            SourceItem::Closed { ts_ns, .. } => *ts_ns,
        }
    }
}
