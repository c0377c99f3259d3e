//! The NDJSON contract: one JSON object per line, written by the ndjson and stdout
//! sinks, read back by the `file` source. Field names are stable (see README).
//!
//! The encoder is hand-written rather than built on `serde_json::Value` because it
//! runs once per record on the hot path; building a map per record would cost more
//! than everything else the raw pipeline does.

use std::sync::Arc;

// SIMD base64: for large payloads, encoding and decoding are most of the work a
// replay does.
use base64_simd::STANDARD as B64;
use serde::Deserialize;

use crate::event::{Container, Direction, Event, Lost, Role, SockKind, SourceItem};
use crate::record::{Body, Exchange, Record};
// The byte escaper lives with the text escaper; callers that know it from here
// keep finding it.
pub use crate::escape::escape_bytes;

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
/// their default (`peer_comm`, `peer_socket`, `role`, `lane`, `pos`, `epoch`,
/// `skip`, `via`,
/// `cgroup`, `node`) are written only when set, always in this order, so
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

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(time_ns: u64, out: &mut Vec<u8>) {
    let secs = time_ns / 1_000_000_000;
    let nanos = time_ns % 1_000_000_000;
    // Records come in bursts within one second; the calendar arithmetic is done
    // once per second and thread.
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let prefix = LAST.with(|last| {
        let (s, p) = last.get();
        if s == secs {
            return p;
        }
        let p = date_time_prefix(secs);
        last.set((secs, p));
        p
    });
    let mut buf = [0u8; 30];
    buf[..20].copy_from_slice(&prefix);
    put_padded(nanos, 9, &mut buf[20..29]);
    buf[29] = b'Z';
    out.extend_from_slice(&buf);
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since the epoch.
fn date_time_prefix(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut buf = [0u8; 20];
    let fields: [(u64, usize); 6] = [
        (y as u64, 4),
        (m as u64, 2),
        (d as u64, 2),
        (rem / 3600, 2),
        (rem % 3600 / 60, 2),
        (rem % 60, 2),
    ];
    let seps = [b'-', b'-', b'T', b':', b':', b'.'];
    let mut i = 0;
    for ((v, w), sep) in fields.iter().zip(seps) {
        put_padded(*v, *w, &mut buf[i..i + w]);
        i += w;
        buf[i] = sep;
        i += 1;
    }
    buf
}

fn put_padded(mut v: u64, width: usize, dst: &mut [u8]) {
    for j in (0..width).rev() {
        dst[j] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Howard Hinnant's civil-from-days: exact for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the `time` field as written by [`rfc3339`] (also accepts fewer fraction
/// digits and a missing fraction).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || *b.last()? != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut nanos = 0u64;
    if b[19] == b'.' {
        let frac = s.get(20..s.len() - 1)?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        nanos = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    } else if b.len() != 20 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    // Times past what nanoseconds in a u64 can hold (the year 2554) are refused,
    // not wrapped.
    u64::try_from(days)
        .ok()?
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + se)?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Why a line could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("invalid `{field}`: {why}")]
    Field { field: &'static str, why: String },
}

/// What one NDJSON line turns back into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Item(SourceItem),
    /// A record of another decoder (e.g. `http2`): not an event, nothing to replay.
    Skip,
}

#[derive(Deserialize)]
struct Line<'a> {
    ts_ns: Option<u64>,
    #[serde(borrow)]
    time: Option<std::borrow::Cow<'a, str>>,
    lost: Option<u64>,
    pid: Option<u32>,
    tid: Option<u32>,
    #[serde(borrow)]
    comm: Option<std::borrow::Cow<'a, str>>,
    peer_pid: Option<u32>,
    #[serde(borrow)]
    peer_comm: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    sock: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    dir: Option<std::borrow::Cow<'a, str>>,
    conn: Option<u64>,
    socket: Option<u64>,
    peer_socket: Option<u64>,
    #[serde(borrow)]
    role: Option<std::borrow::Cow<'a, str>>,
    lane: Option<u8>,
    pos: Option<u64>,
    epoch: Option<u32>,
    skip: Option<u64>,
    len: Option<u64>,
    truncated: Option<bool>,
    #[serde(borrow)]
    via: Option<std::borrow::Cow<'a, str>>,
    cgroup: Option<u64>,
    container: Option<ContainerLine>,
    #[serde(borrow)]
    node: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    decoder: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data_b64: Option<RawStr<'a>>,
}

#[derive(Deserialize)]
struct ContainerLine {
    id: String,
    runtime: String,
    name: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
}

/// A JSON string taken as bytes: base64 needs no UTF-8 check, and skipping it is a
/// measurable share of replay time.
struct RawStr<'a>(std::borrow::Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for RawStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(RawStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(RawStr(std::borrow::Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawStr(std::borrow::Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawStr(std::borrow::Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// Shares repeated strings (comm, path) between events read back from a file.
#[derive(Default)]
pub struct Interner {
    last_comm: Option<Arc<str>>,
    last_peer_comm: Option<Arc<str>>,
    last_path: Option<Arc<str>>,
    last_node: Option<Arc<str>>,
    /// The last `YYYY-MM-DDTHH:MM:SS` seen and its seconds: lines of one second
    /// share it, and parsing the calendar is a measurable part of a replay.
    last_second: Option<([u8; 19], u64)>,
    map: std::collections::HashMap<Box<str>, Arc<str>>,
}

impl Interner {
    fn get(
        slot: &mut Option<Arc<str>>,
        map: &mut std::collections::HashMap<Box<str>, Arc<str>>,
        s: &str,
    ) -> Arc<str> {
        if let Some(a) = slot
            && &**a == s
        {
            return Arc::clone(a);
        }
        let a = match map.get(s) {
            Some(a) => Arc::clone(a),
            None => {
                let a: Arc<str> = s.into();
                // Bounded: a capture with endless distinct names must not grow
                // memory without limit.
                if map.len() < 4096 {
                    map.insert(s.into(), Arc::clone(&a));
                }
                a
            }
        };
        *slot = Some(Arc::clone(&a));
        a
    }
}

/// Reads one NDJSON line back. `seq` becomes the event's sequence number.
pub fn parse_line(line: &[u8], seq: u64, interner: &mut Interner) -> Result<Parsed, ParseError> {
    if let Some(item) = fast::raw_event(line, seq, interner) {
        return Ok(Parsed::Item(item));
    }
    let l: Line<'_> = serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
    let ts_ns = l.ts_ns.unwrap_or(0);
    let time_ns = match &l.time {
        Some(t) => parse_rfc3339(t).ok_or_else(|| ParseError::Field {
            field: "time",
            why: format!("`{t}` is not an RFC 3339 UTC time"),
        })?,
        None => 0,
    };
    if let Some(count) = l.lost {
        return Ok(Parsed::Item(SourceItem::Lost(Lost {
            ts_ns,
            time_ns,
            count,
        })));
    }
    // Only raw records carry the bytes of an event. Other decoders' records are
    // derived data: replaying them would duplicate what the raw lines already hold.
    match l.decoder.as_deref() {
        Some("raw") => {}
        Some(_) => return Ok(Parsed::Skip),
        None => {
            return Err(ParseError::Field {
                field: "decoder",
                why: "missing (and no `lost` field either)".into(),
            });
        }
    }
    let b64 = l.data_b64.ok_or(ParseError::Field {
        field: "data_b64",
        why: "missing in a raw record".into(),
    })?;
    let data = B64.decode_to_vec(&b64.0).map_err(|e| ParseError::Field {
        field: "data_b64",
        why: e.to_string(),
    })?;
    let sock = match l.sock.as_deref() {
        None => SockKind::Stream,
        Some(s) => SockKind::parse(s).ok_or_else(|| ParseError::Field {
            field: "sock",
            why: format!("`{s}` is not stream, dgram or seqpacket"),
        })?,
    };
    let dir = match l.dir.as_deref() {
        None => Direction::Send,
        Some(s) => Direction::parse(s).ok_or_else(|| ParseError::Field {
            field: "dir",
            why: format!("`{s}` is not send or recv"),
        })?,
    };
    let role = match l.role.as_deref() {
        None => Role::Unknown,
        Some(s) => Role::parse(s).ok_or_else(|| ParseError::Field {
            field: "role",
            why: format!("`{s}` is not client, server or unknown"),
        })?,
    };
    let via = match l.via.as_deref() {
        None => None,
        Some(s) => Some(Direction::parse(s).ok_or_else(|| ParseError::Field {
            field: "via",
            why: format!("`{s}` is not send or recv"),
        })?),
    };
    let skip = l.skip.unwrap_or(0);
    let len = l.len.unwrap_or(data.len() as u64);
    if len < (data.len() as u64).saturating_add(skip) {
        return Err(ParseError::Field {
            field: "len",
            why: format!(
                "{len} is less than the {} bytes captured and {skip} skipped",
                data.len()
            ),
        });
    }
    let comm = Interner::get(
        &mut interner.last_comm,
        &mut interner.map,
        l.comm.as_deref().unwrap_or(""),
    );
    let path = Interner::get(
        &mut interner.last_path,
        &mut interner.map,
        l.path.as_deref().unwrap_or(""),
    );
    let peer_comm = Interner::get(
        &mut interner.last_peer_comm,
        &mut interner.map,
        l.peer_comm.as_deref().unwrap_or(""),
    );
    let node = Interner::get(
        &mut interner.last_node,
        &mut interner.map,
        l.node.as_deref().unwrap_or(""),
    );
    Ok(Parsed::Item(SourceItem::Event(Arc::new(Event {
        seq,
        ts_ns,
        time_ns,
        pid: l.pid.unwrap_or(0),
        tid: l.tid.unwrap_or(0),
        comm,
        peer_pid: l.peer_pid.unwrap_or(0),
        peer_comm,
        path,
        sock,
        dir,
        conn: l.conn.unwrap_or(0),
        socket: l.socket.unwrap_or(0),
        peer_socket: l.peer_socket.unwrap_or(0),
        role,
        lane: l.lane.unwrap_or(0),
        pos: l.pos,
        epoch: l.epoch.unwrap_or(0),
        skip,
        len,
        truncated: l
            .truncated
            .unwrap_or(len > (data.len() as u64).saturating_add(skip)),
        data: data.into(),
        via,
        cgroup: l.cgroup.unwrap_or(0),
        container: l.container.map(|c| {
            Arc::new(Container {
                id: c.id.into(),
                runtime: c.runtime.into(),
                name: c.name.map(Into::into),
                pod_namespace: c.pod_namespace.map(Into::into),
                pod_name: c.pod_name.map(Into::into),
            })
        }),
        node,
    }))))
}

/// A fast path for the exact shape [`encode`] writes for raw records: fields in
/// encoder order, no escapes in strings. Anything else returns `None` and goes
/// through serde, which accepts any valid JSON; both give the same event.
mod fast {
    use super::*;

    struct Cur<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Cur<'a> {
        fn lit(&mut self, s: &[u8]) -> Option<()> {
            if self.b.get(self.i..self.i + s.len())? == s {
                self.i += s.len();
                Some(())
            } else {
                None
            }
        }

        fn uint(&mut self) -> Option<u64> {
            let start = self.i;
            let mut v: u64 = 0;
            while let Some(&c) = self.b.get(self.i) {
                if !c.is_ascii_digit() {
                    break;
                }
                v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                self.i += 1;
            }
            // JSON forbids leading zeros; leave such input to serde's verdict.
            let n = self.i - start;
            if n == 0 || (n > 1 && self.b[start] == b'0') {
                return None;
            }
            Some(v)
        }

        /// A string without escapes or control characters, as raw bytes.
        fn plain_str(&mut self) -> Option<&'a [u8]> {
            self.lit(b"\"")?;
            let start = self.i;
            let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
            if self.b[start + len] != b'"' || self.b[start..start + len].iter().any(|&c| c < 0x20) {
                return None;
            }
            self.i = start + len + 1;
            Some(&self.b[start..start + len])
        }

        /// Like `plain_str`, without the control-character scan: base64 decoding
        /// rejects every byte outside its alphabet anyway, and payloads are long.
        fn b64_str(&mut self) -> Option<&'a [u8]> {
            self.lit(b"\"")?;
            let start = self.i;
            let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
            if self.b[start + len] != b'"' {
                return None;
            }
            self.i = start + len + 1;
            Some(&self.b[start..start + len])
        }

        fn text_str(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.plain_str()?).ok()
        }

        /// Skips a string that may hold escapes (the `text` preview), checking
        /// that the escapes are valid JSON.
        fn skip_str(&mut self) -> Option<()> {
            self.lit(b"\"")?;
            loop {
                let rel = memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
                if self.b[self.i..self.i + rel].iter().any(|&c| c < 0x20) {
                    return None;
                }
                self.i += rel;
                if self.b[self.i] == b'"' {
                    self.i += 1;
                    return Some(());
                }
                match *self.b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = self.b.get(self.i + 2..self.i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                }
            }
        }
    }

    pub(super) fn cached_time(t: &str, last: &mut Option<([u8; 19], u64)>) -> Option<u64> {
        let b = t.as_bytes();
        // Only the `.fraction` + `Z` form: the seconds part must end where the
        // fraction starts for the cached value to apply.
        if b.len() == 30
            && b[19] == b'.'
            && b[29] == b'Z'
            && let Some((prefix, secs)) = last
            && b[..19] == prefix[..]
        {
            let frac = &b[20..29];
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let nanos = frac.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
            return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        }
        let ns = parse_rfc3339(t)?;
        if b.len() >= 19 {
            let mut prefix = [0u8; 19];
            prefix.copy_from_slice(&b[..19]);
            *last = Some((prefix, ns / 1_000_000_000));
        }
        Some(ns)
    }

    pub(super) fn raw_event(line: &[u8], seq: u64, interner: &mut Interner) -> Option<SourceItem> {
        let mut c = Cur { b: line, i: 0 };
        c.lit(b"{\"ts_ns\":")?;
        let ts_ns = c.uint()?;
        c.lit(b",\"time\":")?;
        let time_ns = cached_time(c.text_str()?, &mut interner.last_second)?;
        c.lit(b",\"pid\":")?;
        let pid = u32::try_from(c.uint()?).ok()?;
        c.lit(b",\"tid\":")?;
        let tid = u32::try_from(c.uint()?).ok()?;
        c.lit(b",\"comm\":")?;
        let comm = c.text_str()?;
        c.lit(b",\"peer_pid\":")?;
        let peer_pid = u32::try_from(c.uint()?).ok()?;
        let peer_comm = match c.lit(b",\"peer_comm\":") {
            Some(()) => c.text_str()?,
            None => "",
        };
        c.lit(b",\"path\":")?;
        let path = c.text_str()?;
        c.lit(b",\"sock\":")?;
        let sock = SockKind::parse(c.text_str()?)?;
        c.lit(b",\"dir\":")?;
        let dir = Direction::parse(c.text_str()?)?;
        c.lit(b",\"conn\":")?;
        let conn = c.uint()?;
        // Captures written before the field existed lack it.
        let socket = match c.lit(b",\"socket\":") {
            Some(()) => c.uint()?,
            None => 0,
        };
        let opt_uint = |c: &mut Cur<'_>, key: &[u8]| -> Option<Option<u64>> {
            match c.lit(key) {
                Some(()) => Some(Some(c.uint()?)),
                None => Some(None),
            }
        };
        let peer_socket = opt_uint(&mut c, b",\"peer_socket\":")?.unwrap_or(0);
        let role = match c.lit(b",\"role\":") {
            Some(()) => Role::parse(c.text_str()?)?,
            None => Role::Unknown,
        };
        let lane = u8::try_from(opt_uint(&mut c, b",\"lane\":")?.unwrap_or(0)).ok()?;
        let pos = opt_uint(&mut c, b",\"pos\":")?;
        let epoch = u32::try_from(opt_uint(&mut c, b",\"epoch\":")?.unwrap_or(0)).ok()?;
        let skip = opt_uint(&mut c, b",\"skip\":")?.unwrap_or(0);
        c.lit(b",\"len\":")?;
        let len = c.uint()?;
        c.lit(b",\"captured\":")?;
        let captured = c.uint()?;
        c.lit(b",\"truncated\":")?;
        let truncated = if c.lit(b"true").is_some() {
            true
        } else {
            c.lit(b"false")?;
            false
        };
        let via = match c.lit(b",\"via\":") {
            Some(()) => Some(Direction::parse(c.text_str()?)?),
            None => None,
        };
        let cgroup = opt_uint(&mut c, b",\"cgroup\":")?.unwrap_or(0);
        let node = match c.lit(b",\"node\":") {
            Some(()) => c.text_str()?,
            None => "",
        };
        c.lit(b",\"decoder\":\"raw\",\"data_b64\":")?;
        let b64 = c.b64_str()?;
        if c.lit(b",\"text\":").is_some() {
            c.skip_str()?;
        }
        c.lit(b"}")?;
        if c.i != line.len() {
            return None;
        }
        let data = B64.decode_to_vec(b64).ok()?;
        if data.len() as u64 != captured || len < captured.checked_add(skip)? {
            return None;
        }
        let comm = Interner::get(&mut interner.last_comm, &mut interner.map, comm);
        let peer_comm = Interner::get(&mut interner.last_peer_comm, &mut interner.map, peer_comm);
        let path = Interner::get(&mut interner.last_path, &mut interner.map, path);
        let node = Interner::get(&mut interner.last_node, &mut interner.map, node);
        Some(SourceItem::Event(Arc::new(Event {
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
            pos,
            epoch,
            skip,
            len,
            data: data.into(),
            truncated,
            via,
            cgroup,
            // A line with a container goes through serde.
            container: None,
            node,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eight-byte fast path escapes exactly what a byte-by-byte loop
    /// does, wherever the special bytes fall, and the result is JSON that
    /// reads back as the string.
    #[test]
    fn json_str_matches_the_byte_by_byte_escape() {
        fn reference(s: &str) -> Vec<u8> {
            let mut out = vec![b'"'];
            for &b in s.as_bytes() {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                    _ => out.push(b),
                }
            }
            out.push(b'"');
            out
        }
        let special = [
            '"', '\\', '\n', '\t', '\0', '\x1f', '\x7f', ' ', '~', 'é', '\u{202e}', 'a',
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..200 {
                let s: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        special[(seed % special.len() as u64) as usize]
                    })
                    .collect();
                let mut out = Vec::new();
                json_str(&s, &mut out);
                assert_eq!(out, reference(&s), "{s:?}");
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, s);
            }
        }
        for v in [0, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            push_u64(v, &mut out);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    /// The fast path and serde must agree on every line the fast path accepts.
    #[test]
    fn fast_path_agrees_with_serde() {
        let mut lines = Vec::new();
        for (i, data) in [&b""[..], b"x", b"\x00\xff\"\\\n\t", &[0xe2, 0x82, 0xac][..]]
            .iter()
            .enumerate()
        {
            let mut e = (*event(data)).clone();
            e.truncated = i % 2 == 0;
            e.len = data.len() as u64 + i as u64;
            e.comm = if i == 3 {
                "caf\u{e9}".into()
            } else {
                "c".into()
            };
            e.path = "/run/p.sock".into();
            let mut out = Vec::new();
            encode(&Record::raw(Arc::new(e), "raw".into()), &mut out);
            out.pop();
            lines.push(out);
        }
        for line in &lines {
            let mut i = Interner::default();
            let fast = fast::raw_event(line, 3, &mut i).expect("fast path takes encoder output");
            let l: Line<'_> = serde_json::from_slice(line).unwrap();
            assert_eq!(l.decoder.as_deref(), Some("raw"));
            // Force the serde path by reordering the keys.
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let mut keys: Vec<_> = v.as_object().unwrap().iter().collect();
            keys.reverse();
            let reordered = serde_json::to_vec(
                &keys
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<serde_json::Map<_, _>>(),
            )
            .unwrap();
            assert!(fast::raw_event(&reordered, 3, &mut i).is_none());
            let slow = parse_line(&reordered, 3, &mut i).unwrap();
            assert_eq!(Parsed::Item(fast), slow);
        }
        // Near misses fall back rather than being misread.
        let good = String::from_utf8(lines[1].clone()).unwrap();
        for bad in [
            good.replace("\"captured\":1", "\"captured\":2"),
            good.replace("\"pid\":10", "\"pid\":010"),
            format!("{good} "),
            good.replace("}", ",\"x\":1}"),
        ] {
            assert!(
                fast::raw_event(bad.as_bytes(), 0, &mut Interner::default()).is_none(),
                "{bad}"
            );
        }
    }

    fn event(data: &[u8]) -> Arc<Event> {
        Arc::new(Event {
            seq: 7,
            ts_ns: 123_456_789,
            time_ns: 1_764_154_645_123_456_789,
            pid: 10,
            tid: 11,
            comm: "cur\"l".into(),
            peer_pid: 12,
            path: "@abs\\name".into(),
            sock: SockKind::Seqpacket,
            dir: Direction::Recv,
            conn: 99,
            socket: 98,
            len: data.len() as u64 + 5,
            data: data.to_vec().into(),
            truncated: true,
            ..Event::default()
        })
    }

    #[test]
    fn raw_round_trip_is_lossless() {
        let all: Vec<u8> = (0..=255u8).collect();
        let rec = Record::raw(event(&all), "raw".into());
        let mut out = Vec::new();
        encode(&rec, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["comm"], "cur\"l");
        assert_eq!(v["path"], "@abs\\name");
        assert_eq!(v["captured"], 256);
        assert_eq!(v["len"], 261);
        let mut interner = Interner::default();
        let Parsed::Item(SourceItem::Event(back)) = parse_line(&out, 7, &mut interner).unwrap()
        else {
            panic!("not an event")
        };
        assert_eq!(back, event(&all));
    }

    #[test]
    fn text_preview_escapes_like_the_original() {
        let rec = Record::raw(event(b"hi\n\x00\"\\"), "raw".into());
        let mut out = Vec::new();
        encode(&rec, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["text"], "hi\\n\\x00\"\\\\");
    }

    #[test]
    fn lost_round_trip() {
        let rec = Record::Lost(Lost {
            ts_ns: 5,
            time_ns: 1_000_000_000,
            count: 42,
        });
        let mut out = Vec::new();
        encode(&rec, &mut out);
        assert_eq!(
            out,
            b"{\"ts_ns\":5,\"time\":\"1970-01-01T00:00:01.000000000Z\",\"lost\":42}\n"
        );
        let back = parse_line(&out, 0, &mut Interner::default()).unwrap();
        assert_eq!(
            back,
            Parsed::Item(SourceItem::Lost(Lost {
                ts_ns: 5,
                time_ns: 1_000_000_000,
                count: 42
            }))
        );
    }

    #[test]
    fn cached_time_matches_full_parse() {
        let mut last = None;
        for t in [
            "2026-11-26T10:00:00.000000001Z",
            "2026-11-26T10:00:00.999999999Z",
            "2026-11-26T10:00:01.5Z",
            "2026-11-26T10:00:01.000000007Z",
            "2026-11-26T10:00:01Z",
            "2026-11-26T10:00:01.00000000xZ",
        ] {
            assert_eq!(fast::cached_time(t, &mut last), parse_rfc3339(t), "{t}");
        }
    }

    #[test]
    fn time_formats_and_parses() {
        for t in [
            0u64,
            951_782_400_000_000_001,
            1_764_154_645_999_999_999,
            4_102_444_800_000_000_000,
        ] {
            let mut out = Vec::new();
            rfc3339(t, &mut out);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(parse_rfc3339(&s), Some(t), "{s}");
        }
        let mut out = Vec::new();
        rfc3339(951_782_400_000_000_001, &mut out);
        assert_eq!(out, b"2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            parse_rfc3339("2026-11-26T10:57:25Z"),
            Some(1_795_690_645_000_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-26T10:57:25Z"), None);
        assert_eq!(
            parse_rfc3339("2999-01-01T00:00:00Z"),
            None,
            "past u64 nanoseconds"
        );
        assert_eq!(parse_rfc3339("2024-01-01T12x34y56Z"), None);
        assert_eq!(parse_rfc3339("2025-02-29T00:00:00Z"), None);
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert_eq!(parse_rfc3339("2024-02-31T00:00:00Z"), None);
    }

    #[test]
    fn fields_and_errors_encode() {
        let mut json = serde_json::Map::new();
        json.insert(
            "http2".into(),
            serde_json::json!({"type": "PING", "stream_id": 0}),
        );
        let rec = Record::fields(event(b""), "http2".into(), json, "PING".into());
        let mut out = Vec::new();
        encode(&rec, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["http2"]["type"], "PING");
        assert_eq!(
            parse_line(&out, 0, &mut Interner::default()).unwrap(),
            Parsed::Skip
        );

        let rec = Record::error(
            event(b""),
            "http2".into(),
            Some("FRAME_SIZE_ERROR".into()),
            "too big",
        );
        out.clear();
        encode(&rec, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], "FRAME_SIZE_ERROR");
        assert_eq!(v["error"]["message"], "too big");
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        let mut i = Interner::default();
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"decoder\":\"raw\"}",
            b"{\"decoder\":\"raw\",\"data_b64\":\"!!\"}",
            b"{\"decoder\":\"raw\",\"data_b64\":\"\",\"dir\":\"up\"}",
            b"{}",
            b"{\"time\":\"yesterday\",\"lost\":1}",
        ] {
            assert!(
                parse_line(bad, 0, &mut i).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
