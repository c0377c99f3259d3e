//! Messages put in order become the pipeline's items here: their NDJSON lines
//! or binary records (the magic of `spf_pipeline::capture` first) parsed as a
//! capture file's are, each event's ids moved into its node's range.
//!
//! The parsing runs on a thread of its own. The client's runtime has one
//! thread (see `connect::runtime`), and while that thread parsed a message
//! the socket went unread, so the server's next messages waited for the parse
//! to end: receiving and parsing took turns. With the parse elsewhere, the
//! runtime reads the socket while it waits for the parsed items.

use std::sync::Arc;
use std::sync::mpsc;

use spf_pipeline::capture;
use spf_pipeline::ndjson::{Interner, Parsed, parse_line};
use spf_pipeline::{Lost, SourceItem, SourceSummary};
use tokio::sync::oneshot;

use super::ids::Ids;
use super::sequence::Out;

/// Malformed lines reported one by one before only counting them.
const REPORT_LINES: u64 = 10;

/// A message put in order, waiting to be parsed and handed over.
pub struct Received {
    pub node: Arc<str>,
    pub payload: bytes::Bytes,
    pub ticket: u64,
}

/// What parsing keeps from one message to the next.
#[derive(Default)]
pub struct Parser {
    ids: Ids,
    interner: Interner,
    strings: capture::Strings,
    next_seq: u64,
    /// The time of the last item handed over: a gap's marker takes it.
    last_ts: u64,
    pub summary: SourceSummary,
    /// Items for the pipeline, and the tickets of the messages they complete.
    pub items: Vec<SourceItem>,
    pub completes: Vec<u64>,
}

impl Parser {
    /// True once more nodes were seen than have id ranges of their own.
    pub fn crowded(&self) -> bool {
        self.ids.crowded
    }

    /// Parses a message (or counts a gap) into `items`.
    pub fn take(&mut self, o: Out<Received>) {
        let r = match o {
            Out::Gap { records } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                self.summary.lost = self.summary.lost.saturating_add(records);
                self.items.push(SourceItem::Lost(Lost {
                    ts_ns: self.last_ts,
                    time_ns: now,
                    count: records,
                }));
                return;
            }
            Out::Msg(r) => r,
        };
        let node_ix = self.ids.node(&r.node);
        let payload = &r.payload[..];
        if let Some(records) = payload.strip_prefix(&capture::MAGIC[..]) {
            self.binary(records, node_ix, &r.node);
        } else {
            self.lines(payload, node_ix, &r.node);
        }
        self.completes.push(r.ticket);
    }
}

impl Parser {
    /// NDJSON lines, as the ndjson sink writes them.
    fn lines(&mut self, payload: &[u8], node_ix: u64, node: &Arc<str>) {
        let mut start = 0;
        while start < payload.len() {
            let end = memchr::memchr(b'\n', &payload[start..]).map_or(payload.len(), |i| start + i);
            let line = &payload[start..end];
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(line, self.next_seq, &mut self.interner) {
                Ok(Parsed::Item(item)) => self.item(item, node_ix, node),
                Ok(Parsed::Skip) => {}
                Err(e) => self.skip("line", node, &e.to_string()),
            }
        }
    }

    /// Binary records. One that runs past the message (or past the longest
    /// a reader takes) ends it: nothing after it can be framed.
    fn binary(&mut self, records: &[u8], node_ix: u64, node: &Arc<str>) {
        for body in capture::records(records) {
            match body.and_then(|b| capture::decode(b, self.next_seq, &mut self.strings)) {
                Ok(item) => self.item(item, node_ix, node),
                Err(e) => self.skip("record", node, &e.to_string()),
            }
        }
    }

    /// One item of `node`'s, its ids moved into the node's range.
    fn item(&mut self, item: SourceItem, node_ix: u64, node: &Arc<str>) {
        match item {
            SourceItem::Event(mut ev) => {
                // Decoders' own records of the connection view repeat
                // bytes the syscall events already hold.
                if ev.via.is_some() {
                    return;
                }
                // Changed in place: the parser made it, nothing shares it.
                let e = Arc::make_mut(&mut ev);
                if e.node.is_empty() {
                    e.node = Arc::clone(node);
                }
                e.conn = self.ids.map(node_ix, e.conn);
                e.socket = self.ids.map(node_ix, e.socket);
                e.peer_socket = self.ids.map(node_ix, e.peer_socket);
                self.next_seq += 1;
                self.last_ts = e.ts_ns;
                self.items.push(SourceItem::Event(ev));
            }
            SourceItem::Lost(l) => {
                self.summary.lost = self.summary.lost.saturating_add(l.count);
                self.next_seq += 1;
                self.last_ts = l.ts_ns;
                self.items.push(SourceItem::Lost(l));
            }
            SourceItem::Closed { conn, ts_ns } => {
                self.last_ts = ts_ns;
                self.items.push(SourceItem::Closed {
                    conn: self.ids.map(node_ix, conn),
                    ts_ns,
                });
            }
        }
    }

    /// A line or record that cannot be read: counted, the first few said.
    fn skip(&mut self, what: &str, node: &str, why: &str) {
        self.summary.skipped += 1;
        if self.summary.skipped <= REPORT_LINES {
            spf_pipeline::diag!("spf: nats source: a {what} from {node} skipped: {why}");
        }
    }
}

type Job = (
    Box<Parser>,
    Vec<Out<Received>>,
    oneshot::Sender<Box<Parser>>,
);

/// The parsing thread. It ends when this is dropped.
pub struct ParseThread {
    jobs: mpsc::Sender<Job>,
}

impl ParseThread {
    pub fn start() -> std::io::Result<ParseThread> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("spf-nats-parse".into())
            .spawn(move || {
                for (mut p, outs, done) in rx {
                    for o in outs {
                        p.take(o);
                    }
                    let _ = done.send(p);
                }
            })?;
        Ok(ParseThread { jobs })
    }

    /// Parses `outs` in order with `p`, and gives `p` back with the items.
    /// None if the thread is gone (it panicked).
    pub async fn parse(&self, p: Box<Parser>, outs: Vec<Out<Received>>) -> Option<Box<Parser>> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((p, outs, tx)).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spf_pipeline::Event;

    fn message(payload: Vec<u8>) -> Out<Received> {
        Out::Msg(Received {
            node: "n1".into(),
            payload: payload.into(),
            ticket: 4,
        })
    }

    fn event_record(conn: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let e = Event {
            conn,
            len: data.len() as u64,
            data: bytes::Bytes::copy_from_slice(data),
            ..Event::default()
        };
        capture::encode(&SourceItem::Event(Arc::new(e)), &mut out);
        out
    }

    #[test]
    fn binary_messages_become_events_of_their_node() {
        let mut p = Parser::default();
        let mut m = capture::MAGIC.to_vec();
        m.extend(event_record(3, b"abc"));
        m.extend(event_record(3, b"def"));
        p.take(message(m));
        assert_eq!(p.completes, [4]);
        let datas: Vec<_> = p
            .items
            .iter()
            .map(|i| match i {
                SourceItem::Event(e) => {
                    assert_eq!(&*e.node, "n1");
                    assert_ne!(e.conn, 3, "moved into the node's range");
                    e.data.clone()
                }
                _ => panic!("not an event"),
            })
            .collect();
        assert_eq!(datas, [&b"abc"[..], &b"def"[..]]);
        assert_eq!(p.summary.skipped, 0);
    }

    #[test]
    fn a_record_cut_short_or_too_long_ends_its_message_counted() {
        let good = event_record(1, b"ok");
        for bad in [
            // The length runs past the message.
            {
                let mut r = event_record(1, b"lost");
                r.truncate(r.len() - 2);
                r
            },
            // Fewer than four bytes of length.
            vec![9, 0],
            // Longer than any reader takes, with every byte it claims there.
            {
                let mut r = ((capture::MAX_RECORD + 1) as u32).to_le_bytes().to_vec();
                r.resize(4 + capture::MAX_RECORD + 1, 0);
                r
            },
            // A length that fits, and a body that is no record.
            vec![1, 0, 0, 0, 99],
        ] {
            let mut p = Parser::default();
            let mut m = capture::MAGIC.to_vec();
            m.extend(&good);
            m.extend(bad);
            p.take(message(m));
            assert_eq!(p.items.len(), 1, "the record before it is kept");
            assert_eq!(p.summary.skipped, 1);
            assert_eq!(p.completes, [4], "the message is still done");
        }
    }
}
