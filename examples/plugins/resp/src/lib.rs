//! An spf decoder plugin for Redis's RESP protocol (RESP2 and RESP3).
//!
//! Each record is one request or one reply, and each reply completes one
//! exchange (spf's `exchange` record: the command, sizes, latency, the error of
//! an error reply):
//!
//! ```json
//! {"resp":{"role":"request","command":"SET","args":["greeting","hello"]}}
//! {"resp":{"role":"reply","type":"simple","value":"OK"}}
//! {"exchange":{"protocol":"resp","method":"SET","latency_ns":48211,...}}
//! ```
//!
//! `detect` claims a connection for the `auto` decoder when its client's first
//! bytes are a command array or an inline command.
//!
//! Messages may be pipelined (many in one event) or split across events: bytes
//! are buffered per stream (connection, socket end, direction) until a message is
//! whole. With both ends of a connection captured, each end's view is decoded on
//! its own.
//!
//! Which end is the client is taken from the event's role where spf knows it,
//! else learned from the first event of a connection: clients speak first, so whoever sends first (or the peer of whoever receives
//! first) is the client. Ends are told apart by the event's `socket`, or by pid
//! when the source does not know sockets. A capture that starts in the middle of a conversation may
//! label the first exchanges the wrong way round; the values are decoded right
//! either way.
//!
//! Config keys (all optional):
//! - `max_message`: bytes one message may take before it is dropped with an error
//!   (default 64 MiB), so a stream that is not RESP cannot grow a buffer forever.

mod pairs;
mod resp;

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use spf_plugin::{DecoderOutput, DecoderPlugin, Direction, Error, Event, Role};

use pairs::{Outstanding, Queue};

use resp::{ProtocolError, Value};

const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One direction of one end of a connection: (conn, end, direction).
type Stream = (u64, u64, Direction);

/// Which end of its connection an event comes from.
fn end_of(event: &Event<'_>) -> u64 {
    if event.socket != 0 {
        event.socket
    } else {
        // Pids and socket inodes never meet: a source knows sockets or it does not.
        u64::from(event.pid)
    }
}

/// Where a connection's outstanding commands are kept: one queue per
/// connection in the connection view, per connection end in the syscall view
/// (where each captured end sees the whole conversation).
type QueueKey = (u64, u64);

fn queue_key(event: &Event<'_>) -> QueueKey {
    if event.via.is_some() {
        (event.conn, 0)
    } else {
        (event.conn, end_of(event))
    }
}

/// Bytes of a message not yet complete, and when its first byte came.
struct Held {
    bytes: Vec<u8>,
    started_ns: u64,
    started_time_ns: u64,
}

pub struct RespDecoder {
    /// Bytes of a message not yet complete, per stream.
    pending: HashMap<Stream, Held>,
    /// Commands waiting for their replies.
    queues: HashMap<QueueKey, Queue>,
    /// Per connection: one end seen on it and whether that end is the client.
    roles: HashMap<u64, (u64, bool)>,
    max_message: usize,
}

impl DecoderPlugin for RespDecoder {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Map<String, Json> = serde_json::from_str(config)?;
        let mut max_message = DEFAULT_MAX_MESSAGE;
        for (k, v) in &config {
            match k.as_str() {
                "max_message" => {
                    max_message = v
                        .as_u64()
                        .filter(|&n| n > 0)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or("max_message must be a positive number of bytes")?;
                }
                other => {
                    return Err(format!("unknown key `{other}`; known keys: max_message").into());
                }
            }
        }
        Ok(RespDecoder {
            pending: HashMap::new(),
            queues: HashMap::new(),
            roles: HashMap::new(),
            max_message,
        })
    }

    fn decode(&mut self, event: &Event<'_>, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        let end = end_of(event);
        let requests = self.carries_requests(event, end);

        let key = (event.conn, end, event.dir);
        let held = self.pending.remove(&key);
        // The common case, whole messages in one event, parses the event's bytes
        // in place; only a partial message is copied.
        let mut joined;
        let (input, first_started): (&[u8], _) = match held {
            None => (event.data, (event.ts_ns, event.time_ns)),
            Some(h) => {
                joined = h.bytes;
                joined.extend_from_slice(event.data);
                (&joined, (h.started_ns, h.started_time_ns))
            }
        };
        let queue = queue_key(event);
        let mut at = 0;
        while at < input.len() {
            match next_message(&input[at..], requests) {
                Ok(Some((message, used))) => {
                    let started = if at == 0 {
                        first_started
                    } else {
                        (event.ts_ns, event.time_ns)
                    };
                    self.pair(&message, used, started, event, requests, queue, out);
                    emit(&message, out);
                    at += used;
                }
                Ok(None) => break,
                Err(e) => {
                    out.error(
                        Some("RESP_PROTOCOL"),
                        &format!(
                            "not RESP at byte {at} of the {} stream: {}; dropping {} buffered bytes",
                            if requests { "request" } else { "reply" },
                            e.0,
                            input.len() - at
                        ),
                    );
                    return Ok(());
                }
            }
        }
        let rest = &input[at..];
        if rest.is_empty() {
            return Ok(());
        }
        if event.truncated {
            out.error(
                Some("RESP_TRUNCATED"),
                &format!(
                    "the capture kept {} of {} bytes, so a message is cut short; dropping {} bytes",
                    event.data.len(),
                    event.len,
                    rest.len()
                ),
            );
        } else if rest.len() > self.max_message {
            out.error(
                Some("RESP_TOO_LARGE"),
                &format!(
                    "a message is over max_message ({} bytes); dropping {} bytes",
                    self.max_message,
                    rest.len()
                ),
            );
        } else {
            let (started_ns, started_time_ns) = if at == 0 {
                first_started
            } else {
                (event.ts_ns, event.time_ns)
            };
            self.pending.insert(
                key,
                Held {
                    bytes: rest.to_vec(),
                    started_ns,
                    started_time_ns,
                },
            );
        }
        Ok(())
    }

    fn lost(&mut self, _count: u64, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        // Any buffered partial message may now be missing its middle, and
        // replies can no longer be told apart from lost ones.
        self.pending.clear();
        self.queues.clear();
        Ok(())
    }

    fn detect(&mut self, data: &[u8], event: &Event<'_>) -> u8 {
        pairs::detect(data, event)
    }

    fn closed(&mut self, conn: u64, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        self.roles.remove(&conn);
        let mut ends: Vec<QueueKey> = self
            .queues
            .keys()
            .filter(|k| k.0 == conn)
            .copied()
            .collect();
        ends.sort_unstable();
        for k in ends {
            if let Some(q) = self.queues.remove(&k) {
                unanswered(q, "no response", out);
            }
        }
        let mut open: Vec<Stream> = self
            .pending
            .keys()
            .filter(|k| k.0 == conn)
            .copied()
            .collect();
        open.sort_by_key(|&(_, end, dir)| (end, dir.as_str()));
        for key in open {
            let dir = key.2;
            if let Some(rest) = self.pending.remove(&key) {
                out.error(
                    Some("RESP_INCOMPLETE"),
                    &format!(
                        "connection closed with {} bytes of an unfinished {} message",
                        rest.bytes.len(),
                        dir.as_str()
                    ),
                );
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        let mut queues: Vec<_> = self.queues.drain().collect();
        queues.sort_unstable_by_key(|(k, _)| *k);
        for (_, q) in queues {
            unanswered(q, "no response", out);
        }
        let mut open: Vec<_> = self.pending.drain().collect();
        open.sort_by_key(|((conn, end, dir), _)| (*conn, *end, dir.as_str()));
        for ((conn, _, dir), rest) in open {
            out.error(
                Some("RESP_INCOMPLETE"),
                &format!(
                    "input ended with {} bytes of an unfinished {} message on connection {conn}",
                    rest.bytes.len(),
                    dir.as_str()
                ),
            );
        }
        Ok(())
    }
}

impl RespDecoder {
    /// Whether `event`'s bytes are requests: from the client, which spf names
    /// where it knows roles; elsewhere whoever speaks first is the client.
    fn carries_requests(&mut self, event: &Event<'_>, end: u64) -> bool {
        let is_client = match event.role {
            Role::Client => true,
            Role::Server => false,
            Role::Unknown => match self.roles.get(&event.conn) {
                Some(&(seen, client)) => (end == seen) == client,
                None => {
                    let client = event.dir == Direction::Send;
                    self.roles.insert(event.conn, (end, client));
                    client
                }
            },
        };
        (event.dir == Direction::Send) == is_client
    }

    /// Queues a command, or pairs a reply with the oldest command waiting.
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        message: &Message,
        used: usize,
        (started_ns, started_time_ns): (u64, u64),
        event: &Event<'_>,
        requests: bool,
        queue: QueueKey,
        out: &mut DecoderOutput<'_>,
    ) {
        match message {
            Message::Command { words, .. } => {
                let Some(name) = words.first() else { return };
                let (client, server) = pairs::endpoints(event, true);
                let pushed_out = self.queues.entry(queue).or_default().push(Outstanding {
                    method: String::from_utf8_lossy(name).to_ascii_uppercase(),
                    request_bytes: used as u64,
                    started_ns,
                    started_time_ns,
                    client,
                    server,
                });
                if let Some(o) = pushed_out {
                    pairs::emit(
                        out,
                        &o,
                        0,
                        None,
                        Some("no response: too many commands outstanding"),
                        None,
                    );
                }
            }
            Message::Value { value, .. } if !requests && !matches!(value, resp::Value::Push(_)) => {
                // A reply to nothing seen (spf joined mid-conversation) pairs
                // with nothing.
                let Some(o) = self
                    .queues
                    .get_mut(&queue)
                    .and_then(|q| q.waiting.pop_front())
                else {
                    return;
                };
                let error = match value {
                    resp::Value::Error(e) | resp::Value::BulkError(e) => {
                        Some(resp::text_of(&e[..e.len().min(256)]))
                    }
                    _ => None,
                };
                let (_, server) = pairs::endpoints(event, false);
                pairs::emit(
                    out,
                    &o,
                    used as u64,
                    Some(event.ts_ns),
                    error.as_deref(),
                    Some((server.0, &server.1)),
                );
            }
            Message::Value { .. } => {}
        }
    }
}

/// Reports every command of `q` as never answered.
fn unanswered(q: Queue, why: &str, out: &mut DecoderOutput<'_>) {
    for o in q.waiting {
        pairs::emit(out, &o, 0, None, Some(why), None);
    }
}

enum Message {
    Command { words: Vec<Vec<u8>>, inline: bool },
    Value { value: Value, request: bool },
}

fn next_message(buf: &[u8], requests: bool) -> Result<Option<(Message, usize)>, ProtocolError> {
    // Clients may also send "inline" commands, plain text lines.
    if requests && !matches!(buf[0], b'*' | b'$' | b'+' | b'-' | b':') {
        return Ok(resp::parse_inline(buf)?.map(|(words, n)| {
            (
                Message::Command {
                    words,
                    inline: true,
                },
                n,
            )
        }));
    }
    Ok(resp::parse(buf)?.map(|(value, n)| {
        let m = match value.as_command().filter(|_| requests) {
            Some(words) => Message::Command {
                words: words.into_iter().map(<[u8]>::to_vec).collect(),
                inline: false,
            },
            None => Message::Value {
                value,
                request: requests,
            },
        };
        (m, n)
    }))
}

fn emit(message: &Message, out: &mut DecoderOutput<'_>) {
    let (body, text) = match message {
        Message::Command { words, inline } => {
            if words.is_empty() {
                // An empty inline line: Redis ignores it, so does the decoder.
                return;
            }
            let refs: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
            let mut text = String::new();
            for (i, w) in refs.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                resp::word(w, &mut text);
            }
            (resp::request_json(&refs, *inline), text)
        }
        Message::Value { value, request } => {
            let role = match value {
                _ if *request => "request",
                Value::Push(_) => "push",
                _ => "reply",
            };
            let mut m = Map::new();
            m.insert("role".into(), role.into());
            m.insert("type".into(), value.type_name().into());
            m.insert("value".into(), value.to_json());
            if let Some(a) = resp::attributes_json(value) {
                m.insert("attributes".into(), a);
            }
            let mut text = String::new();
            value.render(&mut text, 0);
            (m, text)
        }
    };
    let mut root = Map::new();
    root.insert("resp".into(), Json::Object(body));
    out.record(&Json::Object(root).to_string(), &text);
}

spf_plugin::export_decoder!("resp", RespDecoder);

#[cfg(test)]
mod tests {
    use std::ffi::c_void;

    use spf_plugin::{SPF_OK, SockKind, SpfDecoderOut};

    use super::*;

    unsafe extern "C" fn record(
        ctx: *mut c_void,
        json: *const u8,
        n: usize,
        _t: *const u8,
        _tn: usize,
    ) -> i32 {
        // SAFETY: ctx is the Vec below; json is lent for the call.
        unsafe {
            let out = &mut *ctx.cast::<Vec<Json>>();
            out.push(serde_json::from_slice(std::slice::from_raw_parts(json, n)).unwrap());
        }
        SPF_OK
    }

    unsafe extern "C" fn error(
        ctx: *mut c_void,
        _c: *const u8,
        _cn: usize,
        m: *const u8,
        n: usize,
    ) -> i32 {
        // SAFETY: as above.
        unsafe {
            let out = &mut *ctx.cast::<Vec<Json>>();
            let msg = String::from_utf8_lossy(std::slice::from_raw_parts(m, n)).into_owned();
            out.push(serde_json::json!({ "error": msg }));
        }
        SPF_OK
    }

    unsafe extern "C" fn exchange(ctx: *mut c_void, json: *const u8, n: usize) -> i32 {
        // SAFETY: as above.
        unsafe {
            let out = &mut *ctx.cast::<Vec<Json>>();
            let x: Json = serde_json::from_slice(std::slice::from_raw_parts(json, n)).unwrap();
            out.push(serde_json::json!({ "exchange": x }));
        }
        SPF_OK
    }

    fn feed_event(d: &mut RespDecoder, event: &Event<'_>, got: &mut Vec<Json>) {
        let raw = SpfDecoderOut {
            ctx: (got as *mut Vec<Json>).cast(),
            record,
            error,
            exchange,
        };
        // SAFETY: the callbacks above match the contract.
        let mut out = unsafe { DecoderOutput::from_raw(&raw) };
        d.decode(event, &mut out).unwrap();
    }

    fn feed(d: &mut RespDecoder, socket: u64, dir: Direction, data: &[u8], got: &mut Vec<Json>) {
        let event = Event {
            conn: 9,
            socket,
            len: data.len() as u64,
            pid: 100,
            tid: 100,
            peer_pid: 100,
            dir,
            sock: SockKind::Stream,
            comm: "t",
            data,
            ..Event::default()
        };
        feed_event(d, &event, got);
    }

    /// The connection view: pipelined commands split across events, replies in
    /// order; each reply completes one exchange, timed from the event that held
    /// its command's first byte to the one that completed the reply.
    #[test]
    fn replies_pair_with_commands_into_exchanges() {
        let mut d = RespDecoder::init("{}").unwrap();
        let mut got = Vec::new();
        let ev = |ts, role, data: &'static [u8]| Event {
            conn: 4,
            ts_ns: ts,
            socket: if role == Role::Client { 10 } else { 11 },
            peer_socket: if role == Role::Client { 11 } else { 10 },
            pid: if role == Role::Client { 1 } else { 2 },
            peer_pid: if role == Role::Client { 2 } else { 1 },
            comm: if role == Role::Client {
                "cli"
            } else {
                "redis-server"
            },
            role,
            via: Some(Direction::Send),
            data,
            len: data.len() as u64,
            ..Event::default()
        };
        feed_event(&mut d, &ev(100, Role::Client, b"*1\r\n$4\r\nPI"), &mut got);
        feed_event(
            &mut d,
            &ev(
                150,
                Role::Client,
                b"NG\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nQUIT\r\n",
            ),
            &mut got,
        );
        feed_event(
            &mut d,
            &ev(400, Role::Server, b"+PONG\r\n-ERR no\r\n"),
            &mut got,
        );
        let x: Vec<&Json> = got.iter().filter_map(|r| r.get("exchange")).collect();
        assert_eq!(x.len(), 2, "{got:#?}");
        assert_eq!(x[0]["method"], "PING");
        assert_eq!(x[0]["latency_ns"], 300);
        assert_eq!(x[0]["request_bytes"], 14);
        assert_eq!(x[0]["response_bytes"], 7);
        assert_eq!(x[0]["client"], serde_json::json!({"pid": 1, "comm": "cli"}));
        assert_eq!(
            x[0]["server"],
            serde_json::json!({"pid": 2, "comm": "redis-server"})
        );
        assert!(x[0].get("error").is_none());
        assert_eq!(x[1]["method"], "GET");
        assert_eq!(x[1]["latency_ns"], 250);
        assert_eq!(x[1]["error"], "ERR no");

        // QUIT never got its reply: reported when the connection closes.
        got.clear();
        let raw = SpfDecoderOut {
            ctx: (&mut got as *mut Vec<Json>).cast(),
            record,
            error,
            exchange,
        };
        // SAFETY: as in feed_event.
        let mut out = unsafe { DecoderOutput::from_raw(&raw) };
        d.closed(4, &mut out).unwrap();
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0]["exchange"]["method"], "QUIT");
        assert_eq!(got[0]["exchange"]["error"], "no response");
        assert!(got[0]["exchange"].get("latency_ns").is_none());
    }

    /// Both ends captured (here by one process, so only sockets tell them apart):
    /// the client's sends and the server's sends are separate streams, even when
    /// a reply arrives while the next pipelined request is half sent.
    #[test]
    fn both_ends_of_a_connection_decode_separately() {
        let mut d = RespDecoder::init("{}").unwrap();
        let mut got = Vec::new();
        let (client, server) = (1, 2);
        feed(
            &mut d,
            client,
            Direction::Send,
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET",
            &mut got,
        );
        feed(
            &mut d,
            server,
            Direction::Recv,
            b"*1\r\n$4\r\nPING\r\n",
            &mut got,
        );
        feed(&mut d, server, Direction::Send, b"+PONG\r\n", &mut got);
        feed(&mut d, client, Direction::Recv, b"+PONG\r\n", &mut got);
        feed(
            &mut d,
            client,
            Direction::Send,
            b"\r\n$1\r\nk\r\n",
            &mut got,
        );
        let roles: Vec<String> = got
            .iter()
            .filter(|r| r.get("resp").is_some())
            .map(|r| {
                let r = &r["resp"];
                format!(
                    "{} {}",
                    r["role"].as_str().unwrap(),
                    r["command"].as_str().or(r["value"].as_str()).unwrap()
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                "request PING",
                "request PING",
                "reply PONG",
                "reply PONG",
                "request GET"
            ]
        );
        let last = got.iter().rev().find(|r| r.get("resp").is_some()).unwrap();
        assert_eq!(last["resp"]["args"], serde_json::json!(["k"]));
        // Each end pairs its own view of the conversation: the PING's reply
        // completes one exchange at each end.
        let pings = got
            .iter()
            .filter(|r| r["exchange"]["method"] == "PING")
            .count();
        assert_eq!(pings, 2, "{got:#?}");
    }
}
