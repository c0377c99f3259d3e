//! HTTP/2 frames (RFC 9113 section 4 and 6): the 9-byte header, names of types,
//! flags, error codes and settings, and payload parsing with padding removed.

use std::borrow::Cow;

pub const HEADER_LEN: usize = 9;

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame length the protocol allows (2^24 - 1).
pub const MAX_LENGTH: u32 = (1 << 24) - 1;

/// SETTINGS_MAX_FRAME_SIZE until a peer says otherwise.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    /// The reserved bit before the stream id (must be ignored by receivers).
    pub reserved: bool,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream_id: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
            reserved: b[5] & 0x80 != 0,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this looks like a real frame header of a known type: used to find
    /// frame boundaries in a stream joined midway, so it is strict where senders
    /// are (no undefined flags, right stream ids, right fixed lengths).
    pub fn plausible(&self, max_len: u32) -> bool {
        if self.reserved || self.length > max_len {
            return false;
        }
        let defined = match self.kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return false,
        };
        if self.flags & !defined != 0 {
            return false;
        }
        let on_stream = match self.kind {
            SETTINGS | PING | GOAWAY => Some(false),
            WINDOW_UPDATE => None,
            _ => Some(true),
        };
        if let Some(s) = on_stream
            && s != (self.stream_id != 0)
        {
            return false;
        }
        match self.kind {
            SETTINGS => {
                if self.has(ACK) {
                    self.length == 0
                } else {
                    self.length % 6 == 0
                }
            }
            PING => self.length == 8,
            WINDOW_UPDATE | RST_STREAM => self.length == 4,
            PRIORITY => self.length == 5,
            GOAWAY => self.length >= 8,
            HEADERS | CONTINUATION => self.length > 0 || self.has(END_HEADERS),
            _ => true,
        }
    }
}

pub fn type_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => return None,
    })
}

/// Names of the set flags; bits a type does not define are shown as hex.
pub fn flag_names(kind: u8, flags: u8) -> Vec<Cow<'static, str>> {
    flag_iter(kind, flags)
        .map(|f| match f {
            Flag::Named(n) => Cow::Borrowed(n),
            Flag::Bit(b) => Cow::Owned(format!("0x{b:02x}")),
        })
        .collect()
}

/// A set flag: its name, or the bit of one the frame type does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Named(&'static str),
    Bit(u8),
}

/// The set flags, lowest bit first, without allocating.
pub fn flag_iter(kind: u8, flags: u8) -> impl Iterator<Item = Flag> {
    (0..8).filter_map(move |bit| {
        let f = 1u8 << bit;
        if flags & f == 0 {
            return None;
        }
        Some(match (kind, f) {
            (DATA | HEADERS, END_STREAM) => Flag::Named("END_STREAM"),
            (SETTINGS | PING, ACK) => Flag::Named("ACK"),
            (HEADERS | PUSH_PROMISE | CONTINUATION, END_HEADERS) => Flag::Named("END_HEADERS"),
            (DATA | HEADERS | PUSH_PROMISE, PADDED) => Flag::Named("PADDED"),
            (HEADERS, PRIORITY_FLAG) => Flag::Named("PRIORITY"),
            _ => Flag::Bit(f),
        })
    })
}

/// An error code's name, `UNKNOWN_ERROR(0x..)` for codes RFC 9113 does not name.
pub fn error_name(code: u32) -> Cow<'static, str> {
    match known_error(code) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("UNKNOWN_ERROR(0x{code:x})")),
    }
}

/// The name of an error code RFC 9113 names.
pub fn known_error(code: u32) -> Option<&'static str> {
    Some(match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return None,
    })
}

/// A setting's name, `UNKNOWN_SETTING(0x..)` for ids no RFC names.
pub fn setting_name(id: u16) -> Cow<'static, str> {
    match known_setting(id) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("UNKNOWN_SETTING(0x{id:x})")),
    }
}

/// The name of a setting an RFC names.
pub fn known_setting(id: u16) -> Option<&'static str> {
    Some(match id {
        0x1 => "SETTINGS_HEADER_TABLE_SIZE",
        0x2 => "SETTINGS_ENABLE_PUSH",
        0x3 => "SETTINGS_MAX_CONCURRENT_STREAMS",
        0x4 => "SETTINGS_INITIAL_WINDOW_SIZE",
        0x5 => "SETTINGS_MAX_FRAME_SIZE",
        0x6 => "SETTINGS_MAX_HEADER_LIST_SIZE",
        0x8 => "SETTINGS_ENABLE_CONNECT_PROTOCOL",
        0x9 => "SETTINGS_NO_RFC7540_PRIORITIES",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub depends_on: u32,
    /// 1..=256 (the wire value plus one).
    pub weight: u16,
}

impl Priority {
    fn parse(b: &[u8]) -> Priority {
        Priority {
            exclusive: b[0] & 0x80 != 0,
            depends_on: u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]),
            weight: b[4] as u16 + 1,
        }
    }
}

/// A frame's payload, padding removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    Data {
        pad: Option<u8>,
        data: &'a [u8],
    },
    Headers {
        pad: Option<u8>,
        priority: Option<Priority>,
        fragment: &'a [u8],
    },
    Priority(Priority),
    RstStream {
        code: u32,
    },
    Settings {
        params: Vec<(u16, u32)>,
    },
    PushPromise {
        pad: Option<u8>,
        promised: u32,
        fragment: &'a [u8],
    },
    Ping {
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: &'a [u8],
    },
    WindowUpdate {
        increment: u32,
    },
    Continuation {
        fragment: &'a [u8],
    },
    Unknown,
}

/// A frame that breaks RFC 9113: the error code it names and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> FrameError {
    FrameError {
        code,
        message: message.into(),
    }
}

fn need_stream(h: &Header, name: &str) -> Result<(), FrameError> {
    if h.stream_id == 0 {
        return Err(err("PROTOCOL_ERROR", format!("{name} frame on stream 0")));
    }
    Ok(())
}

fn need_conn(h: &Header, name: &str) -> Result<(), FrameError> {
    if h.stream_id != 0 {
        return Err(err(
            "PROTOCOL_ERROR",
            format!("{name} frame on stream {} (must be 0)", h.stream_id),
        ));
    }
    Ok(())
}

fn exact_len(h: &Header, name: &str, len: u32) -> Result<(), FrameError> {
    if h.length != len {
        return Err(err(
            "FRAME_SIZE_ERROR",
            format!("{name} frame of length {} (must be {len})", h.length),
        ));
    }
    Ok(())
}

/// Strips padding (RFC 9113 6.1): returns the pad length and the rest.
fn unpad<'a>(h: &Header, p: &'a [u8], name: &str) -> Result<(Option<u8>, &'a [u8]), FrameError> {
    if !h.has(PADDED) {
        return Ok((None, p));
    }
    let Some((&pad, rest)) = p.split_first() else {
        return Err(err(
            "FRAME_SIZE_ERROR",
            format!("padded {name} frame without a pad length"),
        ));
    };
    if pad as usize > rest.len() {
        return Err(err(
            "PROTOCOL_ERROR",
            format!(
                "{name} frame padding {pad} exceeds its payload of {}",
                rest.len()
            ),
        ));
    }
    Ok((Some(pad), &rest[..rest.len() - pad as usize]))
}

/// Parses the payload of a frame whose header is `h`. `p` is exactly `h.length` bytes.
pub fn parse_payload<'a>(h: &Header, p: &'a [u8]) -> Result<Payload<'a>, FrameError> {
    match h.kind {
        DATA => {
            need_stream(h, "DATA")?;
            let (pad, data) = unpad(h, p, "DATA")?;
            Ok(Payload::Data { pad, data })
        }
        HEADERS => {
            need_stream(h, "HEADERS")?;
            let (pad, mut rest) = unpad(h, p, "HEADERS")?;
            let priority = if h.has(PRIORITY_FLAG) {
                if rest.len() < 5 {
                    return Err(err(
                        "FRAME_SIZE_ERROR",
                        "HEADERS frame too short for its priority",
                    ));
                }
                let pr = Priority::parse(&rest[..5]);
                rest = &rest[5..];
                Some(pr)
            } else {
                None
            };
            Ok(Payload::Headers {
                pad,
                priority,
                fragment: rest,
            })
        }
        PRIORITY => {
            need_stream(h, "PRIORITY")?;
            exact_len(h, "PRIORITY", 5)?;
            Ok(Payload::Priority(Priority::parse(p)))
        }
        RST_STREAM => {
            need_stream(h, "RST_STREAM")?;
            exact_len(h, "RST_STREAM", 4)?;
            Ok(Payload::RstStream {
                code: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            })
        }
        SETTINGS => {
            need_conn(h, "SETTINGS")?;
            if h.has(ACK) && h.length != 0 {
                return Err(err(
                    "FRAME_SIZE_ERROR",
                    format!("SETTINGS ACK with length {} (must be 0)", h.length),
                ));
            }
            if p.len() % 6 != 0 {
                return Err(err(
                    "FRAME_SIZE_ERROR",
                    format!("SETTINGS length {} is not a multiple of 6", p.len()),
                ));
            }
            let params: Vec<(u16, u32)> = p
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
            for &(id, v) in &params {
                match id {
                    0x2 if v > 1 => {
                        return Err(err("PROTOCOL_ERROR", format!("SETTINGS_ENABLE_PUSH = {v}")));
                    }
                    0x4 if v > 0x7fff_ffff => {
                        return Err(err(
                            "FLOW_CONTROL_ERROR",
                            format!("SETTINGS_INITIAL_WINDOW_SIZE = {v} exceeds 2^31-1"),
                        ));
                    }
                    0x5 if !(DEFAULT_MAX_FRAME_SIZE..=MAX_LENGTH).contains(&v) => {
                        return Err(err(
                            "PROTOCOL_ERROR",
                            format!("SETTINGS_MAX_FRAME_SIZE = {v} outside 16384..=16777215"),
                        ));
                    }
                    _ => {}
                }
            }
            Ok(Payload::Settings { params })
        }
        PUSH_PROMISE => {
            need_stream(h, "PUSH_PROMISE")?;
            let (pad, rest) = unpad(h, p, "PUSH_PROMISE")?;
            if rest.len() < 4 {
                return Err(err("FRAME_SIZE_ERROR", "PUSH_PROMISE frame too short"));
            }
            Ok(Payload::PushPromise {
                pad,
                promised: u32::from_be_bytes([rest[0] & 0x7f, rest[1], rest[2], rest[3]]),
                fragment: &rest[4..],
            })
        }
        PING => {
            need_conn(h, "PING")?;
            exact_len(h, "PING", 8)?;
            let mut data = [0u8; 8];
            data.copy_from_slice(p);
            Ok(Payload::Ping { data })
        }
        GOAWAY => {
            need_conn(h, "GOAWAY")?;
            if p.len() < 8 {
                return Err(err(
                    "FRAME_SIZE_ERROR",
                    format!("GOAWAY frame of length {} (at least 8)", p.len()),
                ));
            }
            Ok(Payload::GoAway {
                last_stream: u32::from_be_bytes([p[0] & 0x7f, p[1], p[2], p[3]]),
                code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                debug: &p[8..],
            })
        }
        WINDOW_UPDATE => {
            exact_len(h, "WINDOW_UPDATE", 4)?;
            let increment = u32::from_be_bytes([p[0] & 0x7f, p[1], p[2], p[3]]);
            if increment == 0 {
                return Err(err(
                    "PROTOCOL_ERROR",
                    "WINDOW_UPDATE with an increment of 0",
                ));
            }
            Ok(Payload::WindowUpdate { increment })
        }
        CONTINUATION => {
            need_stream(h, "CONTINUATION")?;
            Ok(Payload::Continuation { fragment: p })
        }
        _ => Ok(Payload::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, kind: u8, flags: u8, sid: u32) -> Header {
        Header {
            length: len,
            kind,
            flags,
            stream_id: sid,
            reserved: false,
        }
    }

    #[test]
    fn header_round_trip() {
        let b = [0, 0, 8, 6, 1, 0x80, 0, 0, 5];
        let h = Header::parse(&b).unwrap();
        assert_eq!(
            (h.length, h.kind, h.flags, h.stream_id, h.reserved),
            (8, 6, 1, 5, true)
        );
        assert!(Header::parse(&b[..8]).is_none());
    }

    #[test]
    fn padding_is_removed_and_checked() {
        let h = hdr(6, DATA, PADDED, 1);
        let p = parse_payload(&h, &[2, b'a', b'b', b'c', 0, 0]).unwrap();
        assert_eq!(
            p,
            Payload::Data {
                pad: Some(2),
                data: b"abc"
            }
        );
        let e = parse_payload(&hdr(3, DATA, PADDED, 1), &[5, 0, 0]).unwrap_err();
        assert_eq!(e.code, "PROTOCOL_ERROR");
        let h = hdr(9, HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 3);
        let p = parse_payload(&h, &[1, 0x80, 0, 0, 1, 15, 0x82, 0x84, 0]).unwrap();
        assert_eq!(
            p,
            Payload::Headers {
                pad: Some(1),
                priority: Some(Priority {
                    exclusive: true,
                    depends_on: 1,
                    weight: 16
                }),
                fragment: &[0x82, 0x84],
            }
        );
    }

    #[test]
    fn fixed_sizes_and_stream_rules() {
        assert_eq!(
            parse_payload(&hdr(7, PING, 0, 0), &[0; 7])
                .unwrap_err()
                .code,
            "FRAME_SIZE_ERROR"
        );
        assert_eq!(
            parse_payload(&hdr(8, PING, 0, 1), &[0; 8])
                .unwrap_err()
                .code,
            "PROTOCOL_ERROR"
        );
        assert_eq!(
            parse_payload(&hdr(5, SETTINGS, 0, 0), &[0; 5])
                .unwrap_err()
                .code,
            "FRAME_SIZE_ERROR"
        );
        assert_eq!(
            parse_payload(&hdr(4, DATA, 0, 0), &[0; 4])
                .unwrap_err()
                .code,
            "PROTOCOL_ERROR"
        );
        assert_eq!(
            parse_payload(&hdr(4, WINDOW_UPDATE, 0, 0), &[0; 4])
                .unwrap_err()
                .code,
            "PROTOCOL_ERROR"
        );
        assert_eq!(
            parse_payload(&hdr(3, 0xfa, 0x3, 9), &[1, 2, 3]).unwrap(),
            Payload::Unknown
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            flag_names(HEADERS, 0x25),
            vec!["END_STREAM", "END_HEADERS", "PRIORITY"]
        );
        assert_eq!(flag_names(DATA, 0x41), vec!["END_STREAM", "0x40"]);
        assert_eq!(error_name(8), "CANCEL");
        assert_eq!(error_name(0x99), "UNKNOWN_ERROR(0x99)");
        assert_eq!(setting_name(3), "SETTINGS_MAX_CONCURRENT_STREAMS");
    }
}
