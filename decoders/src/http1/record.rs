//! The `http1` decoder's records: typed values that keep the captured bytes
//! (shared with the event, not copied) and write their own JSON and text.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use spf_pipeline::Fields;
use spf_pipeline::ndjson::{b64_into, escape_bytes, json_str, push_u64};

use super::body::Framing;
use super::parse::{self, Encoding, Kind, Start};

/// Body bytes shown as text in pretty output, per record.
pub const PREVIEW: usize = 4096;

fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn key(k: &str, out: &mut Vec<u8>) {
    out.push(b',');
    json_str(k, out);
    out.push(b':');
}

fn index_json(index: Option<u64>, out: &mut Vec<u8>) {
    if let Some(i) = index {
        out.extend_from_slice(b",\"index\":");
        push_u64(i, out);
    }
}

/// `"headers":[[name,value],...]` of the field lines of `h` from `from` on.
fn headers_json(h: &[u8], from: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in parse::field_lines(h, from).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json_str(&lossy(name), out);
        out.push(b',');
        json_str(&lossy(&value), out);
        out.push(b']');
    }
    out.push(b']');
}

fn headers_text(h: &[u8], from: usize, out: &mut String) {
    for (name, value) in parse::field_lines(h, from) {
        let _ = write!(out, "\n{}: {}", lossy(name), lossy(&value));
    }
}

/// A request or response head, or a trailer section.
#[derive(Debug)]
pub struct HeadRecord {
    pub kind: Kind,
    /// A trailer section rather than a head.
    pub trailers: bool,
    /// The request's number on its connection (0 first), shared by its
    /// response and both bodies; `None` for a response whose request was not
    /// seen.
    pub index: Option<u64>,
    /// The head as captured, its final empty line included.
    pub head: Bytes,
    pub framing: Framing,
    /// The Content-Length field's value, where there is one (also when the
    /// message has no body, as for a response to HEAD).
    pub content_length: Option<u64>,
}

impl Fields for HeadRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        let h = &self.head[..];
        out.extend_from_slice(b",\"http1\":{\"type\":\"");
        if self.trailers {
            out.extend_from_slice(b"trailers\",\"message\":\"");
            out.extend_from_slice(self.kind.as_str().as_bytes());
            out.push(b'"');
            index_json(self.index, out);
            headers_json(h, 0, out);
            out.push(b'}');
            return;
        }
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'"');
        index_json(self.index, out);
        match parse::start_line(parse::first_line(h), 0) {
            Ok(Start::Request {
                method,
                target,
                minor,
            }) => {
                key("method", out);
                json_str(&lossy(&h[method]), out);
                key("target", out);
                json_str(&lossy(&h[target]), out);
                out.extend_from_slice(b",\"version\":\"HTTP/1.");
                push_u64(minor.into(), out);
                out.push(b'"');
            }
            Ok(Start::Response {
                minor,
                status,
                reason,
            }) => {
                out.extend_from_slice(b",\"version\":\"HTTP/1.");
                push_u64(minor.into(), out);
                out.extend_from_slice(b"\",\"status\":");
                push_u64(status.into(), out);
                key("reason", out);
                json_str(&lossy(&h[reason]), out);
            }
            // Heads are validated before a record is made of them.
            Err(_) => {
                key("start_line", out);
                json_str(&lossy(parse::first_line(h)), out);
            }
        }
        headers_json(h, parse::first_line_end(h), out);
        out.extend_from_slice(b",\"length\":");
        push_u64(h.len() as u64, out);
        out.extend_from_slice(b",\"body\":\"");
        out.extend_from_slice(self.framing.as_str().as_bytes());
        out.push(b'"');
        if let Some(n) = self.content_length {
            out.extend_from_slice(b",\"content_length\":");
            push_u64(n, out);
        }
        out.push(b'}');
    }

    fn write_text(&self, verbosity: u8, out: &mut String) {
        let h = &self.head[..];
        if self.trailers {
            let _ = write!(out, "{} trailers", self.kind.as_str());
            headers_text(h, 0, out);
            return;
        }
        out.push_str(&lossy(parse::first_line(h)));
        if verbosity >= 1 {
            headers_text(h, parse::first_line_end(h), out);
        }
    }

    fn verbosity(&self) -> u8 {
        1
    }
}

/// One piece of a body: what one event held of it.
#[derive(Debug)]
pub struct BodyRecord {
    pub kind: Kind,
    pub index: Option<u64>,
    /// Where this piece begins in the body (chunk framing not counted).
    pub offset: u64,
    /// The piece; empty when data is not shown (`data = "none"`).
    pub data: Bytes,
    pub length: u64,
    /// Whether `data` is shown in NDJSON.
    pub show_data: bool,
    /// The chunk's extensions (`;name=value`), for the first piece of a chunk.
    pub ext: Option<Bytes>,
    /// Content-Type says text: pretty output shows it as such.
    pub textual: bool,
    /// The piece decompressed, when Content-Encoding is gzip or deflate.
    pub decoded: Option<(Encoding, Vec<u8>)>,
}

impl Fields for BodyRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"http1\":{\"type\":\"body\",\"message\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'"');
        index_json(self.index, out);
        out.extend_from_slice(b",\"offset\":");
        push_u64(self.offset, out);
        out.extend_from_slice(b",\"length\":");
        push_u64(self.length, out);
        if let Some(e) = &self.ext {
            key("chunk_ext", out);
            json_str(&lossy(e), out);
        }
        if self.show_data {
            out.extend_from_slice(b",\"data_b64\":\"");
            b64_into(&self.data, out);
            out.push(b'"');
        }
        if let Some((enc, d)) = &self.decoded {
            out.extend_from_slice(b",\"content_encoding\":\"");
            out.extend_from_slice(enc.as_str().as_bytes());
            out.extend_from_slice(b"\",\"decoded_b64\":\"");
            b64_into(d, out);
            out.push(b'"');
        }
        out.push(b'}');
    }

    fn write_text(&self, verbosity: u8, out: &mut String) {
        let _ = write!(out, "{} body: {} bytes", self.kind.as_str(), self.length);
        if self.offset > 0 {
            let _ = write!(out, " at offset {}", self.offset);
        }
        if let Some(e) = &self.ext {
            let _ = write!(out, " (chunk extensions {})", lossy(e));
        }
        let shown: &[u8] = match &self.decoded {
            Some((enc, d)) => {
                let _ = write!(out, ", {} bytes after {}", d.len(), enc.as_str());
                d
            }
            None => &self.data,
        };
        if verbosity < 2 || shown.is_empty() {
            return;
        }
        let cut = &shown[..shown.len().min(PREVIEW)];
        if self.textual {
            for line in lossy(cut).split('\n') {
                let _ = write!(out, "\n| {}", line.strip_suffix('\r').unwrap_or(line));
            }
        } else {
            let mut esc = Vec::with_capacity(cut.len() + 16);
            escape_bytes(&cut[..cut.len().min(256)], false, &mut esc);
            let _ = write!(out, "\n| {}", lossy(&esc));
            if cut.len() > 256 {
                out.push('…');
            }
            return;
        }
        if shown.len() > PREVIEW {
            let _ = write!(out, "\n| … {} more bytes", shown.len() - PREVIEW);
        }
    }

    fn verbosity(&self) -> u8 {
        2
    }
}

/// What happened to a connection's bytes besides messages.
#[derive(Debug)]
pub enum Note {
    /// The connection switched protocols after a 101 (or CONNECT, or a
    /// hijack): from here on its bytes are decoded as `to`.
    Switched { protocol: String, to: &'static str },
    /// Bytes that held no message start were passed over.
    Skipped {
        kind: Option<Kind>,
        bytes: u64,
        reason: &'static str,
    },
}

impl Fields for Note {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Note::Switched { protocol, to } => {
                out.extend_from_slice(b",\"http1\":{\"type\":\"switch\",\"protocol\":");
                json_str(protocol, out);
                out.extend_from_slice(b",\"decoded_as\":\"");
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(b"\"}");
            }
            Note::Skipped {
                kind,
                bytes,
                reason,
            } => {
                out.extend_from_slice(b",\"http1\":{\"type\":\"skipped\"");
                if let Some(k) = kind {
                    out.extend_from_slice(b",\"message\":\"");
                    out.extend_from_slice(k.as_str().as_bytes());
                    out.push(b'"');
                }
                out.extend_from_slice(b",\"length\":");
                push_u64(*bytes, out);
                key("reason", out);
                json_str(reason, out);
                out.push(b'}');
            }
        }
    }

    fn write_text(&self, _verbosity: u8, out: &mut String) {
        match self {
            Note::Switched { protocol, to } => {
                let _ = write!(
                    out,
                    "protocol switched to {protocol}: the rest of this connection is decoded as {to}"
                );
            }
            Note::Skipped { bytes, reason, .. } => {
                let _ = write!(out, "{bytes} bytes skipped ({reason})");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(f: &dyn Fields) -> serde_json::Value {
        let mut buf = b"{\"_\":0".to_vec();
        f.write_json(&mut buf);
        buf.push(b'}');
        serde_json::from_slice(&buf)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buf)))
    }

    #[test]
    fn head_json_and_text() {
        let r = HeadRecord {
            kind: Kind::Request,
            trailers: false,
            index: Some(2),
            head: Bytes::from_static(b"POST /a?b=\"c\" HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\r\n\r\n"),
            framing: Framing::Length(5),
            content_length: Some(5),
        };
        let v = json(&r);
        assert_eq!(
            v["http1"],
            serde_json::json!({"type": "request", "index": 2, "method": "POST", "target": "/a?b=\"c\"",
                "version": "HTTP/1.1", "headers": [["Host", "x"], ["X-Bin", "\u{fffd}"]],
                "length": 45, "body": "length", "content_length": 5})
        );
        let mut t = String::new();
        r.write_text(0, &mut t);
        assert_eq!(t, "POST /a?b=\"c\" HTTP/1.1");
        t.clear();
        r.write_text(1, &mut t);
        assert_eq!(t, "POST /a?b=\"c\" HTTP/1.1\nHost: x\nX-Bin: \u{fffd}");
        let r = HeadRecord {
            kind: Kind::Response,
            trailers: false,
            index: None,
            head: Bytes::from_static(b"HTTP/1.0 404 Not Found\r\n\r\n"),
            framing: Framing::UntilClose,
            content_length: None,
        };
        assert_eq!(
            json(&r)["http1"],
            serde_json::json!({"type": "response", "version": "HTTP/1.0", "status": 404,
                "reason": "Not Found", "headers": [], "length": 26, "body": "until-close"})
        );
        let r = HeadRecord {
            kind: Kind::Response,
            trailers: true,
            index: Some(0),
            head: Bytes::from_static(b"Grpc-Status: 0\r\n\r\n"),
            framing: Framing::None,
            content_length: None,
        };
        assert_eq!(
            json(&r)["http1"],
            serde_json::json!({"type": "trailers", "message": "response", "index": 0,
                "headers": [["Grpc-Status", "0"]]})
        );
    }

    #[test]
    fn body_json_and_preview() {
        let r = BodyRecord {
            kind: Kind::Response,
            index: Some(0),
            offset: 0,
            data: Bytes::from_static(b"\x1f\x8b"),
            length: 2,
            show_data: true,
            ext: Some(Bytes::from_static(b";x=1")),
            textual: true,
            decoded: Some((Encoding::Gzip, b"{\"a\":\n1}".to_vec())),
        };
        assert_eq!(
            json(&r)["http1"],
            serde_json::json!({"type": "body", "message": "response", "index": 0, "offset": 0,
                "length": 2, "chunk_ext": ";x=1", "data_b64": "H4s=", "content_encoding": "gzip",
                "decoded_b64": "eyJhIjoKMX0="})
        );
        let mut t = String::new();
        r.write_text(2, &mut t);
        assert_eq!(
            t,
            "response body: 2 bytes (chunk extensions ;x=1), 8 bytes after gzip\n| {\"a\":\n| 1}"
        );
        let r = BodyRecord {
            kind: Kind::Request,
            index: Some(1),
            offset: 10,
            data: Bytes::new(),
            length: 7,
            show_data: false,
            ext: None,
            textual: false,
            decoded: None,
        };
        let v = json(&r);
        assert!(v["http1"].get("data_b64").is_none());
        let mut t = String::new();
        r.write_text(2, &mut t);
        assert_eq!(t, "request body: 7 bytes at offset 10");
    }
}
