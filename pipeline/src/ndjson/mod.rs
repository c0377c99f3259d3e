//! The NDJSON contract: one JSON object per line, written by the ndjson and stdout
//! sinks, read back by the `file` source. Field names are stable (see README).
//!
//! The encoder is hand-written rather than built on `serde_json::Value` because it
//! runs once per record on the hot path; building a map per record would cost more
//! than everything else the raw pipeline does.
//!
//! Here the encoder; time.rs the RFC 3339 times, parse.rs (and its fast
//! path, parse/fast.rs) the reading back.

use std::sync::Arc;

// SIMD base64: for large payloads, encoding and decoding are most of the work a
// replay does.
use base64_simd::STANDARD as B64;

use crate::event::{Container, Direction, Event, Lost, Role, SockKind, SourceItem};
use crate::record::{Body, Exchange, Record};
// The byte escaper lives with the text escaper; callers that know it from here
// keep finding it.
pub use crate::escape::escape_bytes;

mod parse;
#[cfg(test)]
mod tests;
mod time;

pub use parse::{Interner, ParseError, Parsed, parse_line};
pub use time::{parse_rfc3339, rfc3339};

/// How many captured bytes the escaped `text` preview shows; `data_b64` always has
/// them all.
pub const TEXT_PREVIEW: usize = 1024;

/// Appends one record as a JSON line (with the trailing `\n`).
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Lost(l) => encode_lost(l, out),
        Record::Decoded(d) => {
            out.push(b'{');
            common_fields(&d.event, out);
            out.extend_from_slice(b",\"decoder\":");
            json_str(&d.decoder, out);
            match &d.body {
                Body::Raw => {
                    out.extend_from_slice(b",\"data_b64\":\"");
                    b64_into(&d.event.data, out);
                    out.extend_from_slice(b"\",\"text\":\"");
                    let preview = &d.event.data[..d.event.data.len().min(TEXT_PREVIEW)];
                    escape_bytes(preview, true, out);
                    if d.event.data.len() > TEXT_PREVIEW {
                        out.extend_from_slice("\u{2026}".as_bytes());
                    }
                    out.push(b'"');
                }
                Body::Fields { json, .. } => {
                    for (k, v) in json {
                        out.push(b',');
                        json_str(k, out);
                        out.push(b':');
                        // Writing into a Vec cannot fail, and a `Value` always
                        // serializes.
                        let _ = serde_json::to_writer(&mut *out, v);
                    }
                }
                Body::Typed(f) => f.write_json(out),
                Body::Exchange(x) => exchange(x, out),
                Body::Error { code, message } => {
                    out.extend_from_slice(b",\"error\":{\"code\":");
                    match code {
                        Some(c) => json_str(c, out),
                        None => out.extend_from_slice(b"null"),
                    }
                    out.extend_from_slice(b",\"message\":");
                    json_str(message, out);
                    out.push(b'}');
                }
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// `,"container":{...}`: id and runtime always, the rest where known.
fn container(c: &Container, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"container\":{\"id\":");
    json_str(&c.id, out);
    out.extend_from_slice(b",\"runtime\":");
    json_str(&c.runtime, out);
    for (key, v) in [
        (&b",\"name\":"[..], &c.name),
        (&b",\"pod_namespace\":"[..], &c.pod_namespace),
        (&b",\"pod_name\":"[..], &c.pod_name),
    ] {
        if let Some(v) = v {
            out.extend_from_slice(key);
            json_str(v, out);
        }
    }
    out.push(b'}');
}

/// `,"exchange":{...}`: every key always present (`null` when unknown), so that
/// jq filters need no `?`.
fn exchange(x: &Exchange, out: &mut Vec<u8>) {
    fn opt_str(key: &[u8], v: Option<&str>, out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        match v {
            Some(s) => json_str(s, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    fn opt_u64(key: &[u8], v: Option<u64>, out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        match v {
            Some(n) => push_u64(n, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"exchange\":{\"protocol\":");
    json_str(&x.protocol, out);
    opt_str(b",\"method\":", x.method.as_deref(), out);
    opt_str(b",\"path\":", x.path.as_deref(), out);
    opt_str(b",\"authority\":", x.authority.as_deref(), out);
    opt_u64(b",\"status\":", x.status.map(u64::from), out);
    opt_u64(b",\"grpc_status\":", x.grpc_status.map(u64::from), out);
    opt_str(b",\"grpc_message\":", x.grpc_message.as_deref(), out);
    out.extend_from_slice(b",\"request_bytes\":");
    push_u64(x.request_bytes, out);
    out.extend_from_slice(b",\"response_bytes\":");
    push_u64(x.response_bytes, out);
    out.extend_from_slice(b",\"started_ns\":");
    push_u64(x.started_ns, out);
    out.extend_from_slice(b",\"started\":\"");
    rfc3339(x.started_time_ns, out);
    out.push(b'"');
    opt_u64(b",\"latency_ns\":", x.latency_ns, out);
    opt_str(b",\"error\":", x.error.as_deref(), out);
    out.extend_from_slice(b",\"client_pid\":");
    push_u64(x.client.pid.into(), out);
    out.extend_from_slice(b",\"client_comm\":");
    json_str(&x.client.comm, out);
    out.extend_from_slice(b",\"server_pid\":");
    push_u64(x.server.pid.into(), out);
    out.extend_from_slice(b",\"server_comm\":");
    json_str(&x.server.comm, out);
    out.push(b'}');
}

/// The line of a connection's end, in a capture that keeps the source's
/// events (`events = true`, `--output`): replayed, it ends the connection as
/// the live capture did (decoders let go of its state, pcapng writes its FIN,
/// plugins' `closed` runs). `ts_ns` is the kernel's clock, as in events.
pub fn encode_closed(conn: u64, ts_ns: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts_ns\":");
    push_u64(ts_ns, out);
    out.extend_from_slice(b",\"conn\":");
    push_u64(conn, out);
    out.extend_from_slice(b",\"closed\":true}\n");
}

fn encode_lost(l: &Lost, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts_ns\":");
    push_u64(l.ts_ns, out);
    out.extend_from_slice(b",\"time\":\"");
    rfc3339(l.time_ns, out);
    out.extend_from_slice(b"\",\"lost\":");
    push_u64(l.count, out);
    out.extend_from_slice(b"}\n");
}

/// The fields every record of an event has. Fields that most events leave at
/// their default (`peer_comm`, `peer_socket`, `role`, `lane`, `pos`, `rpos`,
/// `epoch`, `skip`, `via`, `cgroup`, `node`) are written only when set, always in this order, so
/// that the reader's fast path can expect them. `via` is there exactly in the
/// connection view.
fn common_fields(e: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"ts_ns\":");
    push_u64(e.ts_ns, out);
    out.extend_from_slice(b",\"time\":\"");
    rfc3339(e.time_ns, out);
    out.extend_from_slice(b"\",\"pid\":");
    push_u64(e.pid.into(), out);
    out.extend_from_slice(b",\"tid\":");
    push_u64(e.tid.into(), out);
    out.extend_from_slice(b",\"comm\":");
    json_str(&e.comm, out);
    out.extend_from_slice(b",\"peer_pid\":");
    push_u64(e.peer_pid.into(), out);
    if !e.peer_comm.is_empty() {
        out.extend_from_slice(b",\"peer_comm\":");
        json_str(&e.peer_comm, out);
    }
    out.extend_from_slice(b",\"path\":");
    json_str(&e.path, out);
    out.extend_from_slice(b",\"sock\":\"");
    out.extend_from_slice(e.sock.as_str().as_bytes());
    out.extend_from_slice(b"\",\"dir\":\"");
    out.extend_from_slice(e.dir.as_str().as_bytes());
    out.extend_from_slice(b"\",\"conn\":");
    push_u64(e.conn, out);
    out.extend_from_slice(b",\"socket\":");
    push_u64(e.socket, out);
    if e.peer_socket != 0 {
        out.extend_from_slice(b",\"peer_socket\":");
        push_u64(e.peer_socket, out);
    }
    if e.role != Role::Unknown {
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(e.role.as_str().as_bytes());
        out.push(b'"');
    }
    if e.lane != 0 {
        out.extend_from_slice(b",\"lane\":");
        push_u64(e.lane.into(), out);
    }
    if let Some(pos) = e.pos {
        out.extend_from_slice(b",\"pos\":");
        push_u64(pos, out);
    }
    if let Some(rpos) = e.rpos {
        out.extend_from_slice(b",\"rpos\":");
        push_u64(rpos, out);
    }
    if e.epoch != 0 {
        out.extend_from_slice(b",\"epoch\":");
        push_u64(e.epoch.into(), out);
    }
    if e.skip != 0 {
        out.extend_from_slice(b",\"skip\":");
        push_u64(e.skip, out);
    }
    out.extend_from_slice(b",\"len\":");
    push_u64(e.len, out);
    out.extend_from_slice(b",\"captured\":");
    push_u64(e.data.len() as u64, out);
    out.extend_from_slice(if e.truncated {
        b",\"truncated\":true"
    } else {
        b",\"truncated\":false"
    });
    if let Some(via) = e.via {
        out.extend_from_slice(b",\"via\":\"");
        out.extend_from_slice(via.as_str().as_bytes());
        out.push(b'"');
    }
    if e.cgroup != 0 {
        out.extend_from_slice(b",\"cgroup\":");
        push_u64(e.cgroup, out);
    }
    if let Some(c) = &e.container {
        container(c, out);
    }
    if !e.node.is_empty() {
        out.extend_from_slice(b",\"node\":");
        json_str(&e.node, out);
    }
}

/// Writes `v` as a JSON number.
pub fn push_u64(v: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `data` as standard base64 (no quotes).
pub fn b64_into(data: &[u8], out: &mut Vec<u8>) {
    B64.encode_append(data, out);
}

/// Writes `s` as a JSON string literal.
pub fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping: most strings
        // (names, paths, header values) need none.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape8(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[run..i]);
                control_escape(b, out);
                i += 1;
                run = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(esc);
        i += 1;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` is one `json_str` escapes: below
/// 0x20, `"`, `\\` or 0x7f (exact, by the usual zero-byte test).
fn needs_escape8(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit only for
    // them (bytes with the high bit set are masked out by `!w`).
    let below = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below
        | zero_in(w ^ (ONES * b'"' as u64))
        | zero_in(w ^ (ONES * b'\\' as u64))
        | zero_in(w ^ (ONES * 0x7f))
        != 0
}

fn control_escape(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 0xf) as usize]);
}
