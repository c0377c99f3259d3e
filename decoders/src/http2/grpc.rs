//! gRPC over HTTP/2: length-prefixed messages carried in DATA frames, and the
//! status in trailers.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::protobuf;

/// Length-prefixed messages of one stream in one direction, reassembled across
/// DATA frames.
#[derive(Debug, Default)]
pub struct Messages {
    buf: Vec<u8>,
}

/// One whole gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub compressed: bool,
    pub data: Vec<u8>,
}

impl Messages {
    /// Bytes held for a message not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The length the message being assembled will have, once its prefix is in.
    pub fn expected(&self) -> Option<usize> {
        (self.buf.len() >= 5).then(|| {
            u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
        })
    }

    /// Adds DATA payload, appending every message it completes. A prefix that
    /// announces a message larger than `max` is an error; the held bytes are
    /// dropped so that the stream does not hold memory for it.
    pub fn push(
        &mut self,
        mut data: &[u8],
        max: usize,
        out: &mut Vec<Message>,
    ) -> Result<(), String> {
        if !self.buf.is_empty() {
            // Complete the prefix, then the held message, from the new bytes.
            while self.buf.len() < 5 && !data.is_empty() {
                self.buf.push(data[0]);
                data = &data[1..];
            }
            let Some(len) = self.expected() else {
                return Ok(());
            };
            self.check(len, max)?;
            let need = 5 + len - self.buf.len();
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < 5 + len {
                return Ok(());
            }
            let compressed = self.flag()?;
            out.push(Message {
                compressed,
                data: self.buf[5..].to_vec(),
            });
            self.buf.clear();
        }
        while data.len() >= 5 {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            if data[0] > 1 {
                return Err(format!("gRPC message flag {} (must be 0 or 1)", data[0]));
            }
            if len > max {
                return Err(format!(
                    "gRPC message of {len} bytes exceeds the limit of {max}"
                ));
            }
            if data.len() < 5 + len {
                break;
            }
            out.push(Message {
                compressed: data[0] == 1,
                data: data[5..5 + len].to_vec(),
            });
            data = &data[5 + len..];
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.buf[0] {
            0 => Ok(false),
            1 => Ok(true),
            f => {
                self.buf.clear();
                Err(format!("gRPC message flag {f} (must be 0 or 1)"))
            }
        }
    }

    fn check(&mut self, len: usize, max: usize) -> Result<(), String> {
        if self.buf[0] > 1 {
            return self.flag().map(|_| ());
        }
        if len > max {
            self.buf.clear();
            return Err(format!(
                "gRPC message of {len} bytes exceeds the limit of {max}"
            ));
        }
        Ok(())
    }
}

pub fn status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec); undecodable
/// sequences are kept as they are.
pub fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A message as JSON (`compressed`, `length`, `data_b64`, `protobuf`) and as
/// text lines indented by `indent`.
pub fn render(m: &Message, indent: usize, text: &mut String) -> Value {
    use std::fmt::Write as _;
    let mut o = Map::new();
    o.insert("compressed".into(), json!(m.compressed));
    o.insert("length".into(), json!(m.data.len()));
    o.insert(
        "data_b64".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(&m.data)),
    );
    let pad = " ".repeat(indent);
    let _ = writeln!(
        text,
        "{pad}gRPC message <length={}, compressed={}>",
        m.data.len(),
        m.compressed
    );
    if !m.compressed
        && let Some(fields) = protobuf::parse(&m.data)
    {
        o.insert("protobuf".into(), protobuf::to_json(&fields));
        protobuf::to_text(&fields, indent + 2, text);
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn reassembles_at_every_split() {
        let mut wire = frame(0, b"\x08\x01");
        wire.extend(frame(1, b"abcdef"));
        wire.extend(frame(0, b""));
        for cut in 0..=wire.len() {
            for cut2 in cut..=wire.len() {
                let mut m = Messages::default();
                let mut out = Vec::new();
                m.push(&wire[..cut], 100, &mut out).unwrap();
                m.push(&wire[cut..cut2], 100, &mut out).unwrap();
                m.push(&wire[cut2..], 100, &mut out).unwrap();
                assert_eq!(out.len(), 3, "cuts {cut} {cut2}");
                assert_eq!(
                    out[0],
                    Message {
                        compressed: false,
                        data: b"\x08\x01".to_vec()
                    }
                );
                assert_eq!(
                    out[1],
                    Message {
                        compressed: true,
                        data: b"abcdef".to_vec()
                    }
                );
                assert_eq!(out[2].data, b"");
                assert_eq!(m.pending(), 0);
            }
        }
    }

    #[test]
    fn rejects_oversized_and_bad_flags() {
        let mut m = Messages::default();
        let mut out = Vec::new();
        assert!(m.push(&frame(0, &[0; 20]), 10, &mut out).is_err());
        let mut m = Messages::default();
        assert!(m.push(&frame(7, b"x"), 10, &mut out).is_err());
        let mut m = Messages::default();
        m.push(&[0, 0], 10, &mut out).unwrap();
        assert!(m.push(&[0, 0, 99], 10, &mut out).is_err());
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode(b"a%20b%zz%4"), "a b%zz%4");
    }
}
