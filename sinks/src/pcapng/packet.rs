//! Synthetic IPv4 packets: TCP segments and UDP datagrams with correct header
//! and transport checksums, written straight into the output buffer.

/// IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// TCP header without options.
pub const TCP_HEADER: usize = 20;
pub const UDP_HEADER: usize = 8;
/// Most payload one TCP segment can carry: an IPv4 packet is at most 65535
/// bytes, headers included.
pub const MAX_TCP_PAYLOAD: usize = 65535 - IPV4_HEADER - TCP_HEADER;
/// Most payload one UDP datagram can carry.
pub const MAX_UDP_PAYLOAD: usize = 65535 - IPV4_HEADER - UDP_HEADER;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Window scale in the handshake: with the largest shift the window field's
/// 65535 stands for 1 GiB, so a long one-way transfer does not look to
/// Wireshark like a receiver whose window is full.
pub const WINDOW_SHIFT: u8 = 14;
/// TCP options of SYN and SYN/ACK: the largest segment (what one IPv4 packet
/// carries), NOP, window scale.
const SYN_OPTIONS: [u8; 8] = [
    2,
    4,
    (MAX_TCP_PAYLOAD >> 8) as u8,
    MAX_TCP_PAYLOAD as u8,
    1,
    3,
    3,
    WINDOW_SHIFT,
];

/// One direction's addresses: source and destination address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

impl Path {
    pub fn reverse(self) -> Path {
        Path {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// The fields of one TCP segment besides its addresses and payload.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// Bytes of a TCP segment with `payload` bytes (SYNs carry options).
pub fn tcp_len(flags: u8, payload: usize) -> usize {
    let options = if flags & SYN != 0 {
        SYN_OPTIONS.len()
    } else {
        0
    };
    IPV4_HEADER + TCP_HEADER + options + payload
}

/// Appends an IPv4 packet holding one TCP segment; `payload` must fit
/// ([`MAX_TCP_PAYLOAD`]).
pub fn write_tcp(out: &mut Vec<u8>, path: &Path, seg: Segment, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_TCP_PAYLOAD);
    let options: &[u8] = if seg.flags & SYN != 0 {
        &SYN_OPTIONS
    } else {
        &[]
    };
    let tcp_len = TCP_HEADER + options.len() + payload.len();
    write_ipv4(out, path, PROTO_TCP, tcp_len as u16);
    let at = out.len();
    out.extend_from_slice(&path.sport.to_be_bytes());
    out.extend_from_slice(&path.dport.to_be_bytes());
    out.extend_from_slice(&seg.seq.to_be_bytes());
    out.extend_from_slice(&seg.ack.to_be_bytes());
    let words = (TCP_HEADER + options.len()) / 4;
    out.push((words as u8) << 4);
    out.push(seg.flags);
    out.extend_from_slice(&u16::MAX.to_be_bytes()); // window
    out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    out.extend_from_slice(options);
    let sum = pseudo_header(path, PROTO_TCP, tcp_len as u16) + sum(&out[at..]) + sum(payload);
    out[at + 16..at + 18].copy_from_slice(&finish(sum));
    out.extend_from_slice(payload);
}

/// Appends an IPv4 packet holding one UDP datagram of `len` bytes of which
/// `payload` are the captured ones (all of them unless the datagram was cut;
/// a cut datagram's checksum cannot be computed and is left out, as IPv4
/// allows).
pub fn write_udp(out: &mut Vec<u8>, path: &Path, payload: &[u8], len: usize) {
    let len = len.clamp(payload.len(), MAX_UDP_PAYLOAD);
    let udp_len = (UDP_HEADER + len) as u16;
    write_ipv4(out, path, PROTO_UDP, udp_len);
    let at = out.len();
    out.extend_from_slice(&path.sport.to_be_bytes());
    out.extend_from_slice(&path.dport.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    if payload.len() == len {
        let sum = pseudo_header(path, PROTO_UDP, udp_len) + sum(&out[at..]) + sum(payload);
        let mut c = finish(sum);
        // 0 means "no checksum" in UDP; a computed 0 is sent as all ones.
        if c == [0, 0] {
            c = [0xff, 0xff];
        }
        out[at + 6..at + 8].copy_from_slice(&c);
    }
    out.extend_from_slice(payload);
}

/// The IPv4 header of a packet whose transport part is `inner` bytes long.
fn write_ipv4(out: &mut Vec<u8>, path: &Path, proto: u8, inner: u16) {
    let at = out.len();
    let total = (IPV4_HEADER as u16).saturating_add(inner);
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    // Identification 0, don't fragment, TTL 64.
    out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    out.extend_from_slice(&path.src);
    out.extend_from_slice(&path.dst);
    let c = finish(sum(&out[at..]));
    out[at + 10..at + 12].copy_from_slice(&c);
}

fn pseudo_header(path: &Path, proto: u8, len: u16) -> u64 {
    let l = len.to_be_bytes();
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&path.src);
    b[4..8].copy_from_slice(&path.dst);
    b[8..].copy_from_slice(&[0, proto, l[0], l[1]]);
    sum(&b)
}

/// The Internet checksum's one's complement sum (RFC 1071) of `data`, not yet
/// folded: 8 bytes at a time in the machine's byte order, which gives the
/// same folded result byte-swapped on little-endian machines and which
/// [`finish`] stores back in that order. Pieces summed apart and added must
/// each have an even length, except the last.
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        let (s, carry) = acc.overflowing_add(w);
        acc = s + u64::from(carry);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        let (s, carry) = acc.overflowing_add(u64::from_ne_bytes(b));
        acc = s + u64::from(carry);
    }
    // Halved so that callers can add a few sums without overflow.
    (acc >> 32) + (acc & 0xffff_ffff)
}

/// Folds a sum to 16 bits and complements it: the checksum field's bytes.
pub fn finish(mut sum: u64) -> [u8; 2] {
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    (!(sum as u16)).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 the slow way: big-endian 16-bit words.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for w in data.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            let lo = w.get(1).copied().map_or(0, u32::from);
            s += hi | lo;
        }
        while s > 0xffff {
            s = (s >> 16) + (s & 0xffff);
        }
        !(s as u16)
    }

    #[test]
    fn checksum_matches_rfc_1071_for_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for n in 0..data.len() {
            let d = &data[..n];
            assert_eq!(finish(sum(d)), reference(d).to_be_bytes(), "length {n}");
            // Summed in two even-length-first pieces, as headers and payloads are.
            let cut = (n / 3) & !1;
            assert_eq!(
                finish(sum(&d[..cut]) + sum(&d[cut..])),
                reference(d).to_be_bytes(),
                "length {n} split at {cut}"
            );
        }
        // All ones: the carries must wrap around.
        let ones = vec![0xffu8; 64 * 1024 + 3];
        assert_eq!(finish(sum(&ones)), reference(&ones).to_be_bytes());
    }

    /// A packet's checksums verify: summed over the whole header (and, for
    /// the transport, the pseudo-header and payload), the result is zero.
    #[test]
    fn headers_verify() {
        let path = Path {
            src: [10, 128, 0, 5],
            dst: [10, 0, 0, 1],
            sport: 62002,
            dport: 80,
        };
        let payload = b"GET / HTTP/1.1\r\n\r\n!";
        let mut out = Vec::new();
        write_tcp(
            &mut out,
            &path,
            Segment {
                seq: 0xdead_beef,
                ack: 7,
                flags: PSH | ACK,
            },
            payload,
        );
        assert_eq!(out.len(), tcp_len(PSH | ACK, payload.len()));
        assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, out.len());
        assert_eq!(reference(&out[..20]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&path.src);
        pseudo.extend_from_slice(&path.dst);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((out.len() - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&out[20..]);
        assert_eq!(reference(&pseudo), 0);
        assert_eq!(&out[40..], payload);

        let mut out = Vec::new();
        write_udp(&mut out, &path, b"hello", 5);
        assert_eq!(reference(&out[..20]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&path.src);
        pseudo.extend_from_slice(&path.dst);
        pseudo.extend_from_slice(&[0, 17, 0, 13]);
        pseudo.extend_from_slice(&out[20..]);
        assert_eq!(reference(&pseudo), 0);
        // A cut datagram claims its real length and carries no checksum.
        let mut out = Vec::new();
        write_udp(&mut out, &path, b"hel", 5);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 33);
        assert_eq!(u16::from_be_bytes([out[24], out[25]]), 13);
        assert_eq!(&out[26..28], &[0, 0]);
        assert_eq!(out.len(), 31);
    }
}
