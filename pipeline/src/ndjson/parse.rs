//! Reading a line back into the event it was written from (the `file`
//! source): serde for any valid JSON, and a fast path (fast.rs) for the exact
//! shape the encoder writes.

use serde::Deserialize;

use super::*;

mod fast;

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
    closed: Option<bool>,
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
    rpos: Option<u64>,
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
    if l.closed == Some(true) {
        let conn = l.conn.ok_or(ParseError::Field {
            field: "conn",
            why: "a connection's end names its connection".into(),
        })?;
        return Ok(Parsed::Item(SourceItem::Closed { conn, ts_ns }));
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
        rpos: l.rpos,
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
