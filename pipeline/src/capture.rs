//! The binary capture format: what a `capture` sink (`--output FILE.spfcap`)
//! writes and the `file` source (`--replay`) reads back. It holds the same
//! events as an NDJSON capture, as they came from the source, without base64
//! or JSON: about a third of the bytes for large payloads and a tenth of the
//! encoding work, for captures at rates NDJSON cannot keep up with.
//!
//! Layout (little-endian): the 8-byte magic `SPFCAP\0\x01`, then records, each
//! a `u32` length (of what follows it), a `u8` kind and the kind's body:
//!
//! * 1, event: `u64` seq, ts_ns, time_ns, conn, socket, peer_socket, pos
//!   (`u64::MAX` for none), skip, len, cgroup; `u32` pid, tid, peer_pid, epoch;
//!   `u8` sock (0 stream, 1 dgram, 2 seqpacket), dir (0 send, 1 recv), via (0
//!   none, 1 send, 2 recv), role (0 unknown, 1 client, 2 server), lane, flags
//!   (bit 0: truncated; bit 1: a `u64` rpos follows, written only then:
//!   files without it read as before, and a reader older than the bit
//!   refuses a file with it as corrupt);
//!   strings comm, peer_comm, path, node (each a `u16` length and UTF-8
//!   bytes); the container: a `u8` 0 (none) or 1 and its id,
//!   runtime, name, pod namespace and pod name as strings (empty for none);
//!   then the data, a `u32` length and the bytes.
//! * 2, lost: `u64` ts_ns, time_ns, count.
//! * 3, closed: `u64` conn, ts_ns.
//!
//! A reader refuses a record longer than [`MAX_RECORD`] and any field that
//! runs past its record, so a corrupt or hostile file costs an error, not
//! memory.

use std::sync::Arc;

use bytes::Bytes;

use crate::event::{Container, Direction, Event, Lost, Role, SockKind, SourceItem};

pub const MAGIC: &[u8; 8] = b"SPFCAP\x00\x01";
/// Longest record read: a 16 MiB event (the largest snaplen) and its fields.
pub const MAX_RECORD: usize = (16 << 20) + 4096;

const KIND_EVENT: u8 = 1;
const KIND_LOST: u8 = 2;
const KIND_CLOSED: u8 = 3;

/// Appends one item as a record.
pub fn encode(item: &SourceItem, out: &mut Vec<u8>) {
    encode_named(item, "", out);
}

/// Appends one item as a record, an event that names no node of its own
/// with `node` (what a node's sink publishes for a central spf).
pub fn encode_named(item: &SourceItem, node: &str, out: &mut Vec<u8>) {
    let data = encode_head(item, node, out);
    out.extend_from_slice(data);
}

/// Appends one item as [`encode_named`] does, except an event's data bytes:
/// the record's lengths count them, and they must follow at once. Returns
/// them (empty for items without data), for a writer that hands them to the
/// kernel where they are instead of copying them after the head.
pub fn encode_head<'a>(item: &'a SourceItem, node: &str, out: &mut Vec<u8>) -> &'a Bytes {
    static NONE: Bytes = Bytes::new();
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let data = match item {
        SourceItem::Event(e) => {
            out.push(KIND_EVENT);
            encode_event(e, node, out);
            &e.data
        }
        SourceItem::Lost(l) => {
            out.push(KIND_LOST);
            for v in [l.ts_ns, l.time_ns, l.count] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            &NONE
        }
        SourceItem::Closed { conn, ts_ns } => {
            out.push(KIND_CLOSED);
            out.extend_from_slice(&conn.to_le_bytes());
            out.extend_from_slice(&ts_ns.to_le_bytes());
            &NONE
        }
    };
    let len = (out.len() - at - 4 + data.len()) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    data
}

/// The fields of an event up to and including its data's length.
fn encode_event(e: &Event, node: &str, out: &mut Vec<u8>) {
    for v in [
        e.seq,
        e.ts_ns,
        e.time_ns,
        e.conn,
        e.socket,
        e.peer_socket,
        e.pos.unwrap_or(u64::MAX),
        e.skip,
        e.len,
        e.cgroup,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [e.pid, e.tid, e.peer_pid, e.epoch] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&[
        match e.sock {
            SockKind::Stream => 0,
            SockKind::Dgram => 1,
            SockKind::Seqpacket => 2,
        },
        dir_code(e.dir),
        e.via.map_or(0, |d| dir_code(d) + 1),
        match e.role {
            Role::Unknown => 0,
            Role::Client => 1,
            Role::Server => 2,
        },
        e.lane,
        u8::from(e.truncated) | (u8::from(e.rpos.is_some()) << 1),
    ]);
    if let Some(rpos) = e.rpos {
        out.extend_from_slice(&rpos.to_le_bytes());
    }
    let node = if e.node.is_empty() { node } else { &e.node };
    for s in [&e.comm, &e.peer_comm, &e.path] {
        string(s, out);
    }
    string(node, out);
    match &e.container {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            string(&c.id, out);
            string(&c.runtime, out);
            for s in [&c.name, &c.pod_namespace, &c.pod_name] {
                string(s.as_deref().unwrap_or(""), out);
            }
        }
    }
    out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
}

fn dir_code(d: Direction) -> u8 {
    match d {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // Names and paths are short; anything longer is cut at a char boundary.
    let mut n = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..n]);
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is longer than any spf writes")]
    TooLong(usize),
    #[error("record ends inside its {0}")]
    Short(&'static str),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("invalid {0}")]
    Field(&'static str),
}

/// The bodies of the length-prefixed records in `bytes` (what follows the
/// magic), in order. A length longer than [`MAX_RECORD`] or than what is
/// left ends the iteration with its error: nothing after it can be framed.
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records { rest: bytes }
}

pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(DecodeError::Short("length")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let err = if len > MAX_RECORD {
            Some(DecodeError::TooLong(len))
        } else if len > rest.len() {
            Some(DecodeError::Short("body"))
        } else {
            None
        };
        if let Some(e) = err {
            self.rest = &[];
            return Some(Err(e));
        }
        let (body, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok(body))
    }
}

/// Reads one record's body (after its length), `seq` becoming the event's
/// sequence number as in a replay of NDJSON.
pub fn decode(body: &[u8], seq: u64, strings: &mut Strings) -> Result<SourceItem, DecodeError> {
    let mut c = Cursor { b: body, i: 0 };
    match c.u8("kind")? {
        KIND_EVENT => decode_event(&mut c, seq, strings).map(|e| SourceItem::Event(Arc::new(e))),
        KIND_LOST => Ok(SourceItem::Lost(Lost {
            ts_ns: c.u64("lost")?,
            time_ns: c.u64("lost")?,
            count: c.u64("lost")?,
        })),
        KIND_CLOSED => Ok(SourceItem::Closed {
            conn: c.u64("closed")?,
            ts_ns: c.u64("closed")?,
        }),
        k => Err(DecodeError::Kind(k)),
    }
}

fn decode_event(c: &mut Cursor<'_>, seq: u64, strings: &mut Strings) -> Result<Event, DecodeError> {
    let _ = c.u64("seq")?;
    let ts_ns = c.u64("ts_ns")?;
    let time_ns = c.u64("time_ns")?;
    let conn = c.u64("conn")?;
    let socket = c.u64("socket")?;
    let peer_socket = c.u64("peer_socket")?;
    let pos = c.u64("pos")?;
    let skip = c.u64("skip")?;
    let len = c.u64("len")?;
    let cgroup = c.u64("cgroup")?;
    let pid = c.u32("pid")?;
    let tid = c.u32("tid")?;
    let peer_pid = c.u32("peer_pid")?;
    let epoch = c.u32("epoch")?;
    let sock = match c.u8("sock")? {
        0 => SockKind::Stream,
        1 => SockKind::Dgram,
        2 => SockKind::Seqpacket,
        _ => return Err(DecodeError::Field("sock")),
    };
    let dir = dir_of(c.u8("dir")?).ok_or(DecodeError::Field("dir"))?;
    let via = match c.u8("via")? {
        0 => None,
        v => Some(dir_of(v - 1).ok_or(DecodeError::Field("via"))?),
    };
    let role = match c.u8("role")? {
        0 => Role::Unknown,
        1 => Role::Client,
        2 => Role::Server,
        _ => return Err(DecodeError::Field("role")),
    };
    let lane = c.u8("lane")?;
    let flags = c.u8("flags")?;
    let truncated = flags & 1 != 0;
    let rpos = if flags & 2 != 0 {
        Some(c.u64("rpos")?)
    } else {
        None
    };
    let comm = strings.get(c.str("comm")?);
    let peer_comm = strings.get(c.str("peer_comm")?);
    let path = strings.get(c.str("path")?);
    let node = strings.get(c.str("node")?);
    let container = match c.u8("container")? {
        0 => None,
        1 => {
            let id = strings.get(c.str("container")?);
            let runtime = strings.get(c.str("container")?);
            let mut opt = |c: &mut Cursor<'_>| -> Result<Option<Arc<str>>, DecodeError> {
                let s = c.str("container")?;
                Ok((!s.is_empty()).then(|| strings.get(s)))
            };
            Some(Arc::new(Container {
                id,
                runtime,
                name: opt(c)?,
                pod_namespace: opt(c)?,
                pod_name: opt(c)?,
            }))
        }
        _ => return Err(DecodeError::Field("container")),
    };
    let n = c.u32("data")? as usize;
    let data = Bytes::copy_from_slice(c.take(n, "data")?);
    if c.i != c.b.len() {
        return Err(DecodeError::Field("length (bytes after the data)"));
    }
    if (data.len() as u64).saturating_add(skip) > len {
        return Err(DecodeError::Field("len"));
    }
    Ok(Event {
        seq,
        ts_ns,
        time_ns,
        pid,
        tid,
        comm,
        peer_pid,
        peer_comm,
        path,
        sock,
        dir,
        conn,
        socket,
        peer_socket,
        role,
        lane,
        pos: (pos != u64::MAX).then_some(pos),
        rpos,
        epoch,
        skip,
        len,
        data,
        truncated,
        via,
        cgroup,
        container,
        node,
    })
}

fn dir_of(v: u8) -> Option<Direction> {
    match v {
        0 => Some(Direction::Send),
        1 => Some(Direction::Recv),
        _ => None,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let s = self
            .b
            .get(self.i..self.i.checked_add(n).ok_or(DecodeError::Short(what))?)
            .ok_or(DecodeError::Short(what))?;
        self.i += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.take(2, what)?;
        let n = u16::from_le_bytes([b[0], b[1]]) as usize;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| DecodeError::Field(what))
    }
}

/// Shares repeated strings (comm, path, node) between the events read back.
#[derive(Default)]
pub struct Strings {
    map: std::collections::HashMap<Box<str>, Arc<str>>,
}

impl Strings {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.map.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = s.into();
        // Bounded: a file with endless distinct names must not grow memory.
        if self.map.len() < 4096 {
            self.map.insert(s.into(), Arc::clone(&a));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_event() -> Event {
        Event {
            seq: 9,
            ts_ns: 123,
            time_ns: 1_700_000_000_000_000_000,
            pid: 10,
            tid: 11,
            comm: "cur\u{e9}l".into(),
            peer_pid: 12,
            peer_comm: "nginx".into(),
            path: "@abs".into(),
            sock: SockKind::Seqpacket,
            dir: Direction::Recv,
            conn: 99,
            socket: 98,
            peer_socket: 97,
            role: Role::Server,
            lane: 1,
            pos: Some(1 << 62),
            rpos: Some((1 << 62) + 17),
            epoch: 7,
            skip: 3,
            len: 300,
            data: (0..=255u8).collect::<Vec<_>>().into(),
            truncated: true,
            via: Some(Direction::Recv),
            cgroup: 4242,
            container: Some(Arc::new(Container {
                id: "abc".into(),
                runtime: "docker".into(),
                name: Some("web".into()),
                pod_namespace: None,
                pod_name: Some("api".into()),
            })),
            node: "node-a".into(),
        }
    }

    #[test]
    fn every_item_round_trips() {
        let items = [
            SourceItem::Event(Arc::new(full_event())),
            SourceItem::Event(Arc::new(Event {
                pos: None,
                via: None,
                container: None,
                seq: 3,
                ..Event::default()
            })),
            SourceItem::Lost(Lost {
                ts_ns: 1,
                time_ns: 2,
                count: u64::MAX,
            }),
            SourceItem::Closed { conn: 5, ts_ns: 6 },
        ];
        let mut strings = Strings::default();
        for item in items {
            let mut buf = Vec::new();
            encode(&item, &mut buf);
            let n = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            assert_eq!(n, buf.len() - 4);
            let back = decode(&buf[4..], 3, &mut strings).unwrap();
            let want = match item {
                SourceItem::Event(e) => SourceItem::Event(Arc::new(Event {
                    seq: 3,
                    ..(*e).clone()
                })),
                other => other,
            };
            assert_eq!(back, want);
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode(&SourceItem::Event(Arc::new(full_event())), &mut buf);
        let body = &buf[4..];
        let mut strings = Strings::default();
        for cut in 0..body.len() {
            assert!(
                decode(&body[..cut], 0, &mut strings).is_err(),
                "cut at {cut}"
            );
        }
        // Every single byte changed: never a panic (an error, or another
        // well-formed event).
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] ^= 0xa5;
            let _ = decode(&b, 0, &mut strings);
        }
        assert_eq!(decode(&[9], 0, &mut strings), Err(DecodeError::Kind(9)));
    }
}
