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
    /// Input the decoder could not make sense of. `code` names the protocol's error
    /// (e.g. `FRAME_SIZE_ERROR`) where there is one. NDJSON: `error: {code, message}`.
    Error {
        code: Option<String>,
        message: String,
    },
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
