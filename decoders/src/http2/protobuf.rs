//! A schema-less view of protobuf messages, like `protoc --decode_raw`: field
//! numbers and wire types, length-delimited fields shown as nested messages where
//! they parse as one, else as text or bytes (printable text wins over a message
//! reading, see `len_delimited`).

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Nesting deeper than this is shown as bytes, bounding work on hostile input.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Message(Vec<Field<'a>>),
    Text(&'a str),
    Bytes(&'a [u8]),
    Group(Vec<Field<'a>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub wire: Wire<'a>,
}

/// Parses `buf` as a message; `None` when it is not one.
pub fn parse(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut p = 0;
    let fields = parse_fields(buf, &mut p, 0, None)?;
    (p == buf.len()).then_some(fields)
}

fn varint(buf: &[u8], p: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*p)?;
        *p += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Parses fields until the end of `buf`, or until the end-group tag of `group`.
fn parse_fields<'a>(
    buf: &'a [u8],
    p: &mut usize,
    depth: usize,
    group: Option<u32>,
) -> Option<Vec<Field<'a>>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Vec::new();
    while *p < buf.len() {
        let tag = varint(buf, p)?;
        let number = u32::try_from(tag >> 3).ok()?;
        if number == 0 || number > 0x1fff_ffff {
            return None;
        }
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, p)?),
            1 => {
                let b = buf.get(*p..*p + 8)?;
                *p += 8;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(varint(buf, p)?).ok()?;
                let end = p.checked_add(len)?;
                let b = buf.get(*p..end)?;
                *p = end;
                len_delimited(b, depth)
            }
            3 => Wire::Group(parse_fields(buf, p, depth + 1, Some(number))?),
            4 => {
                return (group == Some(number)).then_some(out);
            }
            5 => {
                let b = buf.get(*p..*p + 4)?;
                *p += 4;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().ok()?))
            }
            _ => return None,
        };
        out.push(Field { number, wire });
    }
    // A group must end with its end tag, not with the buffer.
    group.is_none().then_some(out)
}

fn len_delimited(b: &[u8], depth: usize) -> Wire<'_> {
    // Printable text with no control character at all is shown as text even
    // when it also parses as a message (as "echo: hi" does): a nested message
    // almost always has a tag or length below 0x20 somewhere. protoc prefers
    // the message; the text is the likelier reading.
    if let Ok(s) = std::str::from_utf8(b)
        && s.len() >= 2
        && s.chars().all(|c| !c.is_control())
    {
        return Wire::Text(s);
    }
    if !b.is_empty()
        && depth < MAX_DEPTH
        && let Some(m) = {
            let mut q = 0;
            parse_fields(b, &mut q, depth + 1, None).filter(|_| q == b.len())
        }
    {
        return Wire::Message(m);
    }
    match std::str::from_utf8(b) {
        Ok(s)
            if s.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            Wire::Text(s)
        }
        _ => Wire::Bytes(b),
    }
}

pub fn to_json(fields: &[Field<'_>]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert("field".into(), json!(f.number));
                let (wire, key, v) = match &f.wire {
                    Wire::Varint(v) => ("varint", "value", json!(v)),
                    Wire::Fixed64(v) => ("fixed64", "value", json!(v)),
                    Wire::Fixed32(v) => ("fixed32", "value", json!(v)),
                    Wire::Message(m) => ("len", "message", to_json(m)),
                    Wire::Text(s) => ("len", "string", json!(s)),
                    Wire::Bytes(b) => (
                        "len",
                        "bytes_b64",
                        json!(base64::engine::general_purpose::STANDARD.encode(b)),
                    ),
                    Wire::Group(m) => ("group", "message", to_json(m)),
                };
                m.insert("wire".into(), json!(wire));
                m.insert(key.into(), v);
                Value::Object(m)
            })
            .collect(),
    )
}

/// Renders like `protoc --decode_raw`, each line indented by `indent` spaces.
pub fn to_text(fields: &[Field<'_>], indent: usize, out: &mut String) {
    use std::fmt::Write as _;
    for f in fields {
        for _ in 0..indent {
            out.push(' ');
        }
        match &f.wire {
            Wire::Varint(v) => {
                let _ = writeln!(out, "{}: {v}", f.number);
            }
            Wire::Fixed64(v) => {
                let _ = writeln!(out, "{}: 0x{v:016x}", f.number);
            }
            Wire::Fixed32(v) => {
                let _ = writeln!(out, "{}: 0x{v:08x}", f.number);
            }
            Wire::Message(m) | Wire::Group(m) => {
                let _ = writeln!(out, "{} {{", f.number);
                to_text(m, indent + 2, out);
                for _ in 0..indent {
                    out.push(' ');
                }
                out.push_str("}\n");
            }
            Wire::Text(s) => {
                let _ = write!(out, "{}: \"", f.number);
                c_escape(s.as_bytes(), out);
                out.push_str("\"\n");
            }
            Wire::Bytes(b) => {
                let _ = write!(out, "{}: \"", f.number);
                c_escape(b, out);
                out.push_str("\"\n");
            }
        }
    }
}

fn c_escape(b: &[u8], out: &mut String) {
    use std::fmt::Write as _;
    for &c in b {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(c as char),
            _ => {
                let _ = write!(out, "\\{c:03o}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_decode_raw() {
        // field 1 varint 150, field 2 {field 1: "testing"}, field 3 fixed32, field 4 bytes.
        let mut m = vec![0x08, 0x96, 0x01, 0x12, 0x09, 0x0a, 0x07];
        m.extend_from_slice(b"testing");
        m.extend_from_slice(&[0x1d, 0, 0, 0x80, 0x3f, 0x22, 2, 0xff, 0x00]);
        let f = parse(&m).unwrap();
        let mut t = String::new();
        to_text(&f, 0, &mut t);
        assert_eq!(
            t,
            "1: 150\n2 {\n  1: \"testing\"\n}\n3: 0x3f800000\n4: \"\\377\\000\"\n"
        );
        let j = to_json(&f);
        assert_eq!(j[0], json!({"field": 1, "wire": "varint", "value": 150}));
        assert_eq!(j[1]["message"][0]["string"], "testing");
        assert_eq!(j[3]["bytes_b64"], "/wA=");
    }

    #[test]
    fn printable_text_is_text_even_when_it_parses() {
        let mut m = vec![0x0a, 16];
        m.extend_from_slice(b"echo: hello, spf");
        let f = parse(&m).unwrap();
        assert_eq!(f[0].wire, Wire::Text("echo: hello, spf"));
    }

    #[test]
    fn rejects_non_messages() {
        assert!(parse(&[0x08]).is_none());
        assert!(parse(&[0x00, 0x01]).is_none());
        assert!(parse(&[0x0b, 0x08, 0x01]).is_none(), "unterminated group");
        assert_eq!(
            parse(&[0x0b, 0x08, 0x01, 0x0c]).unwrap(),
            vec![Field {
                number: 1,
                wire: Wire::Group(vec![Field {
                    number: 1,
                    wire: Wire::Varint(1)
                }])
            }]
        );
        // Deep nesting does not recurse without bound.
        let deep = vec![0x0b; 10_000];
        assert!(parse(&deep).is_none());
    }
}
