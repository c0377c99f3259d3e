//! Records into NDJSON message payloads: which subject a record goes to, its
//! line stamped with the node's name, several lines per message.

use std::sync::Arc;

use spf_pipeline::ndjson;
use spf_pipeline::{Body, Event, Lost, Record, RecordKind};

use crate::wire::Kind;

/// Where a record belongs, or `None` for lost markers (which go with the
/// sink's first subject).
pub fn kind_of(record: &Record) -> Option<RecordKind> {
    Some(match record {
        Record::Lost(_) => return None,
        // A raw record in the connection view is the decoder's: a source
        // event is a syscall's own (`via` unset), and only those replay.
        Record::Decoded(d) if matches!(d.body, Body::Raw) && d.event.via.is_some() => {
            RecordKind::Frame
        }
        r => r.kind(),
    })
}

/// The subject kind of a record kind.
pub fn subject_kind(k: RecordKind) -> Kind {
    match k {
        RecordKind::Event | RecordKind::Lost => Kind::Events,
        RecordKind::Frame | RecordKind::Error => Kind::Records,
        RecordKind::Exchange => Kind::Exchanges,
    }
}

/// The lines of one message being filled.
pub struct Batch {
    pub buf: Vec<u8>,
    pub records: u64,
    pub ts: (u64, u64),
}

impl Batch {
    pub fn new(capacity: usize) -> Batch {
        Batch {
            buf: Vec::with_capacity(capacity),
            records: 0,
            ts: (0, 0),
        }
    }

    /// Appends one record's line, with `node` written into it where the event
    /// does not name a node of its own.
    pub fn push(&mut self, record: &Record, node: &[u8]) {
        let start = self.buf.len();
        ndjson::encode(record, &mut self.buf);
        if let Record::Decoded(d) = record {
            if matches!(d.body, Body::Raw) {
                drop_preview(&mut self.buf, start);
            }
            if d.event.node.is_empty() {
                stamp_node(&mut self.buf, start, node);
            }
            self.ts = (d.event.ts_ns, d.event.time_ns);
        } else if let Record::Lost(l) = record {
            self.ts = (l.ts_ns, l.time_ns);
        }
        self.records += 1;
    }
}

/// Cuts the escaped `text` preview off a raw record's line (the one that
/// starts at `start`): `data_b64` holds every byte, readers of the stream are
/// programs, and for small events the preview is a third of the line. The
/// line stays one the file source replays (`text` is optional there).
fn drop_preview(buf: &mut Vec<u8>, start: usize) {
    const KEY: &[u8] = b"\"data_b64\":\"";
    let Some(at) = memchr::memmem::find(&buf[start..], KEY) else {
        return;
    };
    // Base64 holds no quote: the next one closes `data_b64`, and `text`
    // follows it as the line's last field.
    let data = start + at + KEY.len();
    let Some(close) = memchr::memchr(b'"', &buf[data..]) else {
        return;
    };
    buf.truncate(data + close + 1);
    buf.extend_from_slice(b"}\n");
}

/// Inserts `,"node":NAME` (`node` is the JSON string, quotes included) into
/// the line that starts at `start`, where the encoder writes `node` for events
/// that have one: last of the common fields, before `"decoder"`. Strings
/// before that point are JSON-escaped, so the first `,"decoder":` is the key.
fn stamp_node(buf: &mut Vec<u8>, start: usize, node: &[u8]) {
    const KEY: &[u8] = b",\"decoder\":";
    let Some(at) = memchr::memmem::find(&buf[start..], KEY) else {
        return;
    };
    let at = start + at;
    let insert_len = b",\"node\":".len() + node.len();
    let old_len = buf.len();
    buf.resize(old_len + insert_len, 0);
    buf.copy_within(at..old_len, at + insert_len);
    let dst = &mut buf[at..at + insert_len];
    dst[..8].copy_from_slice(b",\"node\":");
    dst[8..].copy_from_slice(node);
}

/// The line of a lost marker the sink makes for records it had to drop.
pub fn lost_line(count: u64, ts_ns: u64, time_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    ndjson::encode(
        &Record::Lost(Lost {
            ts_ns,
            time_ns,
            count,
        }),
        &mut out,
    );
    out
}

/// An event whose line would be longer than `max` bytes, with its data cut so
/// that it fits (and marked truncated, as a snaplen cut is): the rest of the
/// connection still decodes, with a visible gap. `None` when even no data
/// would not fit.
pub fn cut_to_fit(
    event: &Arc<Event>,
    decoder: &Arc<str>,
    node: &[u8],
    max: usize,
) -> Option<Record> {
    let mut probe = Batch::new(0);
    let empty = Arc::new(Event {
        data: bytes::Bytes::new(),
        ..(**event).clone()
    });
    probe.push(&Record::raw(empty, Arc::clone(decoder)), node);
    let fixed = probe.buf.len();
    // Each data byte costs 4/3 in base64 (the preview is not published).
    let room = max.checked_sub(fixed + 8)?;
    let keep = (room / 4 * 3).min(event.data.len());
    let cut = Arc::new(Event {
        data: event.data.slice(..keep),
        truncated: true,
        ..(**event).clone()
    });
    Some(Record::raw(cut, Arc::clone(decoder)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spf_pipeline::ndjson::{Interner, Parsed, parse_line};
    use spf_pipeline::{Direction, SourceItem};

    fn event(data: &[u8]) -> Arc<Event> {
        Arc::new(Event {
            seq: 3,
            ts_ns: 10,
            time_ns: 1_700_000_000_000_000_000,
            pid: 4,
            comm: "a,\"decoder\":x".into(),
            path: "/run/x.sock".into(),
            dir: Direction::Send,
            conn: 9,
            socket: 9,
            cgroup: 77,
            len: data.len() as u64,
            data: bytes::Bytes::copy_from_slice(data),
            ..Event::default()
        })
    }

    #[test]
    fn stamped_lines_replay_with_their_node() {
        let mut b = Batch::new(0);
        let ev = event(b"hello");
        b.push(&Record::raw(Arc::clone(&ev), "raw".into()), b"\"web-1\"");
        assert_eq!(b.buf.last(), Some(&b'\n'));
        let line = &b.buf[..b.buf.len() - 1];
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["node"], "web-1");
        assert!(v.get("text").is_none(), "{v}");
        assert_eq!(v["comm"], "a,\"decoder\":x");
        let Parsed::Item(SourceItem::Event(back)) =
            parse_line(line, 3, &mut Interner::default()).unwrap()
        else {
            panic!("not an event");
        };
        assert_eq!(&*back.node, "web-1");
        assert_eq!(back.data, ev.data);
        assert_eq!(back.cgroup, 77);
    }

    #[test]
    fn an_event_too_long_for_the_server_is_cut_and_marked() {
        let ev = event(&vec![7u8; 100_000]);
        let r = cut_to_fit(&ev, &"raw".into(), b"\"n\"", 20_000).unwrap();
        let mut b = Batch::new(0);
        b.push(&r, b"\"n\"");
        assert!(b.buf.len() <= 20_000, "{}", b.buf.len());
        let v: serde_json::Value = serde_json::from_slice(&b.buf).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["len"], 100_000);
        assert!(v["captured"].as_u64().unwrap() > 10_000);
        assert!(cut_to_fit(&ev, &"raw".into(), b"\"n\"", 100).is_none());
    }

    #[test]
    fn conversation_raw_records_are_not_events() {
        let mut ev = (*event(b"x")).clone();
        assert_eq!(
            kind_of(&Record::raw(Arc::new(ev.clone()), "raw".into())),
            Some(RecordKind::Event)
        );
        ev.via = Some(Direction::Send);
        assert_eq!(
            kind_of(&Record::raw(Arc::new(ev), "raw".into())),
            Some(RecordKind::Frame)
        );
    }
}
