//! Requests paired with their replies: RESP answers every command in order (a
//! pipeline of commands gets its replies in the same order), so one queue of
//! outstanding commands per connection is all it takes. Push messages (RESP3
//! `>`) answer nothing and leave the queue alone.

use std::collections::VecDeque;

use spf_plugin::{DecoderOutput, Direction, Endpoint, Event, Exchange};

/// Outstanding commands kept per connection; past it the oldest is reported
/// without a reply, so that a client that never reads cannot grow the queue.
pub const MAX_OUTSTANDING: usize = 1024;

/// A command waiting for its reply.
pub struct Outstanding {
    /// The command's name, upper case (`GET`).
    pub method: String,
    pub request_bytes: u64,
    /// `ts_ns` and `time_ns` of the event that held the command's first byte.
    pub started_ns: u64,
    pub started_time_ns: u64,
    pub client: (u32, String),
    pub server: (u32, String),
}

/// The two processes of an event: (client, server), given whether the event's
/// bytes are requests. An event is seen from `pid`, which sent them (`dir`
/// send) or received them.
pub fn endpoints(event: &Event<'_>, requests: bool) -> ((u32, String), (u32, String)) {
    let me = (event.pid, event.comm.to_string());
    let peer = (event.peer_pid, event.peer_comm.to_string());
    // The sender of requests is the client; a receiver of requests the server.
    if (event.dir == Direction::Send) == requests {
        (me, peer)
    } else {
        (peer, me)
    }
}

#[derive(Default)]
pub struct Queue {
    pub waiting: VecDeque<Outstanding>,
}

impl Queue {
    /// A command was sent; returns the one pushed out when the queue is full.
    pub fn push(&mut self, o: Outstanding) -> Option<Outstanding> {
        let dropped = if self.waiting.len() >= MAX_OUTSTANDING {
            self.waiting.pop_front()
        } else {
            None
        };
        self.waiting.push_back(o);
        dropped
    }
}

/// Emits the exchange of `o`: answered by a reply of `response_bytes` that ended
/// at `ended_ns` (with `error` when the reply is an error), or, with `ended_ns`
/// `None`, never answered for the reason `error`.
pub fn emit(
    out: &mut DecoderOutput<'_>,
    o: &Outstanding,
    response_bytes: u64,
    ended_ns: Option<u64>,
    error: Option<&str>,
    server: Option<(u32, &str)>,
) {
    let server = server.unwrap_or((o.server.0, &o.server.1));
    out.exchange(&Exchange {
        protocol: "resp",
        method: Some(&o.method),
        request_bytes: o.request_bytes,
        response_bytes,
        started_ns: o.started_ns,
        started_time_ns: o.started_time_ns,
        latency_ns: ended_ns.map(|t| t.saturating_sub(o.started_ns)),
        error,
        client: Some(Endpoint {
            pid: o.client.0,
            comm: &o.client.1,
        }),
        server: Some(Endpoint {
            pid: server.0,
            comm: server.1,
        }),
        ..Default::default()
    });
}

/// How sure it is that a connection whose first bytes are `data` speaks RESP:
/// a command array (`*N\r\n$L\r\n...`) or an inline command (`PING\r\n`) from the
/// client. A server's first bytes alone (`+OK`, `:1`) say little.
pub fn detect(data: &[u8], event: &Event<'_>) -> u8 {
    let from_server = event.role == spf_plugin::Role::Server;
    if let Some(rest) = data.strip_prefix(b"*") {
        let (count, rest) = digits(rest);
        let Some(count) = count else { return 0 };
        let Some(rest) = rest.strip_prefix(b"\r\n") else {
            return if rest.is_empty() && count > 0 { 40 } else { 0 };
        };
        if count == 0 || count > 1024 * 1024 {
            return 0;
        }
        let Some(rest) = rest.strip_prefix(b"$") else {
            return if rest.is_empty() { 50 } else { 0 };
        };
        let (len, rest) = digits(rest);
        let whole = len.is_some() && (rest.is_empty() || rest.starts_with(b"\r\n"));
        // `*2\r\n$` and no more yet is a command's start too.
        let cut_short = len.is_none() && rest.is_empty();
        if !whole && !cut_short {
            return 0;
        }
        // A reply can be an array of bulk strings too (MGET), but a server
        // does not speak first.
        return if from_server { 30 } else { 90 };
    }
    if from_server {
        return 0;
    }
    // An inline command: a known command name, then the end of the line.
    let line_end = data.iter().position(|&b| b == b'\n');
    let word_end = data
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let word = &data[..word_end];
    if line_end.is_none() || word.is_empty() || word.len() > 16 {
        return 0;
    }
    let line = &data[..line_end.unwrap_or(0)];
    // An HTTP/1 request line starts with GET too.
    if line.windows(6).any(|w| w == b" HTTP/") || !line.iter().all(|&b| b >= 0x20 || b == b'\r') {
        return 0;
    }
    let known = INLINE_COMMANDS
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(word));
    if known { 60 } else { 0 }
}

/// Commands people type into a raw connection (`redis-cli` sends arrays).
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "GET",
    "SET",
    "DEL",
    "INCR",
    "KEYS",
    "INFO",
    "AUTH",
    "HELLO",
    "SELECT",
    "EXISTS",
    "EXPIRE",
    "TTL",
    "MGET",
    "MSET",
    "QUIT",
    "CLIENT",
    "CONFIG",
    "SUBSCRIBE",
];

fn digits(b: &[u8]) -> (Option<u64>, &[u8]) {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 18 {
        return (None, b);
    }
    let v = std::str::from_utf8(&b[..n])
        .ok()
        .and_then(|s| s.parse().ok());
    (v, &b[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_commands_from_clients() {
        let client = Event {
            role: spf_plugin::Role::Client,
            ..Event::default()
        };
        let unknown = Event::default();
        let server = Event {
            role: spf_plugin::Role::Server,
            ..Event::default()
        };
        let cmd = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(detect(cmd, &client), 90);
        assert_eq!(detect(cmd, &unknown), 90);
        assert_eq!(detect(cmd, &server), 30);
        assert_eq!(detect(b"*2\r\n$", &client), 90);
        assert_eq!(detect(b"PING\r\n", &unknown), 60);
        assert_eq!(detect(b"ping\n", &client), 60);
        assert_eq!(detect(b"PING\r\n", &server), 0);
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"*x\r\n",
            b"*0\r\n",
            b"\x00\x01\x02",
            b"",
            b"+OK\r\n",
        ] {
            assert!(
                detect(other, &client) < 50,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
