//! An spf decoder plugin for Redis's RESP protocol (RESP2 and RESP3).
//!
//! Each record is one request or one reply:
//!
//! ```json
//! {"resp":{"role":"request","command":"SET","args":["greeting","hello"]}}
//! {"resp":{"role":"reply","type":"simple","value":"OK"}}
//! ```
//!
//! Messages may be pipelined (many in one event) or split across events: bytes
//! are buffered per stream (connection, socket end, direction) until a message is
//! whole. With both ends of a connection captured, each end's view is decoded on
//! its own.
//!
//! Which end is the client is learned from the first event of a connection:
//! clients speak first, so whoever sends first (or the peer of whoever receives
//! first) is the client. Ends are told apart by the event's `socket`, or by pid
//! when the source does not know sockets. A capture that starts in the middle of a conversation may
//! label the first exchanges the wrong way round; the values are decoded right
//! either way.
//!
//! Config keys (all optional):
//! - `max_message`: bytes one message may take before it is dropped with an error
//!   (default 64 MiB), so a stream that is not RESP cannot grow a buffer forever.

mod resp;

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use spf_plugin::{DecoderOutput, DecoderPlugin, Direction, Error, Event};

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

pub struct RespDecoder {
    /// Bytes of a message not yet complete, per stream.
    pending: HashMap<Stream, Vec<u8>>,
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
            roles: HashMap::new(),
            max_message,
        })
    }

    fn decode(&mut self, event: &Event<'_>, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        let end = end_of(event);
        let is_client = match self.roles.get(&event.conn) {
            Some(&(seen, client)) => (end == seen) == client,
            None => {
                let client = event.dir == Direction::Send;
                self.roles.insert(event.conn, (end, client));
                client
            }
        };
        let requests = (event.dir == Direction::Send) == is_client;

        let key = (event.conn, end, event.dir);
        let held = self.pending.remove(&key).unwrap_or_default();
        // The common case, whole messages in one event, parses the event's bytes
        // in place; only a partial message is copied.
        let mut joined;
        let input: &[u8] = if held.is_empty() {
            event.data
        } else {
            joined = held;
            joined.extend_from_slice(event.data);
            &joined
        };

        let mut at = 0;
        while at < input.len() {
            match next_message(&input[at..], requests) {
                Ok(Some((message, used))) => {
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
            self.pending.insert(key, rest.to_vec());
        }
        Ok(())
    }

    fn lost(&mut self, _count: u64, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        // Any buffered partial message may now be missing its middle.
        self.pending.clear();
        Ok(())
    }

    fn closed(&mut self, conn: u64, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        self.roles.remove(&conn);
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
                        rest.len(),
                        dir.as_str()
                    ),
                );
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        let mut open: Vec<_> = self.pending.drain().collect();
        open.sort_by_key(|((conn, end, dir), _)| (*conn, *end, dir.as_str()));
        for ((conn, _, dir), rest) in open {
            out.error(
                Some("RESP_INCOMPLETE"),
                &format!(
                    "input ended with {} bytes of an unfinished {} message on connection {conn}",
                    rest.len(),
                    dir.as_str()
                ),
            );
        }
        Ok(())
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

    fn feed(d: &mut RespDecoder, socket: u64, dir: Direction, data: &[u8], got: &mut Vec<Json>) {
        let raw = SpfDecoderOut {
            ctx: (got as *mut Vec<Json>).cast(),
            record,
            error,
        };
        // SAFETY: the callbacks above match the contract.
        let mut out = unsafe { DecoderOutput::from_raw(&raw) };
        let event = Event {
            seq: 0,
            ts_ns: 0,
            time_ns: 0,
            conn: 9,
            socket,
            len: data.len() as u64,
            pid: 100,
            tid: 100,
            peer_pid: 100,
            dir,
            sock: SockKind::Stream,
            truncated: false,
            comm: "t",
            path: "",
            data,
        };
        d.decode(&event, &mut out).unwrap();
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
        assert_eq!(got[4]["resp"]["args"], serde_json::json!(["k"]));
    }
}
