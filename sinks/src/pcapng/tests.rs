//! Unit tests of the pcapng sink: its output read back block by block and
//! packet by packet, every length, checksum, sequence and acknowledgement
//! number checked. (tshark reads the same files in the integration tests.)

use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::config::{BuildContext, SinkConfig};
use spf_pipeline::{Direction, Event, Lost, Record, Role, Sink, SockKind};

use super::PcapngConfig;
use super::packet::{ACK, FIN, MAX_TCP_PAYLOAD, PSH, SYN};

/// What one Enhanced Packet Block held.
#[derive(Debug, Clone)]
struct Pkt {
    time: u64,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    udp: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    /// UDP: the length its header claims, less the header.
    udp_len: usize,
    payload: Vec<u8>,
    original: usize,
    comments: Vec<String>,
}

#[derive(Debug, Default)]
struct File {
    names: Vec<([u8; 4], String)>,
    packets: Vec<Pkt>,
    interface: Vec<(u16, Vec<u8>)>,
    /// (received, dropped) of the statistics block.
    stats: Option<(u64, u64)>,
}

fn u16le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn u16be(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn u32be(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// RFC 1071 over 16-bit big-endian words, the slow way.
fn verifies(parts: &[&[u8]]) -> bool {
    let bytes: Vec<u8> = parts.concat();
    let mut s: u32 = 0;
    for w in bytes.chunks(2) {
        s += (u32::from(w[0]) << 8) | w.get(1).copied().map_or(0, u32::from);
    }
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s == 0xffff
}

fn options(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (code, len) = (u16le(b), u16le(&b[2..]) as usize);
        if code == 0 {
            assert_eq!(len, 0);
            break;
        }
        out.push((code, b[4..4 + len].to_vec()));
        b = &b[4 + len.div_ceil(4) * 4..];
    }
    out
}

/// Reads a whole file, checking every block's framing and every packet's
/// headers and checksums.
fn parse(bytes: &[u8]) -> File {
    let mut f = File::default();
    let mut b = bytes;
    let mut first = true;
    while !b.is_empty() {
        let ty = u32le(b);
        let len = u32le(&b[4..]) as usize;
        assert_eq!(len % 4, 0, "block length {len}");
        assert_eq!(u32le(&b[len - 4..]) as usize, len, "trailing length");
        let body = &b[8..len - 4];
        if first {
            assert_eq!(ty, 0x0A0D_0D0A, "a section header first");
            assert_eq!(u32le(body), 0x1A2B_3C4D);
            first = false;
        }
        match ty {
            1 => {
                assert_eq!(u16le(body), 101, "LINKTYPE_RAW");
                f.interface = options(&body[8..]);
            }
            4 => {
                let (code, len) = (u16le(body), u16le(&body[2..]) as usize);
                assert_eq!(code, 1, "an IPv4 record");
                let rec = &body[4..4 + len];
                assert_eq!(*rec.last().unwrap(), 0, "names end with NUL");
                let name = String::from_utf8(rec[4..len - 1].to_vec()).unwrap();
                f.names.push((rec[..4].try_into().unwrap(), name));
            }
            5 => {
                let opts = options(&body[12..]);
                let get = |c| {
                    u64::from_le_bytes(
                        opts.iter().find(|o| o.0 == c).unwrap().1[..8]
                            .try_into()
                            .unwrap(),
                    )
                };
                f.stats = Some((get(4), get(5)));
            }
            6 => f.packets.push(packet(body)),
            _ => {}
        }
        b = &b[len..];
    }
    f
}

fn packet(body: &[u8]) -> Pkt {
    assert_eq!(u32le(body), 0, "interface 0");
    let time = (u64::from(u32le(&body[4..])) << 32) | u64::from(u32le(&body[8..]));
    let captured = u32le(&body[12..]) as usize;
    let original = u32le(&body[16..]) as usize;
    let p = &body[20..20 + captured];
    let comments = options(&body[20 + captured.div_ceil(4) * 4..])
        .into_iter()
        .filter(|o| o.0 == 1)
        .map(|o| String::from_utf8(o.1).unwrap())
        .collect();
    assert_eq!(p[0], 0x45);
    assert!(verifies(&[&p[..20]]), "IPv4 header checksum");
    assert_eq!(u16be(&p[2..]) as usize, original, "IPv4 total length");
    let (src, dst) = (p[12..16].try_into().unwrap(), p[16..20].try_into().unwrap());
    let t = &p[20..];
    let mut pkt = Pkt {
        time,
        src,
        dst,
        sport: u16be(t),
        dport: u16be(&t[2..]),
        udp: p[9] == 17,
        seq: 0,
        ack: 0,
        flags: 0,
        udp_len: 0,
        payload: Vec::new(),
        original,
        comments,
    };
    let pseudo = |proto: u8, len: usize| {
        let mut v = Vec::new();
        v.extend_from_slice(&p[12..20]);
        v.extend_from_slice(&[0, proto]);
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v
    };
    if pkt.udp {
        pkt.udp_len = u16be(&t[4..]) as usize - 8;
        pkt.payload = t[8..].to_vec();
        if captured == original {
            assert!(verifies(&[&pseudo(17, t.len()), t]), "UDP checksum");
        } else {
            assert_eq!(&t[6..8], &[0, 0], "a cut datagram has no checksum");
        }
    } else {
        assert_eq!(p[9], 6);
        assert_eq!(captured, original);
        assert!(verifies(&[&pseudo(6, t.len()), t]), "TCP checksum");
        pkt.seq = u32be(&t[4..]);
        pkt.ack = u32be(&t[8..]);
        pkt.flags = t[13];
        pkt.payload = t[(t[12] >> 4) as usize * 4..].to_vec();
        assert!(pkt.payload.len() <= MAX_TCP_PAYLOAD);
    }
    pkt
}

/// A sink writing to a temporary file, and a way to read it back.
struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sink: Box<dyn Sink>,
}

impl Harness {
    fn new(decoder: &str) -> Harness {
        Harness::with(decoder, |_| {})
    }

    fn with(decoder: &str, f: impl FnOnce(&mut BuildContext)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.pcapng");
        let mut ctx = BuildContext {
            decoder: decoder.into(),
            source: "unix sockets (path=/run/test.sock)".into(),
            ..BuildContext::default()
        };
        f(&mut ctx);
        let sink = PcapngConfig {
            path: path.clone(),
            comments: true,
        }
        .build(&ctx)
        .unwrap();
        assert!(!sink.wants_events());
        Harness {
            _dir: dir,
            path,
            sink,
        }
    }

    fn event(&mut self, ev: &Arc<Event>) {
        self.sink.event(ev).unwrap();
    }

    fn decoded(&mut self, ev: &Arc<Event>, decoder: &str) {
        let r = Record::fields(
            Arc::clone(ev),
            decoder.into(),
            serde_json::Map::new(),
            String::new(),
        );
        self.sink.write(&r).unwrap();
    }

    fn finish(mut self) -> File {
        self.sink.close().unwrap();
        parse(&std::fs::read(&self.path).unwrap())
    }
}

const CLIENT: u32 = 100;
const SERVER: u32 = 200;

/// A connection view event: `data` from the client (or the server) at `pos`.
fn cv(conn: u64, from_client: bool, pos: u64, data: &[u8]) -> Arc<Event> {
    let (pid, peer, socket, peer_socket, role) = if from_client {
        (CLIENT, SERVER, 11, 12, Role::Client)
    } else {
        (SERVER, CLIENT, 12, 11, Role::Server)
    };
    let comm = |p| Arc::from(if p == CLIENT { "client" } else { "server" });
    Arc::new(Event {
        seq: pos,
        ts_ns: 1_000 + pos,
        time_ns: 1_700_000_000_000_000_000 + pos,
        pid,
        tid: pid,
        comm: comm(pid),
        peer_pid: peer,
        peer_comm: comm(peer),
        path: Arc::from("/run/test.sock"),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn,
        socket: conn * 100 + socket,
        peer_socket: conn * 100 + peer_socket,
        role,
        pos: Some(pos),
        len: data.len() as u64,
        data: Bytes::copy_from_slice(data),
        via: Some(Direction::Send),
        ..Event::default()
    })
}

/// The bytes of each direction of the TCP flows between `port` and the
/// server port, by sequence number relative to the SYN.
fn streams(pkts: &[Pkt], client_port: u16) -> [Vec<u8>; 2] {
    let mut out: [Vec<u8>; 2] = Default::default();
    let isn = |to_server: bool| {
        pkts.iter()
            .find(|p| {
                p.flags & SYN != 0
                    && if to_server {
                        p.sport == client_port
                    } else {
                        p.dport == client_port
                    }
            })
            .unwrap()
            .seq
    };
    for p in pkts.iter().filter(|p| !p.payload.is_empty()) {
        let to_server = p.sport == client_port;
        if !to_server && p.dport != client_port {
            continue;
        }
        let off = p.seq.wrapping_sub(isn(to_server)).wrapping_sub(1) as usize;
        assert!(off < 1 << 24, "offset {off}");
        let s = &mut out[usize::from(!to_server)];
        if s.len() < off + p.payload.len() {
            s.resize(off + p.payload.len(), b'?');
        }
        s[off..off + p.payload.len()].copy_from_slice(&p.payload);
    }
    out
}

#[test]
fn a_connection_is_a_tcp_flow_with_handshake_sequence_numbers_and_fin() {
    let mut h = Harness::new("raw");
    h.event(&cv(1, true, 0, b"GET /a HTTP/1.1\r\n\r\n"));
    h.event(&cv(1, false, 0, b"HTTP/1.1 200 OK\r\n"));
    h.event(&cv(1, false, 17, b"content-length: 0\r\n\r\n"));
    h.event(&cv(1, true, 19, b"GET /b HTTP/1.1\r\n\r\n"));
    h.sink.closed(1, 9_000).unwrap();
    let f = h.finish();
    let p = &f.packets;
    let flags: Vec<u8> = p.iter().map(|p| p.flags).collect();
    assert_eq!(
        flags,
        [
            SYN,
            SYN | ACK,
            ACK,
            PSH | ACK,
            PSH | ACK,
            PSH | ACK,
            PSH | ACK,
            FIN | ACK,
            FIN | ACK,
            ACK
        ]
    );
    let (c, s) = (p[0].seq, p[1].seq);
    let rel = |x: u32, isn: u32| x.wrapping_sub(isn);
    assert_eq!(p[1].ack, c.wrapping_add(1));
    assert_eq!((rel(p[2].seq, c), rel(p[2].ack, s)), (1, 1));
    // Each segment: its own place in its stream, acknowledging all the other
    // side sent so far.
    let data: Vec<(u32, u32)> = p[3..7]
        .iter()
        .map(|x| {
            let client = x.src[1] == 128;
            if client {
                (rel(x.seq, c), rel(x.ack, s))
            } else {
                (rel(x.seq, s), rel(x.ack, c))
            }
        })
        .collect();
    assert_eq!(data, [(1, 1), (1, 20), (18, 20), (20, 39)]);
    // FIN from each side, then the last ACK.
    assert_eq!((rel(p[7].seq, c), rel(p[7].ack, s)), (39, 39));
    assert_eq!((rel(p[8].seq, s), rel(p[8].ack, c)), (39, 40));
    assert_eq!((rel(p[9].seq, c), rel(p[9].ack, s)), (40, 40));
    // The close's kernel time in wall-clock time.
    assert_eq!(p[7].time, 1_700_000_000_000_000_000 + 9_000 - 1_000);
    // Addresses and ports: the client by pid, the server by path.
    assert_eq!(p[3].src, [10, 128, 0, 100]);
    assert_eq!(p[3].dst, [10, 0, 0, 1]);
    assert!(super::addr::CLIENT_PORTS.contains(&p[3].sport));
    assert_eq!(p[3].dport, super::addr::path_port("/run/test.sock"));
    assert!(
        p.iter()
            .all(|x| x.sport == p[0].sport || x.dport == p[0].sport)
    );
    let [up, down] = streams(p, p[0].sport);
    assert_eq!(up, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    assert_eq!(down, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    // Names, the interface, comments.
    assert_eq!(
        f.names,
        [
            ([10, 128, 0, 100], "client[100]".to_string()),
            ([10, 0, 0, 1], "/run/test.sock".to_string()),
        ]
    );
    assert!(f.interface.contains(&(2, b"spf".to_vec())));
    assert!(
        f.interface
            .contains(&(11, b"\0unix sockets (path=/run/test.sock)".to_vec()))
    );
    assert_eq!(
        p[3].comments,
        [
            "pid=100 comm=client peer_pid=200 peer_comm=server path=/run/test.sock sock=stream conn=1"
        ]
    );
    assert_eq!(
        p[4].comments,
        [
            "pid=200 comm=server peer_pid=100 peer_comm=client path=/run/test.sock sock=stream conn=1"
        ]
    );
    assert!(p[0].comments[0].contains("synthetic handshake"));
    assert!(p[7].comments[0].contains("synthetic close"));
    assert_eq!(f.stats, Some((4, 0)));
}

#[test]
fn big_events_are_cut_into_segments_of_at_most_64_kib() {
    let mut h = Harness::new("raw");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    h.event(&cv(1, true, 0, b"hi"));
    h.event(&cv(1, true, 2, &big));
    let f = h.finish();
    let sizes: Vec<usize> = f.packets.iter().map(|p| p.payload.len()).collect();
    assert_eq!(
        sizes,
        [
            0,
            0,
            0,
            2,
            MAX_TCP_PAYLOAD,
            MAX_TCP_PAYLOAD,
            MAX_TCP_PAYLOAD,
            3515
        ]
    );
    let [up, _] = streams(&f.packets, f.packets[0].sport);
    assert_eq!(&up[..2], b"hi");
    assert_eq!(&up[2..], &big[..]);
}

#[test]
fn gaps_stay_gaps_with_a_comment_and_overlaps_are_not_written_twice() {
    let mut h = Harness::new("raw");
    // 100 bytes moved, 10 captured: 90 missing after them.
    let mut cut = cv(1, true, 0, &[b'a'; 10]);
    Arc::get_mut(&mut cut).unwrap().len = 100;
    Arc::get_mut(&mut cut).unwrap().truncated = true;
    h.event(&cut);
    h.event(&cv(1, true, 100, b"after the cut"));
    // The position jumps by 7 with nothing said.
    h.event(&cv(1, true, 120, b"jumped"));
    // Overlapping what was written: only the new tail is.
    h.event(&cv(1, true, 123, b"pedNEW"));
    // A gap with no data at all, just before the close.
    let mut only_gap = cv(1, true, 129, b"");
    Arc::get_mut(&mut only_gap).unwrap().len = 5;
    Arc::get_mut(&mut only_gap).unwrap().truncated = true;
    h.event(&only_gap);
    h.sink.closed(1, 5_000).unwrap();
    let f = h.finish();
    let p = &f.packets;
    let c = p[0].seq;
    let data: Vec<(u32, &[u8], &Vec<String>)> = p
        .iter()
        .filter(|x| !x.payload.is_empty())
        .map(|x| (x.seq.wrapping_sub(c), &x.payload[..], &x.comments))
        .collect();
    assert_eq!(data.len(), 4);
    assert_eq!((data[0].0, data[0].1), (1, &b"aaaaaaaaaa"[..]));
    assert_eq!((data[1].0, data[1].1), (101, &b"after the cut"[..]));
    assert_eq!(
        data[1].2[1],
        "gap: 90 bytes before this segment were not captured (an event was truncated: cut at the capture length (snaplen) or lost in the kernel)"
    );
    assert_eq!((data[2].0, data[2].1), (121, &b"jumped"[..]));
    assert_eq!(
        data[2].2[1],
        "gap: 7 bytes before this segment were not captured (the stream position jumped past them)"
    );
    assert_eq!((data[3].0, data[3].1), (127, &b"NEW"[..]));
    assert_eq!(data[3].2.len(), 1, "no gap: {:?}", data[3].2);
    let fin = p.iter().find(|x| x.flags & FIN != 0).unwrap();
    assert_eq!(fin.seq.wrapping_sub(c), 135);
    assert_eq!(
        fin.comments[1],
        "gap: the last 5 bytes before this FIN were not captured"
    );
}

/// A syscall view event: one end's send or receive.
fn sv(conn: u64, socket: u64, pid: u32, dir: Direction, data: &[u8]) -> Arc<Event> {
    Arc::new(Event {
        ts_ns: 5,
        time_ns: 5,
        pid,
        tid: pid,
        comm: Arc::from(format!("p{pid}")),
        peer_pid: if pid == CLIENT { SERVER } else { CLIENT },
        path: Arc::from("/run/test.sock"),
        dir,
        conn,
        socket,
        len: data.len() as u64,
        data: Bytes::copy_from_slice(data),
        ..Event::default()
    })
}

#[test]
fn syscall_view_writes_each_byte_once_from_the_first_end_seen() {
    use Direction::{Recv, Send};
    let mut h = Harness::new("raw");
    // Both ends captured: the client's send and the server's receive of the
    // same bytes, and so on.
    h.event(&sv(1, 11, CLIENT, Send, b"ping"));
    h.event(&sv(1, 12, SERVER, Recv, b"ping"));
    h.event(&sv(1, 12, SERVER, Send, b"pong"));
    h.event(&sv(1, 11, CLIENT, Recv, b"pong"));
    // Only the server's end captured (a relay's view): it receives first.
    h.event(&sv(2, 22, SERVER, Recv, b"request"));
    h.event(&sv(2, 22, SERVER, Send, b"reply"));
    let f = h.finish();
    let data: Vec<&Pkt> = f.packets.iter().filter(|p| !p.payload.is_empty()).collect();
    assert_eq!(data.len(), 4, "{data:#?}");
    let first_port = f.packets[0].sport;
    let [up, down] = streams(&f.packets, first_port);
    assert_eq!((&up[..], &down[..]), (&b"ping"[..], &b"pong"[..]));
    let second = f
        .packets
        .iter()
        .find(|p| p.flags == SYN && p.sport != first_port)
        .unwrap();
    let [up, down] = streams(&f.packets, second.sport);
    assert_eq!((&up[..], &down[..]), (&b"request"[..], &b"reply"[..]));
    // The relay's receive came from the client: the client's pid, not the relay's.
    assert_eq!(second.src, [10, 128, 0, 100]);
    let req = data.iter().find(|p| p.payload == b"request").unwrap();
    assert_eq!(
        req.comments,
        ["pid=100 peer_pid=200 peer_comm=p200 path=/run/test.sock sock=stream conn=2 via=recv"]
    );
}

#[test]
fn datagrams_are_udp_from_each_sender() {
    use Direction::{Recv, Send};
    let mut h = Harness::new("raw");
    let dgram = |socket, pid, dir, data: &[u8], len| {
        let mut e = sv(7, socket, pid, dir, data);
        let m = Arc::get_mut(&mut e).unwrap();
        m.sock = SockKind::Dgram;
        m.path = Arc::from("/dev/log");
        m.len = len;
        m.truncated = data.len() < len as usize;
        e
    };
    h.event(&dgram(31, 300, Send, b"<14>first", 9));
    h.event(&dgram(7, 400, Recv, b"<14>first", 9));
    h.event(&dgram(32, 301, Send, b"<14>second", 10));
    h.event(&dgram(31, 300, Send, b"<14>thi", 20));
    let f = h.finish();
    let p = &f.packets;
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|x| x.udp && x.dst == [10, 0, 0, 1]));
    assert_eq!(p[0].src, [10, 128, 1, 44]);
    assert_eq!(p[1].src, [10, 128, 1, 45]);
    assert_eq!(p[0].sport, p[2].sport);
    assert_ne!(p[0].sport, p[1].sport);
    assert_eq!(p[0].dport, super::addr::path_port("/dev/log"));
    assert_eq!(p[1].payload, b"<14>second");
    // Cut: the real length claimed, the captured bytes shown.
    assert_eq!(
        (p[2].udp_len, p[2].payload.len(), p[2].original),
        (20, 7, 48)
    );
    assert_eq!(
        p[2].comments[1],
        "datagram cut: 7 of its 20 bytes were captured"
    );
    let names: Vec<&str> = f.names.iter().map(|n| n.1.as_str()).collect();
    assert_eq!(names, ["p300[300]", "/dev/log", "p301[301]"]);
}

#[test]
fn the_server_port_comes_from_the_decoder_or_its_records() {
    let port = |f: &File| f.packets[0].dport;
    // One protocol for the run: its port at once.
    let mut h = Harness::new("http2");
    h.event(&cv(1, true, 0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert_eq!(port(&h.finish()), 8080);

    // Records name each connection's protocol: its packets wait for one.
    let mut h = Harness::new("auto");
    let first = cv(1, true, 0, b"*1\r\n$4\r\nPI");
    h.event(&first);
    h.event(&cv(1, true, 10, b"NG\r\n"));
    h.decoded(&first, "resp");
    h.event(&cv(2, true, 0, b"GET / HTTP/1.1\r\n\r\n"));
    h.decoded(&cv(2, true, 0, b""), "http1");
    // No record: the per-path port once the connection closes.
    h.event(&cv(3, true, 0, b"\x00\x01"));
    h.sink.closed(3, 2_000).unwrap();
    // Nor here, until the run ends.
    h.event(&cv(4, true, 0, b"\x00\x02"));
    let f = h.finish();
    let syn_ports: Vec<u16> = f
        .packets
        .iter()
        .filter(|p| p.flags == SYN)
        .map(|p| p.dport)
        .collect();
    let path = super::addr::path_port("/run/test.sock");
    assert_eq!(syn_ports, [6379, 80, path, path]);
    let [up, _] = streams(&f.packets, f.packets[0].sport);
    assert_eq!(up, b"*1\r\n$4\r\nPING\r\n");
    // Error records and unknown decoders name no port.
    let mut h = Harness::new("plugin");
    let e = cv(1, true, 0, b"x");
    h.event(&e);
    h.sink
        .write(&Record::error(Arc::clone(&e), "resp".into(), None, "bad"))
        .unwrap();
    h.decoded(&e, "mystery");
    assert_eq!(port(&h.finish()), path);
}

#[test]
fn holding_is_bounded_by_events_and_kernel_time() {
    let mut h = Harness::new("auto");
    for i in 0..64u64 {
        h.event(&cv(1, true, i, b"x"));
    }
    // 64 events held: the 64th lets them go, before the run ends.
    h.event(&cv(2, true, 0, b"y"));
    let mut late = cv(2, true, 1, b"z");
    Arc::get_mut(&mut late).unwrap().ts_ns += 200_000_000;
    // 200 ms later in kernel time: the second connection's record comes too late.
    h.event(&late);
    h.decoded(&late, "http1");
    let f = h.finish();
    let syns: Vec<&Pkt> = f.packets.iter().filter(|p| p.flags == SYN).collect();
    assert_eq!(syns.len(), 2);
    assert!(syns.iter().all(|p| p.dport != 80));
    // The first connection's packets came out before the second's handshake.
    let first_data = f.packets.iter().position(|p| p.payload == b"x").unwrap();
    let second_syn = f
        .packets
        .iter()
        .position(|p| p.flags == SYN && p.sport != syns[0].sport);
    assert!(first_data < second_syn.unwrap());
}

#[test]
fn losses_are_said_on_the_next_packet_and_counted_at_the_end() {
    let mut h = Harness::new("raw");
    h.event(&cv(1, true, 0, b"a"));
    h.sink
        .write(&Record::Lost(Lost {
            ts_ns: 2,
            time_ns: 2,
            count: 3,
        }))
        .unwrap();
    h.event(&cv(1, false, 0, b"b"));
    h.event(&cv(1, true, 1, b"c"));
    let f = h.finish();
    let data: Vec<&Pkt> = f.packets.iter().filter(|p| !p.payload.is_empty()).collect();
    assert_eq!(data[0].comments.len(), 1);
    assert_eq!(
        data[1].comments[1],
        "3 events were lost in the kernel since this connection's previous packet; some of its bytes may be missing"
    );
    assert_eq!(data[2].comments.len(), 1);
    assert_eq!(f.stats, Some((3, 3)));
}

#[test]
fn connections_past_the_limit_evict_the_least_recent() {
    let mut h = Harness::with("raw", |ctx| ctx.limits.connections = 8);
    for conn in 1..=20u64 {
        let mut e = cv(conn, true, 0, b"x");
        Arc::get_mut(&mut e).unwrap().ts_ns = conn;
        h.event(&e);
    }
    // Connection 1 was forgotten; its next bytes start a new flow.
    let mut e = cv(1, true, 1, b"y");
    Arc::get_mut(&mut e).unwrap().ts_ns = 21;
    h.event(&e);
    let f = h.finish();
    let syns = f.packets.iter().filter(|p| p.flags == SYN).count();
    assert_eq!(syns, 21);
}

#[test]
fn a_receiver_acknowledges_long_one_way_transfers() {
    let mut h = Harness::new("raw");
    let chunk = Bytes::from(vec![7u8; 64 << 10]);
    let n = (super::write::ACK_EVERY / chunk.len() as u64) * 2 + 1;
    for i in 0..n {
        let mut e = cv(1, true, i * chunk.len() as u64, b"");
        let m = Arc::get_mut(&mut e).unwrap();
        m.data = chunk.clone();
        m.len = chunk.len() as u64;
        h.event(&e);
    }
    let f = h.finish();
    let acks: Vec<&Pkt> = f
        .packets
        .iter()
        .filter(|p| p.flags == ACK && p.src == [10, 0, 0, 1])
        .collect();
    assert_eq!(acks.len(), 2);
    let c = f.packets[0].seq;
    assert_eq!(
        acks[0].ack.wrapping_sub(c) as u64,
        1 + super::write::ACK_EVERY
    );
}

#[test]
fn config_errors_and_stdout() {
    let mut reg = spf_pipeline::config::Registry::new();
    super::register(&mut reg);
    let text = "[source]\ntype = \"file\"\npath = \"/dev/null\"\n[decoder]\ntype = \"plugin\"\npath = \"/x.so\"\n\
                [[sink]]\ntype = \"pcapng\"\npath = \"/no/such/dir/x.pcapng\"\n[[sink]]\ntype = \"pcapng\"\npath = \"-\"\ncommentz = 1\n";
    let errs = spf_pipeline::config::parse(&reg, "t", text).unwrap_err().0;
    let keys: Vec<&str> = errs
        .iter()
        .map(|e| e.key.as_str())
        .filter(|k| k.starts_with("sink"))
        .collect();
    assert_eq!(keys, ["sink[0].path", "sink[1].commentz"], "{errs:?}");
    let stdout = PcapngConfig {
        path: "-".into(),
        comments: true,
    };
    assert!(stdout.output_path().is_none());
}

#[test]
fn absurd_positions_and_lengths_are_written_not_panicked_on() {
    let mut h = Harness::new("raw");
    let odd = |pos, skip, len, sock| {
        let mut e = cv(1, true, 0, b"0123456789");
        let m = Arc::get_mut(&mut e).unwrap();
        m.pos = Some(pos);
        m.skip = skip;
        m.len = len;
        m.truncated = true;
        m.sock = sock;
        m.conn = if sock == SockKind::Stream { 1 } else { 2 };
        e
    };
    h.event(&odd(u64::MAX - 5, u64::MAX, u64::MAX, SockKind::Stream));
    h.event(&odd(3, 0, 0, SockKind::Stream));
    h.event(&odd(u64::MAX, 7, 1 << 40, SockKind::Stream));
    h.event(&odd(0, u64::MAX, u64::MAX, SockKind::Dgram));
    h.sink.closed(1, u64::MAX).unwrap();
    let f = h.finish();
    assert!(f.packets.iter().any(|p| p.udp && p.udp_len == 65507));
    assert!(f.packets.iter().any(|p| p.flags & FIN != 0));
}

#[test]
fn positions_of_a_new_epoch_continue_the_stream() {
    let mut h = Harness::new("raw");
    let at = |pos, epoch, data: &[u8]| {
        let mut e = cv(1, true, pos, data);
        Arc::get_mut(&mut e).unwrap().epoch = epoch;
        e
    };
    // Counting began before the capture: the first position is the start.
    h.event(&at(1000, 1, b"0123456789"));
    h.event(&at(1010, 1, b"abcde"));
    // The source counts anew.
    h.event(&at(5, 2, b"fghij"));
    h.event(&at(10, 2, b"klmno"));
    let f = h.finish();
    let [up, _] = streams(&f.packets, f.packets[0].sport);
    assert_eq!(up, b"0123456789abcdefghijklmno");
    assert!(
        f.packets.iter().all(|p| p.comments.len() <= 1),
        "no gap: {:#?}",
        f.packets
    );
}

#[test]
fn missing_messages_are_said_on_the_next_datagram() {
    let mut h = Harness::new("raw");
    let msg = |data: &[u8], truncated| {
        let mut e = cv(1, true, 0, data);
        let m = Arc::get_mut(&mut e).unwrap();
        m.sock = SockKind::Seqpacket;
        m.pos = None;
        m.truncated = truncated;
        e
    };
    h.event(&msg(b"one", false));
    // The connection stage's word for messages no event held.
    h.event(&msg(b"", true));
    h.event(&msg(b"three", false));
    let f = h.finish();
    let p = &f.packets;
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|x| x.udp));
    assert_eq!(p[1].payload, b"three");
    assert_eq!(
        p[1].comments[1],
        "gap: messages before this datagram were not captured"
    );
}

#[test]
fn the_comment_names_the_senders_container() {
    let mut h = Harness::new("raw");
    let mut e = cv(1, true, 0, b"x");
    let m = Arc::get_mut(&mut e).unwrap();
    m.cgroup = 77;
    m.container = Some(Arc::new(spf_pipeline::event::Container {
        id: "0123456789abcdef0123".into(),
        runtime: "containerd".into(),
        name: Some("web".into()),
        pod_namespace: Some("default".into()),
        pod_name: Some("web-1".into()),
    }));
    h.event(&e);
    let mut e = cv(1, true, 1, b"y");
    Arc::get_mut(&mut e).unwrap().container = Some(Arc::new(spf_pipeline::event::Container {
        id: "fedcba9876543210fedc".into(),
        runtime: "docker".into(),
        ..Default::default()
    }));
    h.event(&e);
    let f = h.finish();
    let data: Vec<&Pkt> = f.packets.iter().filter(|p| !p.payload.is_empty()).collect();
    assert!(
        data[0].comments[0].ends_with(" conn=1 cgroup=77 container=web pod=default/web-1"),
        "{}",
        data[0].comments[0]
    );
    assert!(
        data[1].comments[0].ends_with(" conn=1 container=fedcba987654"),
        "{}",
        data[1].comments[0]
    );
}

#[test]
fn a_raw_record_lets_a_waiting_connection_go_at_once() {
    // `auto` passes bytes it recognised no protocol in on as raw records.
    let mut h = Harness::new("auto");
    let first = cv(1, true, 0, b"\x00\x01");
    h.event(&first);
    h.decoded(&first, "raw");
    let second = cv(2, true, 0, b"GET / HTTP/1.1\r\n\r\n");
    h.event(&second);
    h.decoded(&second, "http1");
    let f = h.finish();
    let syns: Vec<u16> = f
        .packets
        .iter()
        .filter(|p| p.flags == SYN)
        .map(|p| p.dport)
        .collect();
    assert_eq!(syns, [super::addr::path_port("/run/test.sock"), 80]);
}

#[test]
fn a_symbolic_link_at_the_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.path().join("cap.pcapng");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = match (PcapngConfig {
        path: link,
        comments: true,
    })
    .build(&BuildContext::default())
    {
        Ok(_) => panic!("a symbolic link was written through"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}
