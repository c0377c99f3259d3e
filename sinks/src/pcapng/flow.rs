//! Connections as synthetic flows: per connection, which end is the client,
//! the addresses and ports, and per direction the TCP sequence numbers; the
//! packets each event becomes.
//!
//! Stream connections become TCP: a handshake when the connection is first
//! seen, one segment per at most [`MAX_TCP_PAYLOAD`] bytes with sequence
//! numbers from the bytes' place in their direction's stream, FIN when it
//! closes. Datagram and seqpacket connections become UDP, one datagram per
//! message.
//!
//! Which events stand for a connection's bytes:
//! - connection view: every event (each byte comes once, from its sender).
//! - syscall view: both ends' syscalls move the same bytes, so the first end
//!   seen on a stream or seqpacket connection stands for it: its sends are
//!   the bytes it sent, its receives the bytes it got; the other end's
//!   syscalls are not written. Unconnected datagrams, where many senders
//!   share the receiver's connection, are written from their senders' sends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use spf_pipeline::{Direction, Event, Role, SockKind};

use super::addr::{self, Paths};
use super::block;
use super::packet::{self, ACK, FIN, MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, PSH, SYN, Segment};

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

/// A receiver acknowledges at least this often, so that Wireshark never sees
/// more bytes in flight than the (scaled) window allows.
#[cfg(not(test))]
pub(super) const ACK_EVERY: u64 = 256 << 20;
/// Smaller in tests, which then need not write gigabytes.
#[cfg(test)]
pub(super) const ACK_EVERY: u64 = 1 << 20;

/// Identifies a connection's end: its socket, or its pid when the socket is
/// not known.
fn sender_id(ev: &Event) -> u64 {
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

fn receiver_id(ev: &Event) -> u64 {
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
struct Side {
    isn: u32,
    /// Stream offset of the next byte when an event does not say where its
    /// bytes go: past every byte seen, gaps included.
    next: u64,
    /// Stream offset past the last byte written.
    written: u64,
    /// How far the other side's last packet acknowledged this side (never
    /// past `written`).
    acked: u64,
    /// Why the bytes between `written` and the next segment are missing.
    gap: Option<GapCause>,
    comment: Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GapCause {
    /// An event said bytes after its data were not captured.
    Truncated,
}

impl Side {
    fn seq(&self, offset: u64) -> u32 {
        seq(self.isn, offset)
    }
}

/// The sequence number of a stream offset: the SYN takes the first.
fn seq(isn: u32, offset: u64) -> u32 {
    isn.wrapping_add(1).wrapping_add(offset as u32)
}

/// A direction's packet comment, kept until the processes it names change.
#[derive(Default)]
struct Comment {
    key: Option<CommentKey>,
    text: Vec<u8>,
}

struct CommentKey {
    sender: u32,
    receiver: u32,
    /// Compared by pointer: sources share one string per command name.
    sender_comm: Arc<str>,
    receiver_comm: Arc<str>,
    by_receiver: bool,
    cgroup: u64,
}

/// Who sent and who received one event's bytes.
struct Ends<'a> {
    sender: u32,
    sender_comm: &'a Arc<str>,
    receiver: u32,
    receiver_comm: &'a Arc<str>,
    /// The bytes were captured by the receiver's syscall.
    by_receiver: bool,
}

fn ends(ev: &Event) -> Ends<'_> {
    let recv = match ev.via {
        Some(via) => via == Direction::Recv,
        None => ev.dir == Direction::Recv,
    };
    if ev.via.is_none() && recv {
        Ends {
            sender: ev.peer_pid,
            sender_comm: &ev.peer_comm,
            receiver: ev.pid,
            receiver_comm: &ev.comm,
            by_receiver: true,
        }
    } else {
        Ends {
            sender: ev.pid,
            sender_comm: &ev.comm,
            receiver: ev.peer_pid,
            receiver_comm: &ev.peer_comm,
            by_receiver: recv,
        }
    }
}

impl Comment {
    /// The comment for `ev`'s packets, rebuilt only when its processes change.
    fn get(&mut self, ev: &Event, e: &Ends<'_>) -> &[u8] {
        let same = self.key.as_ref().is_some_and(|k| {
            k.sender == e.sender
                && k.receiver == e.receiver
                && Arc::ptr_eq(&k.sender_comm, e.sender_comm)
                && Arc::ptr_eq(&k.receiver_comm, e.receiver_comm)
                && k.by_receiver == e.by_receiver
                && k.cgroup == ev.cgroup
        });
        if !same {
            self.key = Some(CommentKey {
                sender: e.sender,
                receiver: e.receiver,
                sender_comm: Arc::clone(e.sender_comm),
                receiver_comm: Arc::clone(e.receiver_comm),
                by_receiver: e.by_receiver,
                cgroup: ev.cgroup,
            });
            self.text.clear();
            describe(ev, e, &mut self.text);
        }
        &self.text
    }
}

/// `pid=4242 comm=ctr peer_pid=1234 peer_comm=containerd
/// path=/run/containerd/containerd.sock sock=stream conn=7`: the sender
/// first; `via=recv` when the receiver's syscall captured the bytes.
fn describe(ev: &Event, e: &Ends<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "pid={}", e.sender);
    if !e.sender_comm.is_empty() {
        let _ = write!(out, " comm={}", e.sender_comm);
    }
    let _ = write!(out, " peer_pid={}", e.receiver);
    if !e.receiver_comm.is_empty() {
        let _ = write!(out, " peer_comm={}", e.receiver_comm);
    }
    if ev.path.is_empty() {
        out.extend_from_slice(b" path=(unnamed)");
    } else {
        let _ = write!(out, " path={}", ev.path);
    }
    let _ = write!(out, " sock={} conn={}", ev.sock.as_str(), ev.conn);
    if e.by_receiver {
        out.extend_from_slice(b" via=recv");
    }
    if ev.cgroup != 0 {
        let _ = write!(out, " cgroup={}", ev.cgroup);
    }
    if !ev.node.is_empty() {
        let _ = write!(out, " node={}", ev.node);
    }
}

enum State {
    /// Packets wait for the protocol to be known.
    Held {
        events: Vec<Arc<Event>>,
        bytes: usize,
    },
    /// Addresses fixed, packets written as they come.
    Open,
}

struct Flow {
    /// Tells this flow from an earlier one of the same conn id.
    serial: u64,
    udp: bool,
    /// Unconnected datagrams: every sender to the receiver shares the conn.
    per_sender: bool,
    /// Syscall view: the end whose syscalls stand for the connection.
    end: u64,
    end_is_client: bool,
    client_id: u64,
    server_id: u64,
    client_pid: u32,
    client_comm: Arc<str>,
    server_pid: u32,
    server_comm: Arc<str>,
    path: Arc<str>,
    state: State,
    /// Client to server; valid once open.
    c2s: packet::Path,
    /// 0: client to server, 1: server to client.
    sides: [Side; 2],
    /// The run's lost count when this flow last wrote a packet.
    lost_seen: u64,
    last_ts: u64,
    first_time: u64,
}

impl Flow {
    fn new(ev: &Event, serial: u64, lost: u64) -> Flow {
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
    fn direction_of(&mut self, ev: &Event) -> Option<bool> {
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

    fn held(&self) -> bool {
        matches!(self.state, State::Held { .. })
    }
}

/// Everything the flows share: the address plan, ports in use, names
/// written, counters.
struct Shared {
    paths: Paths,
    /// (client address, client port, server address, server port) of open
    /// flows: a new client port is one not in use between the same two.
    tuples: FxHashSet<([u8; 4], u16, [u8; 4], u16)>,
    next_port: u16,
    /// Ports of datagram senders, by socket.
    sender_ports: FxHashMap<u64, u16>,
    /// Addresses a Name Resolution Block already names.
    named: FxHashSet<[u8; 4]>,
    ports: Ports,
    comments: bool,
    max_flows: usize,
    /// Events the run lost so far.
    lost: u64,
    /// Wall clock minus kernel clock, from the latest event.
    clock: i64,
    scratch: Vec<u8>,
    serial: u64,
    events: u64,
    first_time: u64,
    last_time: u64,
}

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
            shared: Shared {
                paths: Paths::default(),
                tuples: FxHashSet::default(),
                next_port: *addr::CLIENT_PORTS.start(),
                sender_ports: FxHashMap::default(),
                named: FxHashSet::default(),
                ports,
                comments,
                max_flows: max_flows.max(1),
                lost: 0,
                clock: 0,
                scratch: Vec::new(),
                serial: 0,
                events: 0,
                first_time: 0,
                last_time: 0,
            },
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
        let s = &self.shared;
        block::statistics(out, s.first_time, s.last_time, s.events, s.lost);
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

impl Shared {
    /// Addresses, names and (for TCP) the handshake of a new flow.
    fn open(&mut self, flow: &mut Flow, port: Option<u16>, out: &mut Vec<u8>) {
        let server = if flow.path.is_empty() {
            addr::unnamed_server_addr(flow.server_pid)
        } else {
            self.paths.addr(&flow.path)
        };
        let sport = match (flow.udp, self.ports, port) {
            (false, _, Some(p)) | (false, Ports::Fixed(p), None) => p,
            _ => addr::path_port(&flow.path),
        };
        let client = addr::client_addr(flow.client_pid);
        let cport = self.client_port(client, server, sport);
        flow.c2s = packet::Path {
            src: client,
            dst: server,
            sport: cport,
            dport: sport,
        };
        self.name(client, flow.client_pid, &flow.client_comm, out);
        if flow.path.is_empty() {
            self.name(server, flow.server_pid, &flow.server_comm, out);
        } else if self.named.insert(server) {
            block::name(out, server, &flow.path);
        }
        if flow.udp {
            return;
        }
        let (c, s) = (flow.sides[0].isn, flow.sides[1].isn);
        let t = flow.first_time;
        let note: &[u8] = if self.comments {
            b"synthetic handshake: spf first saw this connection here"
        } else {
            b""
        };
        let path = flow.c2s;
        tcp(out, t, &path, c, 0, SYN, &[], &[note]);
        tcp(
            out,
            t,
            &path.reverse(),
            s,
            c.wrapping_add(1),
            SYN | ACK,
            &[],
            &[],
        );
        tcp(
            out,
            t,
            &path,
            c.wrapping_add(1),
            s.wrapping_add(1),
            ACK,
            &[],
            &[],
        );
    }

    /// Writes a Name Resolution Block for a process's address, once.
    fn name(&mut self, addr: [u8; 4], pid: u32, comm: &str, out: &mut Vec<u8>) {
        if self.named.len() >= 1 << 20 {
            // Naming an address again is harmless; growing without end is not.
            self.named.clear();
        }
        if self.named.insert(addr) {
            let name = if comm.is_empty() {
                format!("pid {pid}")
            } else {
                format!("{comm}[{pid}]")
            };
            block::name(out, addr, &name);
        }
    }

    /// A client port not in use between `client` and `server:sport`.
    fn client_port(&mut self, client: [u8; 4], server: [u8; 4], sport: u16) -> u16 {
        let range = addr::CLIENT_PORTS;
        for _ in range.clone() {
            let p = self.next_port;
            self.next_port = if p == *range.end() {
                *range.start()
            } else {
                p + 1
            };
            if self.tuples.insert((client, p, server, sport)) {
                return p;
            }
        }
        // Every port in use between these two addresses: share one.
        self.next_port
    }

    /// The port of a datagram sender's socket.
    fn sender_port(&mut self, id: u64) -> u16 {
        if let Some(&p) = self.sender_ports.get(&id) {
            return p;
        }
        if self.sender_ports.len() >= 4 * self.max_flows {
            self.sender_ports.clear();
        }
        let range = addr::CLIENT_PORTS;
        let p = self.next_port;
        self.next_port = if p == *range.end() {
            *range.start()
        } else {
            p + 1
        };
        self.sender_ports.insert(id, p);
        p
    }

    fn forget(&mut self, flow: &Flow) {
        let p = flow.c2s;
        self.tuples.remove(&(p.src, p.sport, p.dst, p.dport));
    }

    /// The packets of one event of an open flow.
    fn packets(&mut self, flow: &mut Flow, ev: &Event, out: &mut Vec<u8>) {
        let Some(from_client) = flow.direction_of(ev) else {
            return;
        };
        self.lost_note(flow);
        let wrote = if flow.udp {
            self.datagram(flow, ev, from_client, out);
            true
        } else {
            self.segments(flow, ev, from_client, out)
        };
        if wrote {
            flow.lost_seen = self.lost;
        }
    }

    /// Comment on losses the run saw since this flow's previous packet.
    fn lost_note(&mut self, flow: &Flow) {
        self.scratch.clear();
        if self.comments && self.lost > flow.lost_seen {
            use std::io::Write as _;
            let _ = write!(
                self.scratch,
                "{} events were lost in the kernel since this connection's previous packet; some of its bytes may be missing",
                self.lost - flow.lost_seen
            );
        }
    }

    /// Writes an event's TCP segments; false when it had no new bytes.
    fn segments(
        &mut self,
        flow: &mut Flow,
        ev: &Event,
        from_client: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let s = usize::from(!from_client);
        let [a, b] = &mut flow.sides;
        let (side, other) = if s == 0 { (a, b) } else { (b, a) };
        let start = ev.pos.unwrap_or(side.next);
        let mut data: &[u8] = &ev.data;
        let mut at = start.saturating_add(ev.skip);
        let end = start.saturating_add(ev.len.max(ev.skip.saturating_add(data.len() as u64)));
        // Bytes already written (an overlap) are not written twice.
        if at < side.written {
            let trim = (side.written - at).min(data.len() as u64);
            data = &data[trim as usize..];
            at += trim;
        }
        let wrote = !data.is_empty();
        if wrote {
            let gap = if self.comments && at > side.written {
                let cause = match side.gap.take() {
                    Some(GapCause::Truncated) => {
                        "an event was truncated: cut at the capture length (snaplen) or lost in the kernel"
                    }
                    None => "the stream position jumped past them",
                };
                format!(
                    "gap: {} bytes before this segment were not captured ({cause})",
                    at - side.written
                )
            } else {
                side.gap = None;
                String::new()
            };
            let path = if from_client {
                flow.c2s
            } else {
                flow.c2s.reverse()
            };
            // Acknowledged: what the capture shows of the other side. Acking
            // bytes of a gap before the segment after it is written would
            // make Wireshark's "Follow" drop that segment.
            let ack = other.seq(other.written);
            let isn = side.isn;
            let e = ends(ev);
            let comment: &[u8] = if self.comments {
                side.comment.get(ev, &e)
            } else {
                b""
            };
            let mut first = true;
            for chunk in data.chunks(MAX_TCP_PAYLOAD) {
                let extra: [&[u8]; 2] = if first {
                    [gap.as_bytes(), &self.scratch]
                } else {
                    [b"", b""]
                };
                first = false;
                tcp(
                    out,
                    ev.time_ns,
                    &path,
                    seq(isn, at),
                    ack,
                    PSH | ACK,
                    chunk,
                    &[comment, extra[0], extra[1]],
                );
                at = at.saturating_add(chunk.len() as u64);
            }
            side.written = at;
            other.acked = other.written;
        }
        if end > at && end > side.written {
            // Bytes after the data were not captured: the next segment says so.
            side.gap = Some(GapCause::Truncated);
        }
        side.next = side.next.max(end);
        if side.written.saturating_sub(side.acked) >= ACK_EVERY {
            // The receiver acknowledges, as a real one would long before.
            let path = if from_client {
                flow.c2s.reverse()
            } else {
                flow.c2s
            };
            let (seq, ack) = (other.seq(other.next), side.seq(side.written));
            tcp(out, ev.time_ns, &path, seq, ack, ACK, &[], &[]);
            side.acked = side.written;
        }
        wrote
    }

    fn datagram(&mut self, flow: &mut Flow, ev: &Event, from_client: bool, out: &mut Vec<u8>) {
        // Unconnected datagrams: the client is whoever sent (or, for a reply,
        // receives) this one.
        let mut path = flow.c2s;
        if flow.per_sender {
            let e = ends(ev);
            let (pid, comm, id) = if from_client {
                (e.sender, e.sender_comm, sender_id(ev))
            } else {
                (e.receiver, e.receiver_comm, receiver_id(ev))
            };
            if id != 0 && id != flow.client_id {
                path.src = addr::client_addr(pid);
                path.sport = self.sender_port(id);
                self.name(path.src, pid, comm, out);
            }
        }
        if !from_client {
            path = path.reverse();
        }
        let data: &[u8] = &ev.data;
        let len = (ev.len as usize).max(data.len());
        let payload = &data[..data.len().min(MAX_UDP_PAYLOAD)];
        let mut cut = String::new();
        if self.comments && len > MAX_UDP_PAYLOAD {
            cut = format!(
                "datagram of {len} bytes, more than UDP can carry: its first {} bytes shown",
                payload.len()
            );
        } else if self.comments && data.len() < len {
            cut = format!(
                "datagram cut: {} of its {len} bytes were captured",
                data.len()
            );
        }
        let side = &mut flow.sides[usize::from(!from_client)];
        let e = ends(ev);
        let comment: &[u8] = if self.comments {
            side.comment.get(ev, &e)
        } else {
            b""
        };
        let captured = packet::IPV4_HEADER + packet::UDP_HEADER + payload.len();
        let original = packet::IPV4_HEADER + packet::UDP_HEADER + len.min(MAX_UDP_PAYLOAD);
        let at = block::packet_begin(out, ev.time_ns, captured, original);
        packet::write_udp(out, &path, payload, len);
        block::packet_end(out, at, &[comment, cut.as_bytes(), &self.scratch]);
    }

    /// Both FINs and the last ACK of a closed TCP flow.
    fn fin(&mut self, flow: &mut Flow, time: u64, out: &mut Vec<u8>) {
        let path = flow.c2s;
        let mut notes: [String; 2] = Default::default();
        for (i, side) in flow.sides.iter_mut().enumerate() {
            if self.comments && side.next > side.written {
                notes[i] = format!(
                    "gap: the last {} bytes before this FIN were not captured",
                    side.next - side.written
                );
            }
        }
        let closing: &[u8] = if self.comments {
            b"synthetic close: the connection ended here"
        } else {
            b""
        };
        let [c, s] = &flow.sides;
        let (cfin, sfin) = (c.seq(c.next), s.seq(s.next));
        tcp(
            out,
            time,
            &path,
            cfin,
            sfin,
            FIN | ACK,
            &[],
            &[closing, notes[0].as_bytes()],
        );
        tcp(
            out,
            time,
            &path.reverse(),
            sfin,
            cfin.wrapping_add(1),
            FIN | ACK,
            &[],
            &[notes[1].as_bytes()],
        );
        tcp(
            out,
            time,
            &path,
            cfin.wrapping_add(1),
            sfin.wrapping_add(1),
            ACK,
            &[],
            &[],
        );
    }
}

/// One TCP segment in its packet block.
#[allow(clippy::too_many_arguments)]
fn tcp(
    out: &mut Vec<u8>,
    time: u64,
    path: &packet::Path,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    comments: &[&[u8]],
) {
    let len = packet::tcp_len(flags, payload.len());
    let at = block::packet_begin(out, time, len, len);
    packet::write_tcp(out, path, Segment { seq, ack, flags }, payload);
    block::packet_end(out, at, comments);
}
