//! What a decoder produces and sinks write.

use std::sync::Arc;

use crate::event::{Event, Lost};

/// One output record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Something a decoder made of (part of) an event.
    Decoded(Decoded),
    /// A gap in the input: the kernel or a source could not hand over `count` events.
    Lost(Lost),
}

/// A decoder's output, tied to the event that completed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The event whose bytes completed this record. Its metadata becomes the common
    /// NDJSON fields (`ts_ns`, `pid`, `path`, ...).
    pub event: Arc<Event>,
    /// The decoder's name, the NDJSON `decoder` field.
    pub decoder: Arc<str>,
    pub body: Body,
}

/// The decoder-specific part of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The event's own bytes: NDJSON `data_b64` (lossless) and `text` (escaped
    /// preview). This is also the capture format that the `file` source replays.
    Raw,
    /// Decoder-specific fields. Every key of `json` becomes a top-level NDJSON field
    /// (by convention one object named after the decoder, e.g. `http2`); `text` is
    /// the human-readable rendering for the pretty format and may hold several lines.
    Fields {
        json: serde_json::Map<String, serde_json::Value>,
        text: String,
    },
    /// Decoder-specific fields as a typed value that writes itself: what the
    /// built-in decoders use, so that a record costs one allocation and its JSON
    /// and text are made only by the sinks that write them.
    Typed(Arc<dyn Fields>),
    /// Input the decoder could not make sense of. `code` names the protocol's error
    /// (e.g. `FRAME_SIZE_ERROR`) where there is one. NDJSON: `error: {code, message}`.
    Error {
        code: Option<String>,
        message: String,
    },
    /// One request paired with its response (or with why none came). NDJSON:
    /// an `exchange` object.
    Exchange(Box<Exchange>),
}

/// A record's own fields, kept typed until a sink writes them.
pub trait Fields: Send + Sync + std::fmt::Debug {
    /// Appends the record's top-level NDJSON fields, each as `,"key":value`
    /// (by convention one object named after the decoder, e.g. `,"http2":{...}`).
    fn write_json(&self, out: &mut Vec<u8>);

    /// Appends the human rendering for pretty output: one or more lines
    /// separated by `\n`, without a final newline. `verbosity` is 0 (default),
    /// 1 (`-v`) or 2 (`-vv`): e.g. bodies only at 2.
    fn write_text(&self, verbosity: u8, out: &mut String);

    /// The least verbosity at which pretty output shows this record at all: 0
    /// always, 1 with `-v` (frames that an exchange record already sums up), 2
    /// with `-vv`.
    fn verbosity(&self) -> u8 {
        0
    }
}

impl PartialEq for dyn Fields {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.write_json(&mut a);
        other.write_json(&mut b);
        a == b
    }
}

/// One request and its response, as a request/response decoder pairs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exchange {
    /// `http1`, `http2`, `grpc`, or a plugin's protocol name.
    pub protocol: Arc<str>,
    /// Shared strings: a decoder hands on what it already holds (an HPACK
    /// table entry, an interned method) without copying it per exchange.
    pub method: Option<Arc<str>>,
    /// The request target; for gRPC `/service/method`.
    pub path: Option<Arc<str>>,
    pub authority: Option<Arc<str>>,
    /// HTTP status (or the protocol's own status code).
    pub status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    /// Bytes of the request and of the response, headers and bodies.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Kernel time (CLOCK_MONOTONIC) of the request's first byte.
    pub started_ns: u64,
    /// Wall-clock time of the request's first byte, nanoseconds since the epoch.
    pub started_time_ns: u64,
    /// From the request's first byte to the response's last one; `None` when
    /// no response came.
    pub latency_ns: Option<u64>,
    /// Why the exchange did not complete normally (`no response`, a stream
    /// reset, ...).
    pub error: Option<String>,
    pub client: Endpoint,
    pub server: Endpoint,
}

/// One end of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub pid: u32,
    pub comm: Arc<str>,
}

impl Endpoint {
    /// Takes the comm `seen` names when both are the same process and this
    /// end has none: a request that came from the server's receive before
    /// the client's own send was seen knows the client's pid alone, and a
    /// later event (the response, which names its receiver) tells its comm.
    pub fn fill_comm(&mut self, seen: &Endpoint) {
        if self.comm.is_empty() && self.pid == seen.pid && !seen.comm.is_empty() {
            self.comm = Arc::clone(&seen.comm);
        }
    }
}

/// What kind of record a sink is given, for sinks that keep only some kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// An event's own bytes (`raw`).
    Event,
    /// A decoded protocol unit: a frame, a message, a header block.
    Frame,
    Exchange,
    Error,
    Lost,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Event,
        RecordKind::Frame,
        RecordKind::Exchange,
        RecordKind::Error,
        RecordKind::Lost,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event => "event",
            RecordKind::Frame => "frame",
            RecordKind::Exchange => "exchange",
            RecordKind::Error => "error",
            RecordKind::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Record {
    /// A raw record of an event, as the `raw` decoder makes it.
    pub fn raw(event: Arc<Event>, decoder: Arc<str>) -> Self {
        Record::Decoded(Decoded {
            event,
            decoder,
            body: Body::Raw,
        })
    }

    pub fn error(
        event: Arc<Event>,
        decoder: Arc<str>,
        code: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Record::Decoded(Decoded {
            event,
            decoder,
            body: Body::Error {
                code,
                message: message.into(),
            },
        })
    }

    pub fn fields(
        event: Arc<Event>,
        decoder: Arc<str>,
        json: serde_json::Map<String, serde_json::Value>,
        text: String,
    ) -> Self {
        Record::Decoded(Decoded {
            event,
            decoder,
            body: Body::Fields { json, text },
        })
    }

    pub fn typed(event: Arc<Event>, decoder: Arc<str>, fields: Arc<dyn Fields>) -> Self {
        Record::Decoded(Decoded {
            event,
            decoder,
            body: Body::Typed(fields),
        })
    }

    pub fn exchange(event: Arc<Event>, decoder: Arc<str>, exchange: Exchange) -> Self {
        Record::Decoded(Decoded {
            event,
            decoder,
            body: Body::Exchange(Box::new(exchange)),
        })
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Lost(_) => RecordKind::Lost,
            Record::Decoded(d) => match d.body {
                Body::Raw => RecordKind::Event,
                Body::Fields { .. } | Body::Typed(_) => RecordKind::Frame,
                Body::Error { .. } => RecordKind::Error,
                Body::Exchange(_) => RecordKind::Exchange,
            },
        }
    }

    /// True for error records (used by the exit summary).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Record::Decoded(Decoded {
                body: Body::Error { .. },
                ..
            })
        )
    }
}

impl Body {
    /// The decoder-specific fields as a JSON object, whatever form they are kept
    /// in (`None` for raw, error and exchange bodies): for tests and for code
    /// that inspects records rather than writing them.
    pub fn json(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match self {
            Body::Fields { json, .. } => Some(json.clone()),
            Body::Typed(f) => {
                let mut buf = b"{\"_\":0".to_vec();
                f.write_json(&mut buf);
                buf.push(b'}');
                let mut map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&buf).ok()?;
                map.remove("_");
                Some(map)
            }
            _ => None,
        }
    }

    /// The pretty rendering of decoder-specific fields at `verbosity`.
    pub fn text(&self, verbosity: u8) -> Option<String> {
        match self {
            Body::Fields { text, .. } => Some(text.clone()),
            Body::Typed(f) => {
                let mut s = String::new();
                f.write_text(verbosity, &mut s);
                Some(s)
            }
            _ => None,
        }
    }
}
