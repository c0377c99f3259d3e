//! An incremental RESP2/RESP3 parser: it finds whole messages at the start of a
//! buffer and says "need more" for a partial one, so a stream split anywhere
//! across events decodes the same as one written at once.

use serde_json::{Map, Value as Json, json};

/// Nesting deeper than this is refused rather than risking the stack.
pub const MAX_DEPTH: usize = 64;
/// A type line (`$5`, `+OK`, ...) longer than this is not RESP.
const MAX_LINE: usize = 64 * 1024;
/// Redis refuses longer strings (`proto-max-bulk-len`).
const MAX_BULK: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `None` is the RESP2 null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the RESP2 null array (`*-1`).
    Array(Option<Vec<Value>>),
    Null,
    Boolean(bool),
    Double(String),
    BigNumber(String),
    BulkError(Vec<u8>),
    Verbatim {
        format: String,
        text: Vec<u8>,
    },
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Push(Vec<Value>),
    /// RESP3 attributes followed by the value they describe.
    Attributed(Vec<(Value, Value)>, Box<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Parses one message at the start of `buf`: `Ok(None)` when it is not complete
/// yet, else the value and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let mut p = Parser { buf, pos: 0 };
    match p.value(0)? {
        Some(v) => Ok(Some((v, p.pos))),
        None => Ok(None),
    }
}

/// The words of a command: its name, then its arguments.
pub type Words = Vec<Vec<u8>>;

/// An inline command (`PING\r\n`, as typed into telnet): `Ok(None)` until the line
/// ends.
pub fn parse_inline(buf: &[u8]) -> Result<Option<(Words, usize)>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError(format!(
                "inline command longer than {MAX_LINE} bytes"
            )));
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((words, nl + 1)))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// The bytes up to the next CRLF, consuming both.
    fn line(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let Some(i) = rest.windows(2).position(|w| w == b"\r\n") else {
            if rest.len() > MAX_LINE {
                return Err(ProtocolError(format!("no CRLF within {MAX_LINE} bytes")));
            }
            return Ok(None);
        };
        self.pos += i + 2;
        Ok(Some(&rest[..i]))
    }

    fn number(line: &[u8], what: char) -> Result<i64, ProtocolError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                ProtocolError(format!(
                    "bad number {:?} after '{what}'",
                    String::from_utf8_lossy(line)
                ))
            })
    }

    /// `len` bytes then CRLF.
    fn blob(&mut self, len: usize) -> Result<Option<Vec<u8>>, ProtocolError> {
        if len > MAX_BULK {
            return Err(ProtocolError(format!(
                "string length {len} exceeds RESP's 512 MiB limit"
            )));
        }
        let end = self.pos.checked_add(len).and_then(|e| e.checked_add(2));
        let Some(end) = end else {
            return Err(ProtocolError(format!("length {len} overflows")));
        };
        if self.buf.len() < end {
            return Ok(None);
        }
        if &self.buf[end - 2..end] != b"\r\n" {
            return Err(ProtocolError(format!(
                "a {len}-byte string is not followed by CRLF"
            )));
        }
        let v = self.buf[self.pos..end - 2].to_vec();
        self.pos = end;
        Ok(Some(v))
    }

    fn length(n: i64, what: char) -> Result<usize, ProtocolError> {
        usize::try_from(n).map_err(|_| ProtocolError(format!("negative length {n} after '{what}'")))
    }

    fn items(&mut self, n: usize, depth: usize) -> Result<Option<Vec<Value>>, ProtocolError> {
        // The count comes off the wire: do not let it size an allocation.
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            match self.value(depth + 1)? {
                Some(x) => v.push(x),
                None => return Ok(None),
            }
        }
        Ok(Some(v))
    }

    fn pairs(
        &mut self,
        n: usize,
        depth: usize,
    ) -> Result<Option<Vec<(Value, Value)>>, ProtocolError> {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let Some(k) = self.value(depth + 1)? else {
                return Ok(None);
            };
            let Some(x) = self.value(depth + 1)? else {
                return Ok(None);
            };
            v.push((k, x));
        }
        Ok(Some(v))
    }

    fn value(&mut self, depth: usize) -> Result<Option<Value>, ProtocolError> {
        if depth > MAX_DEPTH {
            return Err(ProtocolError(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let Some(&tag) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        let start = self.pos;
        self.pos += 1;
        let Some(line) = self.line()? else {
            self.pos = start;
            return Ok(None);
        };
        let line = line.to_vec();
        let t = tag as char;
        let v = match tag {
            b'+' => Some(Value::Simple(line)),
            b'-' => Some(Value::Error(line)),
            b':' => Some(Value::Integer(Self::number(&line, t)?)),
            b'$' => match Self::number(&line, t)? {
                -1 => Some(Value::Bulk(None)),
                n => self
                    .blob(Self::length(n, t)?)?
                    .map(|b| Value::Bulk(Some(b))),
            },
            b'*' => match Self::number(&line, t)? {
                -1 => Some(Value::Array(None)),
                n => self
                    .items(Self::length(n, t)?, depth)?
                    .map(|v| Value::Array(Some(v))),
            },
            b'_' => {
                if !line.is_empty() {
                    return Err(ProtocolError("null '_' carries data".into()));
                }
                Some(Value::Null)
            }
            b'#' => match line.as_slice() {
                b"t" => Some(Value::Boolean(true)),
                b"f" => Some(Value::Boolean(false)),
                _ => return Err(ProtocolError("boolean '#' is neither t nor f".into())),
            },
            b',' => {
                let s = String::from_utf8(line)
                    .map_err(|_| ProtocolError("double ',' is not text".into()))?;
                let ok = matches!(s.as_str(), "inf" | "-inf" | "nan") || s.parse::<f64>().is_ok();
                if !ok {
                    return Err(ProtocolError(format!("bad double {s:?}")));
                }
                Some(Value::Double(s))
            }
            b'(' => {
                let s = String::from_utf8(line)
                    .map_err(|_| ProtocolError("big number '(' is not text".into()))?;
                let digits = s.strip_prefix('-').unwrap_or(&s);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProtocolError(format!("bad big number {s:?}")));
                }
                Some(Value::BigNumber(s))
            }
            b'!' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                self.blob(n)?.map(Value::BulkError)
            }
            b'=' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                match self.blob(n)? {
                    None => None,
                    Some(b) if b.len() >= 4 && b[3] == b':' => Some(Value::Verbatim {
                        format: String::from_utf8_lossy(&b[..3]).into_owned(),
                        text: b[4..].to_vec(),
                    }),
                    Some(_) => {
                        return Err(ProtocolError(
                            "verbatim string without a 3-letter format".into(),
                        ));
                    }
                }
            }
            b'%' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                self.pairs(n, depth)?.map(Value::Map)
            }
            b'~' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                self.items(n, depth)?.map(Value::Set)
            }
            b'>' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                self.items(n, depth)?.map(Value::Push)
            }
            b'|' => {
                let n = Self::length(Self::number(&line, t)?, t)?;
                match self.pairs(n, depth)? {
                    None => None,
                    Some(attrs) => self
                        .value(depth + 1)?
                        .map(|v| Value::Attributed(attrs, Box::new(v))),
                }
            }
            other => {
                return Err(ProtocolError(format!(
                    "unknown type byte {:?}",
                    String::from_utf8_lossy(&[other])
                )));
            }
        };
        if v.is_none() {
            self.pos = start;
        }
        Ok(v)
    }
}

/// Bytes as a JSON string: UTF-8 as is, other bytes as `\xNN`.
pub fn text_of(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::with_capacity(b.len() * 2);
            for chunk in b.utf8_chunks() {
                s.push_str(chunk.valid());
                for x in chunk.invalid() {
                    s.push_str(&format!("\\x{x:02x}"));
                }
            }
            s
        }
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Simple(_) => "simple",
            Value::Error(_) => "error",
            Value::Integer(_) => "integer",
            Value::Bulk(_) => "bulk",
            Value::Array(_) => "array",
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Double(_) => "double",
            Value::BigNumber(_) => "big_number",
            Value::BulkError(_) => "bulk_error",
            Value::Verbatim { .. } => "verbatim",
            Value::Map(_) => "map",
            Value::Set(_) => "set",
            Value::Push(_) => "push",
            Value::Attributed(_, v) => v.type_name(),
        }
    }

    /// A request is an array of bulk strings: the command and its arguments.
    pub fn as_command(&self) -> Option<Vec<&[u8]>> {
        let Value::Array(Some(items)) = self else {
            return None;
        };
        if items.is_empty() {
            return None;
        }
        items
            .iter()
            .map(|v| match v {
                Value::Bulk(Some(b)) => Some(b.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// The value as JSON: strings as strings, errors as `{"error": ...}`, maps as
    /// lists of `[key, value]` pairs (keys need not be strings, and order matters).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Simple(s) => Json::String(text_of(s)),
            Value::Error(s) | Value::BulkError(s) => json!({ "error": text_of(s) }),
            Value::Integer(n) => json!(n),
            Value::Bulk(None) | Value::Array(None) | Value::Null => Json::Null,
            Value::Bulk(Some(b)) => Json::String(text_of(b)),
            Value::Array(Some(v)) | Value::Set(v) | Value::Push(v) => {
                Json::Array(v.iter().map(Value::to_json).collect())
            }
            Value::Boolean(b) => json!(b),
            Value::Double(s) => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => json!(f),
                _ => Json::String(s.clone()),
            },
            Value::BigNumber(s) => Json::String(s.clone()),
            Value::Verbatim { text, .. } => Json::String(text_of(text)),
            Value::Map(pairs) => pairs_json(pairs),
            Value::Attributed(_, v) => v.to_json(),
        }
    }

    /// The reply the way redis-cli prints it.
    pub fn render(&self, out: &mut String, indent: usize) {
        match self {
            Value::Simple(s) => out.push_str(&text_of(s)),
            Value::Error(s) | Value::BulkError(s) => {
                out.push_str("(error) ");
                out.push_str(&text_of(s));
            }
            Value::Integer(n) => out.push_str(&format!("(integer) {n}")),
            Value::Bulk(None) | Value::Array(None) | Value::Null => out.push_str("(nil)"),
            Value::Bulk(Some(b)) => quote(b, out),
            Value::Verbatim { text, .. } => quote(text, out),
            Value::Boolean(b) => out.push_str(if *b { "(true)" } else { "(false)" }),
            Value::Double(s) => out.push_str(&format!("(double) {s}")),
            Value::BigNumber(s) => out.push_str(&format!("(big number) {s}")),
            Value::Array(Some(v)) | Value::Set(v) | Value::Push(v) => {
                if v.is_empty() {
                    out.push_str("(empty array)");
                }
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                        out.push_str(&" ".repeat(indent));
                    }
                    let label = format!("{}) ", i + 1);
                    out.push_str(&label);
                    x.render(out, indent + label.len());
                }
            }
            Value::Map(pairs) => {
                if pairs.is_empty() {
                    out.push_str("(empty map)");
                }
                for (i, (k, x)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                        out.push_str(&" ".repeat(indent));
                    }
                    let label = format!("{}# ", i + 1);
                    out.push_str(&label);
                    k.render(out, indent + label.len());
                    out.push_str(" => ");
                    x.render(out, indent + label.len() + 4);
                }
            }
            Value::Attributed(_, v) => v.render(out, indent),
        }
    }
}

fn pairs_json(pairs: &[(Value, Value)]) -> Json {
    Json::Array(
        pairs
            .iter()
            .map(|(k, v)| Json::Array(vec![k.to_json(), v.to_json()]))
            .collect(),
    )
}

/// The attributes of an attributed reply, if any, as JSON.
pub fn attributes_json(v: &Value) -> Option<Json> {
    match v {
        Value::Attributed(attrs, _) => Some(pairs_json(attrs)),
        _ => None,
    }
}

/// Longest string shown in the text rendering; the JSON has it all.
const TEXT_MAX: usize = 200;

/// A double-quoted, escaped string, as redis-cli shows bulk strings.
pub fn quote(b: &[u8], out: &mut String) {
    out.push('"');
    for &c in b.iter().take(TEXT_MAX) {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    if b.len() > TEXT_MAX {
        out.push_str(&format!("... ({} bytes)", b.len()));
    }
}

/// A command argument: bare when it is a plain word, quoted otherwise.
pub fn word(b: &[u8], out: &mut String) {
    let plain = !b.is_empty()
        && b.len() <= TEXT_MAX
        && b.iter()
            .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\');
    if plain {
        out.push_str(&String::from_utf8_lossy(b));
    } else {
        quote(b, out);
    }
}

/// The JSON object of a request record.
pub fn request_json(words: &[&[u8]], inline: bool) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("role".into(), "request".into());
    let command = words
        .first()
        .map(|w| text_of(w).to_ascii_uppercase())
        .unwrap_or_default();
    m.insert("command".into(), command.into());
    m.insert(
        "args".into(),
        Json::Array(
            words
                .iter()
                .skip(1)
                .map(|w| Json::String(text_of(w)))
                .collect(),
        ),
    );
    if inline {
        m.insert("inline".into(), true.into());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Value> {
        let mut v = Vec::new();
        while let Some((x, n)) = parse(buf).unwrap() {
            v.push(x);
            buf = &buf[n..];
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        v
    }

    #[test]
    fn resp2_types() {
        let v = all(b"+OK\r\n-ERR no\r\n:42\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n*0\r\n$0\r\n\r\n");
        assert_eq!(
            v,
            vec![
                Value::Simple(b"OK".to_vec()),
                Value::Error(b"ERR no".to_vec()),
                Value::Integer(42),
                Value::Bulk(Some(b"foo".to_vec())),
                Value::Bulk(None),
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"a".to_vec())),
                    Value::Integer(1)
                ])),
                Value::Array(None),
                Value::Array(Some(vec![])),
                Value::Bulk(Some(vec![])),
            ]
        );
    }

    #[test]
    fn resp3_types() {
        let v = all(b"_\r\n#t\r\n,3.5\r\n,inf\r\n(123456789012345678901234567890\r\n!3\r\nERR\r\n=7\r\ntxt:abc\r\n%1\r\n+k\r\n:1\r\n~1\r\n+x\r\n>2\r\n+message\r\n+hi\r\n|1\r\n+ttl\r\n:5\r\n+v\r\n");
        assert_eq!(v.len(), 11);
        assert_eq!(v[2].to_json(), json!(3.5));
        assert_eq!(v[3].to_json(), json!("inf"));
        assert_eq!(
            v[6],
            Value::Verbatim {
                format: "txt".into(),
                text: b"abc".to_vec()
            }
        );
        assert_eq!(v[7].to_json(), json!([["k", 1]]));
        assert_eq!(v[10].to_json(), json!("v"));
        assert_eq!(attributes_json(&v[10]), Some(json!([["ttl", 5]])));
    }

    #[test]
    fn every_split_point_is_incomplete_then_whole() {
        let msg = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$11\r\nhello world\r\n";
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (v, n) = parse(msg).unwrap().unwrap();
        assert_eq!(n, msg.len());
        let words = v.as_command().unwrap();
        assert_eq!(words, vec![&b"SET"[..], b"hello", b"hello world"]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"$-5\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nfooXX",
            b"#x\r\n",
            b"?\r\n",
            b",notanumber\r\n",
            b"*-2\r\n",
            b"(12a\r\n",
            b"=2\r\nab\r\n",
            b"$99999999999999999999\r\n",
            b"$9223372036854775807\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn huge_counts_do_not_allocate_up_front() {
        // Claims 2^40 elements but carries two: incomplete, and cheap.
        assert_eq!(parse(b"*1099511627776\r\n:1\r\n:2\r\n").unwrap(), None);
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse_inline(b"PING").unwrap(), None);
        let (w, n) = parse_inline(b"SET  a b\r\nGET a\r\n").unwrap().unwrap();
        assert_eq!(w, vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(n, 10);
    }

    #[test]
    fn rendering_like_redis_cli() {
        let (v, _) = parse(b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n")
            .unwrap()
            .unwrap();
        let mut s = String::new();
        v.render(&mut s, 0);
        assert_eq!(s, "1) \"a\"\n2) 1) (integer) 1\n   2) (nil)");
        let mut s = String::new();
        word(b"hello world", &mut s);
        s.push(' ');
        word(b"plain", &mut s);
        s.push(' ');
        word(b"\xff\x00", &mut s);
        assert_eq!(s, "\"hello world\" plain \"\\xff\\x00\"");
        assert_eq!(text_of(b"ok\xffok"), "ok\\xffok");
    }

    /// Mangled real messages and random bytes: errors or "need more", never a panic.
    #[test]
    fn garbage_never_panics() {
        let seed: &[u8] = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n%1\r\n+k\r\n|1\r\n+a\r\n:1\r\n~2\r\n,1.5\r\n=7\r\ntxt:abc\r\n";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut buf = seed.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = next() as u8;
            }
            let cut = (next() % (buf.len() as u64 + 1)) as usize;
            let mut rest = &buf[..cut];
            while let Ok(Some((v, n))) = parse(rest) {
                let _ = v.to_json();
                let mut s = String::new();
                v.render(&mut s, 0);
                rest = &rest[n..];
            }
            let _ = parse_inline(&buf);
            let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = parse(&random);
        }
    }
}
