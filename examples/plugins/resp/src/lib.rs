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
//! are buffered per connection and direction until a message is whole.
//!
//! Which side is the client is learned from the first event of a connection:
//! clients speak first, so whoever sends first (or the peer of whoever receives
//! first) is the client. A capture that starts in the middle of a conversation may
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

pub struct RespDecoder {
    /// Bytes of a message not yet complete, per (connection, direction).
    pending: HashMap<(u64, Direction), Vec<u8>>,
    /// Per connection: a pid seen on it and whether that pid is the client.
    roles: HashMap<u64, (u32, bool)>,
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
        let is_client = match self.roles.get(&event.conn) {
            Some(&(pid, client)) => (event.pid == pid) == client,
            None => {
                let client = event.dir == Direction::Send;
                self.roles.insert(event.conn, (event.pid, client));
                client
            }
        };
        let requests = (event.dir == Direction::Send) == is_client;

        let key = (event.conn, event.dir);
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
        for dir in [Direction::Send, Direction::Recv] {
            if let Some(rest) = self.pending.remove(&(conn, dir)) {
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
        open.sort_by_key(|((conn, dir), _)| (*conn, dir.as_str()));
        for ((conn, dir), rest) in open {
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
