//! pcapng blocks ("PCAP Next Generation Capture File Format", IETF draft
//! draft-ietf-opsawg-pcapng): Section Header, Interface Description,
//! Enhanced Packet, Name Resolution and Interface Statistics, little-endian,
//! appended to a buffer.

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const NRB: u32 = 4;
const ISB: u32 = 5;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const IF_FILTER: u16 = 11;
const NRB_IPV4: u16 = 1;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// Raw IP packets, version from the first nibble (LINKTYPE_RAW).
pub const LINKTYPE_RAW: u16 = 101;

/// Appends a block's type and a length to be filled in by [`end`]; returns
/// where the block starts.
fn begin(out: &mut Vec<u8>, ty: u32) -> usize {
    let at = out.len();
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    at
}

/// Pads the block to 32 bits and writes its length at both ends.
fn end(out: &mut Vec<u8>, at: usize) {
    pad(out, at);
    let len = (out.len() - at + 4) as u32;
    out[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn pad(out: &mut Vec<u8>, from: usize) {
    let n = (4 - (out.len() - from) % 4) % 4;
    out.extend_from_slice(&[0, 0, 0][..n]);
}

/// Longest option value: its length is 16 bits.
const MAX_OPTION: usize = u16::MAX as usize & !3;

/// One option; values past [`MAX_OPTION`] bytes are cut (on a UTF-8
/// character boundary when the value is text).
pub fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let mut n = value.len().min(MAX_OPTION);
    while n < value.len() && n > 0 && (value[n] & 0xc0) == 0x80 {
        n -= 1;
    }
    let at = out.len();
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&value[..n]);
    pad(out, at);
}

fn end_of_options(out: &mut Vec<u8>) {
    out.extend_from_slice(&OPT_END.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// The Section Header Block that opens the file, section length unknown
/// (the file is written as a stream).
pub fn section_header(out: &mut Vec<u8>, application: &str, comment: &str) {
    let at = begin(out, SHB);
    out.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(-1i64).to_le_bytes());
    option(out, OPT_COMMENT, comment.as_bytes());
    option(out, SHB_USERAPPL, application.as_bytes());
    end_of_options(out);
    end(out, at);
}

/// The one interface every packet is on: raw IPv4, nanosecond timestamps, no
/// snap length. `filter` says what was captured (empty: left out).
pub fn interface(out: &mut Vec<u8>, name: &str, description: &str, filter: &str) {
    let at = begin(out, IDB);
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&0u32.to_le_bytes());
    option(out, IF_NAME, name.as_bytes());
    option(out, IF_DESCRIPTION, description.as_bytes());
    option(out, IF_TSRESOL, &[9]);
    if !filter.is_empty() {
        // Filter type 0 is a textual filter; spf's is its source's own.
        let mut v = Vec::with_capacity(filter.len() + 1);
        v.push(0);
        v.extend_from_slice(filter.as_bytes());
        option(out, IF_FILTER, &v);
    }
    end_of_options(out);
    end(out, at);
}

/// A Name Resolution Block with one IPv4 address and its name.
pub fn name(out: &mut Vec<u8>, addr: [u8; 4], name: &str) {
    let at = begin(out, NRB);
    let mut v = Vec::with_capacity(4 + name.len() + 1);
    v.extend_from_slice(&addr);
    // A name holding a NUL would end early; none of spf's do.
    v.extend(name.bytes().filter(|&b| b != 0).take(MAX_OPTION - 8));
    v.push(0);
    option(out, NRB_IPV4, &v);
    end_of_options(out);
    end(out, at);
}

/// Starts an Enhanced Packet Block on interface 0; the caller appends the
/// `captured` packet bytes, then calls [`packet_end`].
pub fn packet_begin(out: &mut Vec<u8>, time_ns: u64, captured: usize, original: usize) -> usize {
    let at = begin(out, EPB);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&((time_ns >> 32) as u32).to_le_bytes());
    out.extend_from_slice(&(time_ns as u32).to_le_bytes());
    out.extend_from_slice(&(captured as u32).to_le_bytes());
    out.extend_from_slice(&(original as u32).to_le_bytes());
    at
}

/// Ends the packet block begun at `at` with its comments.
pub fn packet_end(out: &mut Vec<u8>, at: usize, comments: &[&[u8]]) {
    pad(out, at);
    let mut any = false;
    for c in comments.iter().filter(|c| !c.is_empty()) {
        option(out, OPT_COMMENT, c);
        any = true;
    }
    if any {
        end_of_options(out);
    }
    end(out, at);
}

/// Interface statistics at the end of a capture: events seen and events the
/// kernel could not hand over.
pub fn statistics(out: &mut Vec<u8>, start_ns: u64, end_ns: u64, received: u64, dropped: u64) {
    let at = begin(out, ISB);
    out.extend_from_slice(&0u32.to_le_bytes());
    let ts = |out: &mut Vec<u8>, t: u64| {
        out.extend_from_slice(&((t >> 32) as u32).to_le_bytes());
        out.extend_from_slice(&(t as u32).to_le_bytes());
    };
    ts(out, end_ns);
    let mut v = Vec::with_capacity(8);
    ts(&mut v, start_ns);
    option(out, ISB_STARTTIME, &v);
    v.clear();
    ts(&mut v, end_ns);
    option(out, ISB_ENDTIME, &v);
    option(out, ISB_IFRECV, &received.to_le_bytes());
    option(out, ISB_IFDROP, &dropped.to_le_bytes());
    if dropped > 0 {
        let c = format!("{dropped} events were lost in the kernel before spf could read them");
        option(out, OPT_COMMENT, c.as_bytes());
    }
    end_of_options(out);
    end(out, at);
}
