//! A schema-less view of protobuf messages, like `protoc --decode_raw`: field
//! numbers and wire types, length-delimited fields shown as nested messages where
//! they parse as one, else as text or bytes (printable text wins over a message
//! reading, see `len_delimited`).

use spf_pipeline::ndjson::{b64_into, json_str, push_u64};

/// How much of a message the view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fields parsed in all, nested ones and those of attempts to read a
    /// length-delimited field as a message included: bounds the work too.
    pub fields: usize,
    /// Nesting deeper than this is shown as bytes.
    pub depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fields: 4096,
            depth: 32,
        }
    }
}

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

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Message,
    NotMessage,
    /// More fields than [`Limits::fields`].
    TooManyFields,
}

/// Why parsing stopped.
enum Stop {
    NotMessage,
    TooMany,
}

/// Parses `buf` as a message; `None` when it is not one or has more fields
/// than the limit allows.
pub fn parse<'a>(buf: &'a [u8], lim: &Limits) -> Option<Vec<Field<'a>>> {
    let mut out = Vec::new();
    let mut count = 0;
    let mut p = 0;
    parse_fields(buf, &mut p, 0, None, lim, &mut count, Some(&mut out)).ok()?;
    (p == buf.len()).then_some(out)
}

/// Whether `buf` reads as a message within the limits, without building
/// anything: what [`parse`] would say.
pub fn check(buf: &[u8], lim: &Limits) -> Check {
    let mut count = 0;
    let mut p = 0;
    match parse_fields(buf, &mut p, 0, None, lim, &mut count, None) {
        Ok(()) if p == buf.len() => Check::Message,
        Ok(()) | Err(Stop::NotMessage) => Check::NotMessage,
        // The limit stopped the parse before it could tell: the limit is
        // reported only for what reads as a message, not for other bytes
        // (a gRPC service may use another codec) that went on parsing long
        // enough by chance.
        Err(Stop::TooMany) if fields_end_to_end(buf, lim.depth) => Check::TooManyFields,
        Err(Stop::TooMany) => Check::NotMessage,
    }
}

/// Whether `buf` is a sequence of well-formed fields from its first byte to
/// its last, groups closed, nesting at most `depth` groups deep. Only the
/// top level is read (a length-delimited field is passed over whole), so the
/// work is one step per field whatever the field limit, and nothing is
/// allocated.
fn fields_end_to_end(buf: &[u8], depth: usize) -> bool {
    // The open groups' numbers, innermost last; the limit bounds the work,
    // the array bounds the memory.
    let mut open = [0u32; spf_pipeline::limits::MAX_PROTOBUF_DEPTH];
    let max = depth.min(open.len());
    let mut n = 0;
    let mut p = 0;
    while p < buf.len() {
        let Some(tag) = varint(buf, &mut p) else {
            return false;
        };
        let number = tag >> 3;
        if number == 0 || number > 0x1fff_ffff {
            return false;
        }
        let skip = match tag & 7 {
            0 => varint(buf, &mut p).map(|_| 0),
            1 => Some(8),
            2 => varint(buf, &mut p).and_then(|l| usize::try_from(l).ok()),
            5 => Some(4),
            3 => {
                if n == max {
                    return false;
                }
                open[n] = number as u32;
                n += 1;
                Some(0)
            }
            4 if n > 0 && open[n - 1] == number as u32 => {
                n -= 1;
                Some(0)
            }
            _ => None,
        };
        match skip.and_then(|k| p.checked_add(k)) {
            Some(end) if end <= buf.len() => p = end,
            _ => return false,
        }
    }
    n == 0
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

/// Parses fields until the end of `buf`, or until the end-group tag of
/// `group`, appending them to `out` when given (else only checking).
fn parse_fields<'a>(
    buf: &'a [u8],
    p: &mut usize,
    depth: usize,
    group: Option<u32>,
    lim: &Limits,
    count: &mut usize,
    mut out: Option<&mut Vec<Field<'a>>>,
) -> Result<(), Stop> {
    if depth > lim.depth {
        return Err(Stop::NotMessage);
    }
    let bad = || Stop::NotMessage;
    while *p < buf.len() {
        *count += 1;
        if *count > lim.fields {
            return Err(Stop::TooMany);
        }
        let tag = varint(buf, p).ok_or_else(bad)?;
        let number = u32::try_from(tag >> 3).map_err(|_| bad())?;
        if number == 0 || number > 0x1fff_ffff {
            return Err(bad());
        }
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, p).ok_or_else(bad)?),
            1 => {
                let b = buf.get(*p..*p + 8).ok_or_else(bad)?;
                *p += 8;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| bad())?))
            }
            2 => {
                let len = usize::try_from(varint(buf, p).ok_or_else(bad)?).map_err(|_| bad())?;
                let end = p.checked_add(len).ok_or_else(bad)?;
                let b = buf.get(*p..end).ok_or_else(bad)?;
                *p = end;
                len_delimited(b, depth, lim, count, out.is_some())?
            }
            3 => {
                let mut inner = Vec::new();
                let nested = out.is_some().then_some(&mut inner);
                parse_fields(buf, p, depth + 1, Some(number), lim, count, nested)?;
                Wire::Group(inner)
            }
            4 => {
                return if group == Some(number) {
                    Ok(())
                } else {
                    Err(bad())
                };
            }
            5 => {
                let b = buf.get(*p..*p + 4).ok_or_else(bad)?;
                *p += 4;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| bad())?))
            }
            _ => return Err(bad()),
        };
        if let Some(out) = out.as_deref_mut() {
            out.push(Field { number, wire });
        }
    }
    // A group must end with its end tag, not with the buffer.
    if group.is_none() { Ok(()) } else { Err(bad()) }
}

fn len_delimited<'a>(
    b: &'a [u8],
    depth: usize,
    lim: &Limits,
    count: &mut usize,
    build: bool,
) -> Result<Wire<'a>, Stop> {
    // Printable text with no control character at all is shown as text even
    // when it also parses as a message (as "echo: hi" does): a nested message
    // almost always has a tag or length below 0x20 somewhere. protoc prefers
    // the message; the text is the likelier reading.
    if let Ok(s) = std::str::from_utf8(b)
        && s.len() >= 2
        && s.chars().all(|c| !c.is_control())
    {
        return Ok(Wire::Text(s));
    }
    if !b.is_empty() && depth < lim.depth {
        let mut inner = Vec::new();
        let mut q = 0;
        match parse_fields(
            b,
            &mut q,
            depth + 1,
            None,
            lim,
            count,
            build.then_some(&mut inner),
        ) {
            Ok(()) if q == b.len() => return Ok(Wire::Message(inner)),
            Err(Stop::TooMany) => return Err(Stop::TooMany),
            _ => {}
        }
    }
    Ok(match std::str::from_utf8(b) {
        Ok(s)
            if s.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            Wire::Text(s)
        }
        _ => Wire::Bytes(b),
    })
}

/// Appends the view as a JSON array of `{field, wire, value|message|string|bytes_b64}`.
pub fn write_json(fields: &[Field<'_>], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"field\":");
        push_u64(f.number.into(), out);
        let (wire, key): (&[u8], &[u8]) = match &f.wire {
            Wire::Varint(_) => (b"varint", b"value"),
            Wire::Fixed64(_) => (b"fixed64", b"value"),
            Wire::Fixed32(_) => (b"fixed32", b"value"),
            Wire::Message(_) => (b"len", b"message"),
            Wire::Text(_) => (b"len", b"string"),
            Wire::Bytes(_) => (b"len", b"bytes_b64"),
            Wire::Group(_) => (b"group", b"message"),
        };
        out.extend_from_slice(b",\"wire\":\"");
        out.extend_from_slice(wire);
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        match &f.wire {
            Wire::Varint(v) | Wire::Fixed64(v) => push_u64(*v, out),
            Wire::Fixed32(v) => push_u64((*v).into(), out),
            Wire::Message(m) | Wire::Group(m) => write_json(m, out),
            Wire::Text(s) => json_str(s, out),
            Wire::Bytes(b) => {
                out.push(b'"');
                b64_into(b, out);
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
    out.push(b']');
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
        let f = parse(&m, &Limits::default()).unwrap();
        let mut t = String::new();
        to_text(&f, 0, &mut t);
        assert_eq!(
            t,
            "1: 150\n2 {\n  1: \"testing\"\n}\n3: 0x3f800000\n4: \"\\377\\000\"\n"
        );
        let mut j = Vec::new();
        write_json(&f, &mut j);
        let j: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(
            j[0],
            serde_json::json!({"field": 1, "wire": "varint", "value": 150})
        );
        assert_eq!(j[1]["message"][0]["string"], "testing");
        assert_eq!(j[3]["bytes_b64"], "/wA=");
    }

    #[test]
    fn printable_text_is_text_even_when_it_parses() {
        let mut m = vec![0x0a, 16];
        m.extend_from_slice(b"echo: hello, spf");
        let f = parse(&m, &Limits::default()).unwrap();
        assert_eq!(f[0].wire, Wire::Text("echo: hello, spf"));
    }

    #[test]
    fn rejects_non_messages() {
        let lim = Limits::default();
        assert!(parse(&[0x08], &lim).is_none());
        assert!(parse(&[0x00, 0x01], &lim).is_none());
        assert!(
            parse(&[0x0b, 0x08, 0x01], &lim).is_none(),
            "unterminated group"
        );
        assert_eq!(
            parse(&[0x0b, 0x08, 0x01, 0x0c], &lim).unwrap(),
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
        assert!(parse(&deep, &lim).is_none());
        assert_eq!(check(&deep, &lim), Check::NotMessage);
    }

    #[test]
    fn field_and_depth_limits() {
        // 100 varint fields.
        let flat: Vec<u8> = (0..100).flat_map(|_| [0x08, 0x01]).collect();
        let lim = Limits {
            fields: 50,
            depth: 32,
        };
        assert_eq!(check(&flat, &lim), Check::TooManyFields);
        assert!(parse(&flat, &lim).is_none());
        // Bytes that read as fields for longer than the limit, then not:
        // not a message, and no limit to report.
        for tail in [
            &[0x00][..],
            &[0x0a, 0x05, 0x01],
            &[0x0b, 0x08, 0x01],
            &[0x0c],
        ] {
            let cut = [flat.as_slice(), tail].concat();
            assert_eq!(check(&cut, &lim), Check::NotMessage, "{tail:?}");
        }
        // Groups, closed, are fields too; nested past the depth they are not.
        let grouped = [&[0x0b][..], flat.as_slice(), &[0x0c]].concat();
        assert_eq!(check(&grouped, &lim), Check::TooManyFields);
        let deep = [vec![0x0b; 40], flat.clone(), vec![0x0c; 40]].concat();
        assert_eq!(check(&deep, &lim), Check::NotMessage);
        assert_eq!(check(&flat, &Limits::default()), Check::Message);
        // Nested 3 deep: field 1 { field 1 { field 1: 1 } }.
        let nested = [0x0a, 0x04, 0x0a, 0x02, 0x08, 0x01];
        let shallow = Limits {
            fields: 100,
            depth: 1,
        };
        let f = parse(&nested, &shallow).unwrap();
        let Wire::Message(inner) = &f[0].wire else {
            panic!("{f:?}")
        };
        assert!(matches!(inner[0].wire, Wire::Bytes(_)), "{inner:?}");
        // check and parse agree, field by field count.
        for cut in 0..nested.len() {
            let b = &nested[..cut];
            assert_eq!(
                check(b, &shallow) == Check::Message,
                parse(b, &shallow).is_some()
            );
        }
    }
}
