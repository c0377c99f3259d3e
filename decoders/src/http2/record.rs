//! Frame records as typed values: what a frame said, kept as it was decoded
//! (payloads as slices of the event, header lists packed in one allocation),
//! written as NDJSON or text only by the sinks that ask.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::Fields;
use spf_pipeline::ndjson::{b64_into, json_str, push_u64};

use super::frame::{self, Priority};
use super::grpc::{self, Message};
use super::hpack::Packed;
use super::protobuf;

/// One frame (or the connection preface).
#[derive(Debug)]
pub(crate) struct FrameRecord {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub length: u32,
    pub body: Body,
}

#[derive(Debug)]
pub(crate) enum Body {
    Preface,
    Data {
        pad: Option<u8>,
        data: Bytes,
        /// Whether NDJSON carries the payload (`data = "b64"`).
        b64: bool,
        grpc: Option<GrpcData>,
    },
    /// HEADERS or PUSH_PROMISE.
    Headers {
        pad: Option<u8>,
        priority: Option<Priority>,
        promised: Option<u32>,
        /// `None` when the block could not be shown (an error record says why).
        headers: Option<Packed>,
        /// Why the block is not shown, for the text rendering.
        note: Option<&'static str>,
        grpc: Option<GrpcHead>,
        /// A dynamic table size update above what SETTINGS announced.
        unannounced: Option<u64>,
    },
    Priority(Priority),
    RstStream(u32),
    Settings(Vec<(u16, u32)>),
    Ping([u8; 8]),
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Bytes,
    },
    WindowUpdate(u32),
    Continuation,
    Unknown,
}

/// The `grpc` object of a DATA record.
#[derive(Debug)]
pub(crate) struct GrpcData {
    pub method: Option<Arc<str>>,
    pub inferred: bool,
    pub messages: Messages,
    /// Bytes held of a message not yet complete, and its full size once known.
    pub partial: Option<(usize, Option<usize>)>,
    pub proto: protobuf::Limits,
}

/// The `grpc` object of a HEADERS record.
#[derive(Debug)]
pub(crate) struct GrpcHead {
    pub method: Option<Arc<str>>,
    pub status: Option<u32>,
    pub message: Option<Box<str>>,
}

/// A gRPC message with what [`protobuf::check`] said of it.
#[derive(Debug)]
pub(crate) struct Shown {
    pub msg: Message,
    pub view: protobuf::Check,
}

/// The messages a DATA frame completed: nearly always none or one, so one
/// needs no allocation of its own.
#[derive(Debug, Default)]
pub(crate) enum Messages {
    #[default]
    None,
    One(Shown),
    Many(Vec<Shown>),
}

impl Messages {
    pub(crate) fn push(&mut self, s: Shown) {
        *self = match std::mem::take(self) {
            Messages::None => Messages::One(s),
            Messages::One(a) => Messages::Many(vec![a, s]),
            Messages::Many(mut v) => {
                v.push(s);
                Messages::Many(v)
            }
        }
    }

    pub(crate) fn as_slice(&self) -> &[Shown] {
        match self {
            Messages::None => &[],
            Messages::One(s) => std::slice::from_ref(s),
            Messages::Many(v) => v,
        }
    }
}

/// Bytes shown in the text rendering of a DATA frame.
const PREVIEW: usize = 96;

pub(crate) fn kind_name(kind: u8) -> &'static str {
    frame::type_name(kind).unwrap_or("UNKNOWN")
}

impl Fields for FrameRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"http2\":{\"type\":");
        if let Body::Preface = self.body {
            out.extend_from_slice(b"\"PREFACE\",\"length\":");
            push_u64(frame::PREFACE.len() as u64, out);
            out.push(b'}');
            return;
        }
        out.push(b'"');
        out.extend_from_slice(kind_name(self.kind).as_bytes());
        out.push(b'"');
        if frame::type_name(self.kind).is_none() {
            out.extend_from_slice(b",\"type_code\":");
            push_u64(self.kind.into(), out);
        }
        out.extend_from_slice(b",\"stream_id\":");
        push_u64(self.stream_id.into(), out);
        out.extend_from_slice(b",\"flags\":[");
        for (i, f) in frame::flag_iter(self.kind, self.flags).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match f {
                frame::Flag::Named(n) => {
                    out.push(b'"');
                    out.extend_from_slice(n.as_bytes());
                    out.push(b'"');
                }
                frame::Flag::Bit(b) => {
                    out.extend_from_slice(b"\"0x");
                    hex(&[b], out);
                    out.push(b'"');
                }
            }
        }
        out.extend_from_slice(b"],\"length\":");
        push_u64(self.length.into(), out);
        match &self.body {
            Body::Preface => {}
            Body::Data {
                pad,
                data,
                b64,
                grpc,
            } => {
                pad_json(*pad, out);
                if *b64 {
                    out.extend_from_slice(b",\"data_b64\":\"");
                    b64_into(data, out);
                    out.push(b'"');
                }
                if let Some(g) = grpc {
                    grpc_data_json(g, out);
                }
            }
            Body::Headers {
                pad,
                priority,
                promised,
                headers,
                note: _,
                grpc,
                unannounced,
            } => {
                pad_json(*pad, out);
                if let Some(p) = priority {
                    priority_json(p, out);
                }
                if let Some(p) = promised {
                    out.extend_from_slice(b",\"promised_stream_id\":");
                    push_u64((*p).into(), out);
                }
                if let Some(h) = headers {
                    out.extend_from_slice(b",\"headers\":[");
                    for (i, f) in h.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.push(b'[');
                        lossy_json(f.name, out);
                        out.push(b',');
                        lossy_json(f.value, out);
                        out.push(b']');
                    }
                    out.push(b']');
                }
                if let Some(n) = unannounced {
                    out.extend_from_slice(b",\"table_size_update_unannounced\":");
                    push_u64(*n, out);
                }
                if let Some(g) = grpc {
                    out.extend_from_slice(b",\"grpc\":{");
                    let mut sep = Sep::default();
                    if let Some(m) = &g.method {
                        sep.key(b"method", out);
                        json_str(m, out);
                    }
                    if let Some(s) = g.status {
                        sep.key(b"status", out);
                        push_u64(s.into(), out);
                        if let Some(n) = grpc::status_name(s) {
                            sep.key(b"status_name", out);
                            json_str(n, out);
                        }
                    }
                    if let Some(m) = &g.message {
                        sep.key(b"message", out);
                        json_str(m, out);
                    }
                    out.push(b'}');
                }
            }
            Body::Priority(p) => priority_json(p, out),
            Body::RstStream(code) => {
                out.extend_from_slice(b",\"error_code\":");
                json_str(&frame::error_name(*code), out);
            }
            Body::Settings(params) => {
                out.extend_from_slice(b",\"settings\":[");
                for (i, (id, v)) in params.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    json_str(&frame::setting_name(*id), out);
                    out.push(b',');
                    push_u64((*v).into(), out);
                    out.push(b']');
                }
                out.push(b']');
            }
            Body::Ping(data) => {
                out.extend_from_slice(b",\"opaque_data\":\"");
                hex(data, out);
                out.push(b'"');
            }
            Body::GoAway {
                last_stream,
                code,
                debug,
            } => {
                out.extend_from_slice(b",\"last_stream_id\":");
                push_u64((*last_stream).into(), out);
                out.extend_from_slice(b",\"error_code\":");
                json_str(&frame::error_name(*code), out);
                out.extend_from_slice(b",\"debug_data\":");
                lossy_json(debug, out);
            }
            Body::WindowUpdate(n) => {
                out.extend_from_slice(b",\"window_size_increment\":");
                push_u64((*n).into(), out);
            }
            Body::Continuation | Body::Unknown => {}
        }
        out.push(b'}');
    }

    fn write_text(&self, verbosity: u8, text: &mut String) {
        if let Body::Preface = self.body {
            text.push_str("connection preface PRI * HTTP/2.0");
            return;
        }
        let _ = write!(
            text,
            "{} frame <length={}, flags=0x{:02x}, stream_id={}>",
            kind_name(self.kind),
            self.length,
            self.flags,
            self.stream_id
        );
        let flags = frame::flag_names(self.kind, self.flags);
        if !flags.is_empty() {
            text.push_str("\n  ; ");
            for (i, f) in flags.iter().enumerate() {
                if i > 0 {
                    text.push_str(" | ");
                }
                text.push_str(f);
            }
        }
        match &self.body {
            Body::Preface | Body::Continuation | Body::Unknown => {}
            Body::Data {
                pad, data, grpc, ..
            } => {
                pad_text(*pad, text);
                match grpc {
                    Some(g) => {
                        for s in g.messages.as_slice() {
                            let _ = write!(
                                text,
                                "\n  gRPC message <length={}, compressed={}>",
                                s.msg.data.len(),
                                s.msg.compressed
                            );
                            if verbosity < 2 || s.msg.data.is_empty() {
                                continue;
                            }
                            if !s.msg.compressed
                                && s.view == protobuf::Check::Message
                                && let Some(fields) = protobuf::parse(&s.msg.data, &g.proto)
                            {
                                text.push('\n');
                                protobuf::to_text(&fields, 4, text);
                                if text.ends_with('\n') {
                                    text.pop();
                                }
                            } else {
                                // Compressed, or not protobuf: its bytes as sent.
                                text.push_str("\n    | ");
                                preview(&s.msg.data, text);
                            }
                        }
                        if let Some((have, _)) = g.partial {
                            let _ = write!(text, "\n  (partial gRPC message: {have} bytes so far)");
                        }
                    }
                    None if verbosity >= 2 && !data.is_empty() => {
                        text.push_str("\n  | ");
                        preview(data, text);
                    }
                    None => {}
                }
            }
            Body::Headers {
                pad,
                priority,
                promised,
                headers,
                note,
                grpc,
                unannounced,
            } => {
                pad_text(*pad, text);
                if let Some(p) = priority {
                    priority_text(p, text);
                }
                if let Some(p) = promised {
                    let _ = write!(text, "\n  (promised_stream_id={p})");
                }
                if let Some(n) = unannounced {
                    let _ = write!(
                        text,
                        "\n  (dynamic table size update to {n}, above what SETTINGS announced)"
                    );
                }
                if let Some(n) = note {
                    let _ = write!(text, "\n  (header block not decoded: {n})");
                }
                if let Some(h) = headers {
                    for f in h.iter() {
                        text.push_str("\n  ");
                        lossy_text(f.name, text);
                        text.push_str(": ");
                        lossy_text(f.value, text);
                    }
                }
                if let Some(g) = grpc {
                    if let Some(s) = g.status {
                        let _ = write!(
                            text,
                            "\n  ; gRPC status {s} {}",
                            grpc::status_name(s).unwrap_or("(unknown code)")
                        );
                    }
                    if let Some(m) = &g.message {
                        let _ = write!(text, ": {m}");
                    }
                }
            }
            Body::Priority(p) => priority_text(p, text),
            Body::RstStream(code) => {
                let _ = write!(
                    text,
                    "\n  (error_code={}(0x{code:02x}))",
                    frame::known_error(*code).unwrap_or("UNKNOWN_ERROR")
                );
            }
            Body::Settings(params) => {
                let _ = write!(text, "\n  (niv={})", params.len());
                for (id, v) in params {
                    let name = frame::known_setting(*id).unwrap_or("UNKNOWN_SETTING");
                    let _ = write!(text, "\n  [{name}(0x{id:02x}):{v}]");
                }
            }
            Body::Ping(data) => {
                text.push_str("\n  (opaque_data=");
                for b in data {
                    let _ = write!(text, "{b:02x}");
                }
                text.push(')');
            }
            Body::GoAway {
                last_stream,
                code,
                debug,
            } => {
                let _ = write!(
                    text,
                    "\n  (last_stream_id={last_stream}, error_code={}(0x{code:02x}), opaque_data(0)=[",
                    frame::known_error(*code).unwrap_or("UNKNOWN_ERROR")
                );
                lossy_text(debug, text);
                text.push_str("])");
            }
            Body::WindowUpdate(n) => {
                let _ = write!(text, "\n  (window_size_increment={n})");
            }
        }
    }

    /// Frames are the detail under the exchanges: shown from `-v` on, DATA
    /// payloads and message bodies from `-vv`.
    fn verbosity(&self) -> u8 {
        1
    }
}

/// Writes `,"key":` with the comma only after the first key of an object.
#[derive(Default)]
struct Sep(bool);

impl Sep {
    fn key(&mut self, key: &[u8], out: &mut Vec<u8>) {
        if self.0 {
            out.push(b',');
        }
        self.0 = true;
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
    }
}

fn grpc_data_json(g: &GrpcData, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"grpc\":{");
    let mut sep = Sep::default();
    if let Some(m) = &g.method {
        sep.key(b"method", out);
        json_str(m, out);
    }
    if g.inferred {
        sep.key(b"inferred", out);
        out.extend_from_slice(b"true");
    }
    sep.key(b"messages", out);
    out.push(b'[');
    for (i, s) in g.messages.as_slice().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"compressed\":");
        out.extend_from_slice(if s.msg.compressed { b"true" } else { b"false" });
        out.extend_from_slice(b",\"length\":");
        push_u64(s.msg.data.len() as u64, out);
        out.extend_from_slice(b",\"data_b64\":\"");
        b64_into(&s.msg.data, out);
        out.push(b'"');
        if !s.msg.compressed
            && s.view == protobuf::Check::Message
            && let Some(fields) = protobuf::parse(&s.msg.data, &g.proto)
        {
            out.extend_from_slice(b",\"protobuf\":");
            protobuf::write_json(&fields, out);
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some((have, need)) = g.partial {
        sep.key(b"partial", out);
        out.extend_from_slice(b"{\"have\":");
        push_u64(have as u64, out);
        if let Some(n) = need {
            out.extend_from_slice(b",\"need\":");
            push_u64(n as u64, out);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

fn pad_json(pad: Option<u8>, out: &mut Vec<u8>) {
    if let Some(p) = pad {
        out.extend_from_slice(b",\"pad_length\":");
        push_u64(p.into(), out);
    }
}

fn pad_text(pad: Option<u8>, text: &mut String) {
    if let Some(p) = pad {
        let _ = write!(text, "\n  (padlen={p})");
    }
}

fn priority_json(p: &Priority, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"priority\":{\"exclusive\":");
    out.extend_from_slice(if p.exclusive { b"true" } else { b"false" });
    out.extend_from_slice(b",\"depends_on\":");
    push_u64(p.depends_on.into(), out);
    out.extend_from_slice(b",\"weight\":");
    push_u64(p.weight.into(), out);
    out.push(b'}');
}

fn priority_text(p: &Priority, text: &mut String) {
    let _ = write!(
        text,
        "\n  (dep_stream_id={}, weight={}, exclusive={})",
        p.depends_on, p.weight, p.exclusive as u8
    );
}

fn hex(data: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in data {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Bytes as a JSON string: UTF-8 as is, other bytes as `\xNN` text.
fn lossy_json(b: &[u8], out: &mut Vec<u8>) {
    // Header names and values are nearly always printable ASCII with nothing
    // to escape: checked without branching per byte, then copied at once.
    let plain = !b.iter().fold(false, |bad, &c| {
        bad | !(0x20..0x7f).contains(&c) | (c == b'"') | (c == b'\\')
    });
    if plain {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    match std::str::from_utf8(b) {
        Ok(s) => json_str(s, out),
        Err(_) => {
            let mut s = String::with_capacity(b.len() + 8);
            lossy_text(b, &mut s);
            json_str(&s, out);
        }
    }
}

/// Bytes as text: UTF-8 as is, other bytes as `\xNN`.
pub(crate) fn lossy_text(b: &[u8], out: &mut String) {
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for &x in chunk.invalid() {
            let _ = write!(out, "\\x{x:02x}");
        }
    }
}

/// Bytes as an owned string, as [`lossy_text`] writes them.
pub(crate) fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::with_capacity(b.len() + 8);
            lossy_text(b, &mut s);
            s
        }
    }
}

/// The start of a payload as one line: printable ASCII as is, the rest escaped.
fn preview(data: &[u8], out: &mut String) {
    let mut esc = Vec::with_capacity(PREVIEW * 2);
    spf_pipeline::escape::escape_bytes(&data[..data.len().min(PREVIEW)], false, &mut esc);
    // escape_bytes writes ASCII only.
    out.push_str(std::str::from_utf8(&esc).unwrap_or_default());
    if data.len() > PREVIEW {
        out.push('\u{2026}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hpack::HeaderList;

    fn json(r: &FrameRecord) -> serde_json::Value {
        let mut v = b"{\"_\":0".to_vec();
        r.write_json(&mut v);
        v.push(b'}');
        serde_json::from_slice(&v).unwrap()
    }

    #[test]
    fn json_is_valid_and_shaped_as_documented() {
        let mut l = HeaderList::new();
        l.push(b":path", b"/a\"b", false, false);
        l.push(b"x-bin", b"\xff\x00", false, false);
        let r = FrameRecord {
            kind: frame::HEADERS,
            flags: frame::END_HEADERS | frame::PADDED,
            stream_id: 3,
            length: 40,
            body: Body::Headers {
                pad: Some(2),
                priority: None,
                promised: None,
                headers: Some(l.pack()),
                note: None,
                grpc: Some(GrpcHead {
                    method: Some(Arc::from("/a\"b")),
                    status: Some(14),
                    message: Some("down".into()),
                }),
                unannounced: Some(65536),
            },
        };
        let v = json(&r);
        assert_eq!(
            v["http2"],
            serde_json::json!({"type": "HEADERS", "stream_id": 3, "flags": ["END_HEADERS", "PADDED"],
                "length": 40, "pad_length": 2, "headers": [[":path", "/a\"b"], ["x-bin", "\\xff\u{0}"]],
                "table_size_update_unannounced": 65536,
                "grpc": {"method": "/a\"b", "status": 14, "status_name": "UNAVAILABLE", "message": "down"}})
        );
        let mut t = String::new();
        r.write_text(1, &mut t);
        assert!(t.contains("\n  x-bin: \\xff\u{0}"), "{t}");
        assert!(t.ends_with("; gRPC status 14 UNAVAILABLE: down"), "{t}");
        let p = FrameRecord {
            kind: 0,
            flags: 0,
            stream_id: 0,
            length: 24,
            body: Body::Preface,
        };
        assert_eq!(
            json(&p)["http2"],
            serde_json::json!({"type": "PREFACE", "length": 24})
        );
    }

    #[test]
    fn data_previews_and_bodies_only_at_verbosity_two() {
        let r = FrameRecord {
            kind: frame::DATA,
            flags: 0,
            stream_id: 1,
            length: 5,
            body: Body::Data {
                pad: None,
                data: Bytes::from_static(b"hello"),
                b64: false,
                grpc: None,
            },
        };
        let (mut one, mut two) = (String::new(), String::new());
        r.write_text(1, &mut one);
        r.write_text(2, &mut two);
        assert!(!one.contains("hello"));
        assert!(two.ends_with("\n  | hello"), "{two}");
        assert!(json(&r)["http2"].get("data_b64").is_none());
        assert_eq!(r.verbosity(), 1);
    }

    #[test]
    fn unknown_settings_and_error_codes_name_their_number_once() {
        let text = |kind, body| {
            let mut t = String::new();
            FrameRecord {
                kind,
                flags: 0,
                stream_id: 0,
                length: 12,
                body,
            }
            .write_text(1, &mut t);
            t
        };
        let t = text(
            frame::SETTINGS,
            Body::Settings(vec![(0x3, 100), (0xfe03, 1)]),
        );
        assert!(
            t.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]"),
            "{t}"
        );
        assert!(t.contains("[UNKNOWN_SETTING(0xfe03):1]"), "{t}");
        let t = text(frame::RST_STREAM, Body::RstStream(0x99));
        assert!(t.contains("(error_code=UNKNOWN_ERROR(0x99))"), "{t}");
        let t = text(frame::RST_STREAM, Body::RstStream(0x8));
        assert!(t.contains("(error_code=CANCEL(0x08))"), "{t}");
    }

    #[test]
    fn grpc_messages_show_at_verbosity_two_whatever_they_hold() {
        let shown = |data: &'static [u8], compressed: bool| Shown {
            view: protobuf::check(data, &protobuf::Limits::default()),
            msg: Message {
                compressed,
                data: Bytes::from_static(data),
            },
        };
        let mut messages = Messages::default();
        // Protobuf (field 1, varint 150), JSON, and gzip's first bytes.
        messages.push(shown(b"\x08\x96\x01", false));
        messages.push(shown(b"{\"name\":\"x\"}", false));
        messages.push(shown(b"\x1f\x8b\x08\x00", true));
        let r = FrameRecord {
            kind: frame::DATA,
            flags: 0,
            stream_id: 1,
            length: 40,
            body: Body::Data {
                pad: None,
                data: Bytes::new(),
                b64: false,
                grpc: Some(GrpcData {
                    method: None,
                    inferred: false,
                    messages,
                    partial: None,
                    proto: protobuf::Limits::default(),
                }),
            },
        };
        let (mut one, mut two) = (String::new(), String::new());
        r.write_text(1, &mut one);
        r.write_text(2, &mut two);
        assert_eq!(one.matches("gRPC message <").count(), 3, "{one}");
        assert!(!one.contains('|') && !one.contains("150"), "{one}");
        assert!(two.contains("150"), "{two}");
        assert!(two.contains("\n    | {\"name\":\"x\"}"), "{two}");
        assert!(two.contains("\n    | \\x1f\\x8b\\x08\\x00"), "{two}");
    }
}
