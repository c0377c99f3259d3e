//! What a source produces: one [`Event`] per syscall's worth of socket data, plus
//! markers for data the kernel could not hand over and for connections that ended.

use std::sync::Arc;

use bytes::Bytes;

// Defined once, in the plugin SDK, so that both sides of the plugin boundary use
// the very same types.
pub use spf_plugin::{Direction, Role, SockKind};

/// How the pipeline shows traffic: as the syscalls that moved it, or as the
/// conversations of connections (each byte once, both ends joined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum View {
    /// One event per syscall, from the process that made it: with both ends of
    /// a connection captured, every byte shows up twice (one end's send, the
    /// other's receive).
    Syscalls,
    /// One byte stream per direction of each connection, each byte once, every
    /// event seen from its sender (`dir` is `send`; the receiver is the peer).
    #[default]
    Connection,
}

impl View {
    pub const fn as_str(self) -> &'static str {
        match self {
            View::Syscalls => "syscalls",
            View::Connection => "connection",
        }
    }
}

/// One syscall's worth of data through one AF_UNIX socket, or, in the
/// connection view, one piece of a connection's byte stream seen from its sender.
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
    /// Command name of the process at the other end, empty when unknown.
    pub peer_comm: Arc<str>,
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
    /// The socket at the other end (its inode), 0 when unknown.
    pub peer_socket: u64,
    /// Which end of the connection `pid` is.
    pub role: Role,
    /// Which of the connection's two directions the bytes travel, 0 or 1: the
    /// same number for one end's send and the other end's receive (0 where a
    /// socket has only one direction, e.g. an unconnected datagram receiver).
    pub lane: u8,
    /// Where the bytes this syscall moved begin in their lane's stream (stream
    /// sockets: a byte offset; seqpacket sockets: a message number), in the
    /// sender's counting, so that a send and the receive of the same byte
    /// have the same position. `None` when the source does not know it.
    /// Positions compare only within one `epoch`.
    pub pos: Option<u64>,
    /// Receives: where the bytes begin in the receiver's counting of the
    /// lane. A receive made before the source had aligned the two ends'
    /// counts has `rpos` without `pos`; any event with both gives the offset
    /// that places it. `None` when the source does not know it (the live
    /// probe gives it to receives only). Same epoch rule as `pos`.
    pub rpos: Option<u64>,
    /// Positions of different epochs do not compare: a new epoch begins when
    /// the source starts counting a connection anew. 0 without `pos` and
    /// `rpos`.
    pub epoch: u32,
    /// Bytes at the start of what a receive moved that were not captured because
    /// the sender's capture already holds them (connection view capture only):
    /// `data` begins `skip` bytes into what the syscall moved.
    pub skip: u64,
    /// Bytes the syscall really moved.
    pub len: u64,
    /// The captured bytes: `data.len()` of the `len` moved, from `skip` on.
    pub data: Bytes,
    /// True when bytes the syscall moved are neither in `data` nor skipped.
    pub truncated: bool,
    /// Set in the connection view only: whose syscall captured the bytes
    /// (`send`: the sender's own; `recv`: the receiver's, where no send held
    /// them, e.g. the sender used sendfile). `None` in the syscall view.
    pub via: Option<Direction>,
    /// The cgroup of the process (its id, the cgroup directory's inode), 0 when
    /// unknown.
    pub cgroup: u64,
    /// The container the process runs in, where its cgroup names one.
    pub container: Option<Arc<Container>>,
    /// The machine the event was captured on, empty for this one.
    pub node: Arc<str>,
}

/// One shared empty string: events are built by the million (the connection
/// view makes one per event it hands on), and `Arc::from("")` allocates.
fn empty_str() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    Arc::clone(&EMPTY)
}

impl Default for Event {
    fn default() -> Self {
        let empty = empty_str();
        Event {
            seq: 0,
            ts_ns: 0,
            time_ns: 0,
            pid: 0,
            tid: 0,
            comm: Arc::clone(&empty),
            peer_pid: 0,
            peer_comm: Arc::clone(&empty),
            path: Arc::clone(&empty),
            sock: SockKind::Stream,
            dir: Direction::Send,
            conn: 0,
            socket: 0,
            peer_socket: 0,
            role: Role::Unknown,
            lane: 0,
            pos: None,
            rpos: None,
            epoch: 0,
            skip: 0,
            len: 0,
            data: Bytes::new(),
            truncated: false,
            via: None,
            cgroup: 0,
            container: None,
            node: empty,
        }
    }
}

/// Where a decoder keeps the state for an event's bytes: one state per
/// connection (connection view) or per connection end (syscall view), each with
/// two byte streams, `side` 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub conn: u64,
    /// 0 in the connection view; in the syscall view the socket (or, when the
    /// source does not know it, the pid with the top bit set).
    pub end: u64,
    /// Connection view: 0 for bytes from the client (roles unknown: from the
    /// lower socket inode), 1 for bytes from the server. Syscall view: 0 for
    /// what this end sent, 1 for what it received.
    pub side: usize,
}

impl Event {
    /// Where a decoder keeps the state of this event's bytes.
    pub fn stream_key(&self) -> StreamKey {
        if self.via.is_some() {
            let side = match self.role {
                Role::Client => 0,
                Role::Server => 1,
                // The two directions' events carry the same two inodes the
                // other way round, so comparing them splits the directions
                // even when one end's inode is not known (0): a capture
                // replayed from one end knows only its own socket.
                Role::Unknown => usize::from(self.socket > self.peer_socket),
            };
            return StreamKey {
                conn: self.conn,
                end: 0,
                side,
            };
        }
        let end = if self.socket != 0 {
            self.socket
        } else {
            u64::from(self.pid) | 1 << 63
        };
        StreamKey {
            conn: self.conn,
            end,
            side: match self.dir {
                Direction::Send => 0,
                Direction::Recv => 1,
            },
        }
    }

    /// Which view made this event.
    pub fn view(&self) -> View {
        if self.via.is_some() {
            View::Connection
        } else {
            View::Syscalls
        }
    }

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

/// A container, as its runtime's cgroup and state name it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// The runtime's id for it (e.g. Docker's 64 hex digits).
    pub id: Arc<str>,
    /// `docker`, `containerd`, `podman`, `crio`.
    pub runtime: Arc<str>,
    /// The runtime's name for it, where its state says.
    pub name: Option<Arc<str>>,
    /// The Kubernetes pod it belongs to, where known.
    pub pod_namespace: Option<Arc<str>>,
    pub pod_name: Option<Arc<str>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_join_both_ends_only_in_the_connection_view() {
        let client_send = Event {
            conn: 5,
            socket: 5,
            peer_socket: 6,
            role: Role::Client,
            via: Some(Direction::Send),
            ..Event::default()
        };
        let server_send = Event {
            socket: 6,
            peer_socket: 5,
            role: Role::Server,
            via: Some(Direction::Recv),
            ..client_send.clone()
        };
        let (a, b) = (client_send.stream_key(), server_send.stream_key());
        assert_eq!((a.conn, a.end, a.side), (5, 0, 0));
        assert_eq!((b.conn, b.end, b.side), (5, 0, 1));
        // Roles unknown (a socketpair): the lower socket is side 0.
        let unknown = |socket, peer_socket| Event {
            socket,
            peer_socket,
            role: Role::Unknown,
            ..client_send.clone()
        };
        assert_eq!(unknown(5, 6).stream_key().side, 0);
        assert_eq!(unknown(6, 5).stream_key().side, 1);
        // One end's socket unknown: the directions still differ.
        assert_ne!(
            unknown(1000, 0).stream_key().side,
            unknown(0, 1000).stream_key().side
        );
        // The syscall view keeps each end apart, side by direction.
        let recv = Event {
            dir: Direction::Recv,
            via: None,
            ..server_send.clone()
        };
        let k = recv.stream_key();
        assert_eq!((k.conn, k.end, k.side), (5, 6, 1));
        let no_socket = Event {
            socket: 0,
            pid: 7,
            ..recv
        };
        assert_eq!(no_socket.stream_key().end, 7 | 1 << 63);
    }
}
