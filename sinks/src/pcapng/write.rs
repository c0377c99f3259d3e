//! The packets of a flow: its names and handshake when it opens, the
//! segments or datagrams of each event, FIN when it closes.
//!
//! Stream connections become TCP: one segment per at most
//! [`MAX_TCP_PAYLOAD`] bytes, sequence numbers from the bytes' place in their
//! direction's stream. Datagram and seqpacket connections become UDP, one
//! datagram per message.

use rustc_hash::{FxHashMap, FxHashSet};
use spf_pipeline::Event;

use super::addr::{self, Paths};
use super::block;
use super::comment::ends;
use super::flow::{Flow, GapCause, receiver_id, sender_id, seq};
use super::flows::Ports;
use super::packet::{self, ACK, FIN, MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, PSH, SYN, Segment};

/// A receiver acknowledges at least this often, so that Wireshark never sees
/// more bytes in flight than the (scaled) window allows.
#[cfg(not(test))]
pub(super) const ACK_EVERY: u64 = 256 << 20;
/// Smaller in tests, which then need not write gigabytes.
#[cfg(test)]
pub(super) const ACK_EVERY: u64 = 1 << 20;

/// Everything the flows share: the address plan, ports in use, names
/// written, counters.
pub(super) struct Shared {
    paths: Paths,
    /// (client address, client port, server address, server port) of open
    /// flows: a new client port is one not in use between the same two.
    tuples: FxHashSet<([u8; 4], u16, [u8; 4], u16)>,
    next_port: u16,
    /// Ports of datagram senders, by socket.
    sender_ports: FxHashMap<u64, u16>,
    /// Addresses a Name Resolution Block already names.
    named: FxHashSet<[u8; 4]>,
    pub(super) ports: Ports,
    comments: bool,
    pub(super) max_flows: usize,
    /// Events the run lost so far.
    pub(super) lost: u64,
    /// Wall clock minus kernel clock, from the latest event.
    pub(super) clock: i64,
    scratch: Vec<u8>,
    pub(super) serial: u64,
    pub(super) events: u64,
    pub(super) first_time: u64,
    pub(super) last_time: u64,
}

impl Shared {
    pub(super) fn new(ports: Ports, comments: bool, max_flows: usize) -> Shared {
        Shared {
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
        }
    }

    /// Interface statistics for the end of the file.
    pub(super) fn statistics(&self, out: &mut Vec<u8>) {
        block::statistics(out, self.first_time, self.last_time, self.events, self.lost);
    }

    /// Addresses, names and (for TCP) the handshake of a new flow.
    pub(super) fn open(&mut self, flow: &mut Flow, port: Option<u16>, out: &mut Vec<u8>) {
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

    pub(super) fn forget(&mut self, flow: &Flow) {
        let p = flow.c2s;
        self.tuples.remove(&(p.src, p.sport, p.dst, p.dport));
    }

    /// The packets of one event of an open flow.
    pub(super) fn packets(&mut self, flow: &mut Flow, ev: &Event, out: &mut Vec<u8>) {
        let Some(from_client) = flow.direction_of(ev) else {
            return;
        };
        self.lost_note(flow);
        let wrote = if flow.udp {
            self.datagram(flow, ev, from_client, out)
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
        let start = side.offset(ev);
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

    /// Writes an event's datagram; false for an event that only says
    /// messages are missing.
    fn datagram(
        &mut self,
        flow: &mut Flow,
        ev: &Event,
        from_client: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let side = &mut flow.sides[usize::from(!from_client)];
        if ev.data.is_empty() && ev.len == 0 && ev.truncated {
            // Messages no event held: the next datagram says so.
            side.gap = Some(GapCause::Truncated);
            return false;
        }
        let gap: &[u8] = if side.gap.take().is_some() && self.comments {
            b"gap: messages before this datagram were not captured"
        } else {
            b""
        };
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
        block::packet_end(out, at, &[comment, gap, cut.as_bytes(), &self.scratch]);
        true
    }

    /// Both FINs and the last ACK of a closed TCP flow.
    pub(super) fn fin(&mut self, flow: &mut Flow, time: u64, out: &mut Vec<u8>) {
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
