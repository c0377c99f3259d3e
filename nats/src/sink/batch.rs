//! Records into message payloads: which subject a record goes to, its line
//! (or binary record) stamped with the node's name, several per message.
//!
//! A payload is NDJSON, or, for raw events with `format = "spfcap"`, the
//! binary capture format (`spf_pipeline::capture`): the magic, then records.
//! Either way a message saved to a file replays with the `file` source, and
//! a central spf tells them apart by the magic.

use std::sync::Arc;

use spf_pipeline::{Body, Event, Lost, Record, RecordKind, SourceItem};
use spf_pipeline::{capture, ndjson};

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
    /// Binary records (events and lost markers) instead of NDJSON lines.
    binary: bool,
}

/// The node's name, written into records that name no node of their own.
#[derive(Default)]
pub struct NodeName {
    /// As a JSON string, quotes included.
    pub json: Vec<u8>,
    pub text: String,
}

impl NodeName {
    pub fn new(text: &str) -> NodeName {
        let mut json = Vec::new();
        ndjson::json_str(text, &mut json);
        NodeName {
            json,
            text: text.to_string(),
        }
    }
}

impl Batch {
    pub fn new(capacity: usize, binary: bool) -> Batch {
        let mut buf = Vec::with_capacity(capacity);
        if binary {
            buf.extend_from_slice(capture::MAGIC);
        }
        Batch {
            buf,
            records: 0,
            ts: (0, 0),
            binary,
        }
    }

    /// Bytes before the first record.
    pub fn head(&self) -> usize {
        if self.binary { capture::MAGIC.len() } else { 0 }
    }

    /// Appends one record, with the sink's node written into it where the
    /// event does not name a node of its own.
    pub fn push(&mut self, record: &Record, node: &NodeName) {
        let start = self.buf.len();
        if self.binary {
            // Only events and lost markers go to a binary subject (see
            // `kind_of`); any decoded record stands for its event.
            let item = match record {
                Record::Decoded(d) => SourceItem::Event(Arc::clone(&d.event)),
                Record::Lost(l) => SourceItem::Lost(*l),
            };
            capture::encode_named(&item, &node.text, &mut self.buf);
        } else {
            ndjson::encode(record, &mut self.buf);
        }
        if let Record::Decoded(d) = record {
            if !self.binary {
                if matches!(d.body, Body::Raw) {
                    drop_preview(&mut self.buf, start);
                }
                if d.event.node.is_empty() {
                    stamp_node(&mut self.buf, start, &node.json);
                }
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

/// The message of a lost marker the sink makes for records it had to drop.
pub fn lost_message(count: u64, ts_ns: u64, time_ns: u64, binary: bool) -> Vec<u8> {
    let mut b = Batch::new(80, binary);
    b.push(
        &Record::Lost(Lost {
            ts_ns,
            time_ns,
            count,
        }),
        &NodeName::default(),
    );
    b.buf
}

/// An event whose record would be longer than `max` bytes, with its data cut
/// so that it fits (and marked truncated, as a snaplen cut is): the rest of
/// the connection still decodes, with a visible gap. `None` when even no
/// data would not fit.
pub fn cut_to_fit(
    event: &Arc<Event>,
    decoder: &Arc<str>,
    node: &NodeName,
    binary: bool,
    max: usize,
) -> Option<Record> {
    let mut probe = Batch::new(0, binary);
    let empty = Arc::new(Event {
        data: bytes::Bytes::new(),
        ..(**event).clone()
    });
    probe.push(&Record::raw(empty, Arc::clone(decoder)), node);
    let fixed = probe.buf.len() - probe.head();
    let room = max.checked_sub(fixed + 8)?;
    // In a line, each data byte costs 4/3 in base64 (the preview is not
    // published); in a binary record, one.
    let room = if binary { room } else { room / 4 * 3 };
    let keep = room.min(event.data.len());
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
        let mut b = Batch::new(0, false);
        let ev = event(b"hello");
        b.push(
            &Record::raw(Arc::clone(&ev), "raw".into()),
            &NodeName::new("web-1"),
        );
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
        let n = NodeName::new("n");
        let r = cut_to_fit(&ev, &"raw".into(), &n, false, 20_000).unwrap();
        let mut b = Batch::new(0, false);
        b.push(&r, &n);
        assert!(b.buf.len() <= 20_000, "{}", b.buf.len());
        let v: serde_json::Value = serde_json::from_slice(&b.buf).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["len"], 100_000);
        assert!(v["captured"].as_u64().unwrap() > 10_000);
        assert!(cut_to_fit(&ev, &"raw".into(), &n, false, 100).is_none());
    }

    /// The records of a binary message, read back as a central spf does.
    fn read_binary(buf: &[u8]) -> Vec<SourceItem> {
        let rest = buf.strip_prefix(&capture::MAGIC[..]).expect("magic");
        let mut strings = capture::Strings::default();
        capture::records(rest)
            .map(|b| capture::decode(b.unwrap(), 0, &mut strings).unwrap())
            .collect()
    }

    #[test]
    fn binary_records_replay_with_their_node() {
        let mut b = Batch::new(0, true);
        let ev = event(b"hello");
        let node = NodeName::new("web-1");
        b.push(&Record::raw(Arc::clone(&ev), "raw".into()), &node);
        let mut own = (*ev).clone();
        own.node = "elsewhere".into();
        b.push(&Record::raw(Arc::new(own), "raw".into()), &node);
        b.push(
            &Record::Lost(Lost {
                ts_ns: 11,
                time_ns: 12,
                count: 5,
            }),
            &node,
        );
        assert_eq!(b.records, 3);
        let items = read_binary(&b.buf);
        let [
            SourceItem::Event(first),
            SourceItem::Event(second),
            SourceItem::Lost(lost),
        ] = &items[..]
        else {
            panic!("{} items", items.len());
        };
        assert_eq!(&*first.node, "web-1");
        assert_eq!(&*second.node, "elsewhere");
        assert_eq!(first.data, ev.data);
        assert_eq!((first.cgroup, &*first.comm), (77, "a,\"decoder\":x"));
        assert_eq!((lost.count, lost.ts_ns), (5, 11));
        // A lost marker of the sink's own is a message by itself.
        let m = lost_message(7, 1, 2, true);
        assert!(matches!(&read_binary(&m)[..], [SourceItem::Lost(l)] if l.count == 7));
    }

    #[test]
    fn a_binary_event_too_long_for_the_server_is_cut_and_marked() {
        let ev = event(&vec![7u8; 100_000]);
        let n = NodeName::new("n");
        let r = cut_to_fit(&ev, &"raw".into(), &n, true, 20_000).unwrap();
        let mut b = Batch::new(0, true);
        b.push(&r, &n);
        // What the server is given: the magic and the one record.
        assert!(b.buf.len() <= 20_000, "{}", b.buf.len());
        let [SourceItem::Event(back)] = &read_binary(&b.buf)[..] else {
            panic!("not one event");
        };
        assert!(back.truncated);
        assert_eq!(back.len, 100_000);
        // Binary data costs no more than itself: nearly all the room is data.
        assert!(back.data.len() > 19_000, "{}", back.data.len());
        assert!(cut_to_fit(&ev, &"raw".into(), &n, true, 100).is_none());
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
