//! One connection as a synthetic flow: which end is the client, its
//! addresses once fixed, and per direction the TCP sequence state.
//!
//! Which events stand for a connection's bytes:
//! - connection view: every event (each byte comes once, from its sender).
//! - syscall view: both ends' syscalls move the same bytes, so the first end
//!   seen on a stream or seqpacket connection stands for it: its sends are
//!   the bytes it sent, its receives the bytes it got; the other end's
//!   syscalls are not written. Unconnected datagrams, where many senders
//!   share the receiver's connection, are written from their senders' sends.

use std::sync::Arc;

use spf_pipeline::{Direction, Event, Role, SockKind};

use super::comment::Comment;
use super::packet;

/// Identifies a connection's end: its socket, or its pid when the socket is
/// not known.
pub(super) fn sender_id(ev: &Event) -> u64 {
    if ev.socket != 0 {
        ev.socket
    } else {
        u64::from(ev.pid) | 1 << 63
    }
}

/// Whether an end id (from [`sender_id`] or [`receiver_id`]) is the end with
/// this socket and pid.
fn is_end(id: u64, socket: u64, pid: u32) -> bool {
    if id & 1 << 63 != 0 {
        id == u64::from(pid) | 1 << 63
    } else {
        socket != 0 && id == socket
    }
}

pub(super) fn receiver_id(ev: &Event) -> u64 {
    if ev.peer_socket != 0 {
        ev.peer_socket
    } else if ev.peer_pid != 0 {
        u64::from(ev.peer_pid) | 1 << 63
    } else {
        0
    }
}

/// One direction of a stream.
#[derive(Default)]
pub(super) struct Side {
    pub(super) isn: u32,
    /// Stream offset of the next byte when an event does not say where its
    /// bytes go: past every byte seen, gaps included.
    pub(super) next: u64,
    /// Stream offset past the last byte written.
    pub(super) written: u64,
    /// How far the other side's last packet acknowledged this side (never
    /// past `written`).
    pub(super) acked: u64,
    /// Why the bytes between `written` and the next segment are missing (or,
    /// for datagrams, that messages before the next one are).
    pub(super) gap: Option<GapCause>,
    pub(super) comment: Comment,
    /// Positions of the current epoch, and what turns them into stream
    /// offsets (added, wrapping): a source's positions need not start at 0,
    /// and a new epoch starts its counting anew.
    pub(super) epoch: Option<u32>,
    pub(super) shift: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GapCause {
    /// An event said bytes after its data were not captured.
    Truncated,
}

impl Side {
    pub(super) fn seq(&self, offset: u64) -> u32 {
        seq(self.isn, offset)
    }

    /// The stream offset of an event's first byte: from its position where
    /// it has one (the first position of an epoch continues the stream where
    /// it stands), else right after what came before.
    pub(super) fn offset(&mut self, ev: &Event) -> u64 {
        let Some(pos) = ev.pos else {
            return self.next;
        };
        if self.epoch != Some(ev.epoch) {
            self.epoch = Some(ev.epoch);
            self.shift = self.next.wrapping_sub(pos);
        }
        pos.wrapping_add(self.shift)
    }
}

/// The sequence number of a stream offset: the SYN takes the first.
pub(super) fn seq(isn: u32, offset: u64) -> u32 {
    isn.wrapping_add(1).wrapping_add(offset as u32)
}

pub(super) enum State {
    /// Packets wait for the protocol to be known.
    Held {
        events: Vec<Arc<Event>>,
        bytes: usize,
    },
    /// Addresses fixed, packets written as they come.
    Open,
}

pub(super) struct Flow {
    /// Tells this flow from an earlier one of the same conn id.
    pub(super) serial: u64,
    pub(super) udp: bool,
    /// Unconnected datagrams: every sender to the receiver shares the conn.
    pub(super) per_sender: bool,
    /// Syscall view: the end whose syscalls stand for the connection.
    end: u64,
    end_is_client: bool,
    pub(super) client_id: u64,
    server_id: u64,
    pub(super) client_pid: u32,
    pub(super) client_comm: Arc<str>,
    pub(super) server_pid: u32,
    pub(super) server_comm: Arc<str>,
    pub(super) path: Arc<str>,
    pub(super) state: State,
    /// Client to server; valid once open.
    pub(super) c2s: packet::Path,
    /// 0: client to server, 1: server to client.
    pub(super) sides: [Side; 2],
    /// The run's lost count when this flow last wrote a packet.
    pub(super) lost_seen: u64,
    pub(super) last_ts: u64,
    pub(super) first_time: u64,
}

impl Flow {
    pub(super) fn new(ev: &Event, serial: u64, lost: u64) -> Flow {
        let udp = ev.sock != SockKind::Stream;
        let per_sender = ev.sock == SockKind::Dgram;
        // The end that made the event (connection view: its sender) and the
        // other one; which of them is the client.
        let own = (sender_id(ev), ev.pid, &ev.comm);
        let peer = (receiver_id(ev), ev.peer_pid, &ev.peer_comm);
        let (end, end_is_client) = if ev.via.is_some() {
            (0, ev.role != Role::Server)
        } else {
            let client = match ev.role {
                // Whoever sent first: a first receive means the other end did.
                Role::Unknown => ev.dir == Direction::Send,
                r => r == Role::Client,
            };
            (ev.stream_key().end, client)
        };
        let (client, server) = if end_is_client {
            (own, peer)
        } else {
            (peer, own)
        };
        let (client_id, client_pid, client_comm) = client;
        let (server_id, server_pid, server_comm) = server;
        let h = (ev.conn ^ serial.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Flow {
            serial,
            udp,
            per_sender,
            end,
            end_is_client,
            client_id,
            server_id,
            client_pid,
            client_comm: Arc::clone(client_comm),
            server_pid,
            server_comm: Arc::clone(server_comm),
            path: Arc::clone(&ev.path),
            state: State::Open,
            c2s: packet::Path {
                src: [0; 4],
                dst: [0; 4],
                sport: 0,
                dport: 0,
            },
            sides: [
                Side {
                    isn: (h >> 32) as u32,
                    ..Side::default()
                },
                Side {
                    isn: h as u32,
                    ..Side::default()
                },
            ],
            lost_seen: lost,
            last_ts: ev.ts_ns,
            first_time: ev.time_ns,
        }
    }

    /// Whether `ev`'s bytes went from the client to the server; `None` when
    /// the event repeats bytes another event stands for.
    pub(super) fn direction_of(&mut self, ev: &Event) -> Option<bool> {
        if ev.via.is_some() {
            return Some(match ev.role {
                Role::Client => true,
                Role::Server => false,
                Role::Unknown if self.per_sender => !is_end(self.server_id, ev.socket, ev.pid),
                Role::Unknown => is_end(self.client_id, ev.socket, ev.pid),
            });
        }
        if self.per_sender {
            // Syscall view datagrams: the sender's sends. A receive tells
            // which socket is the receiver, so that its replies go back.
            if ev.dir == Direction::Recv {
                if self.server_id == 0 {
                    self.server_id = sender_id(ev);
                }
                return None;
            }
            return Some(ev.role != Role::Server && !is_end(self.server_id, ev.socket, ev.pid));
        }
        if ev.stream_key().end != self.end {
            return None;
        }
        Some((ev.dir == Direction::Send) == self.end_is_client)
    }

    pub(super) fn held(&self) -> bool {
        matches!(self.state, State::Held { .. })
    }
}
