//! Message heads (RFC 9112 §2–5): where a head ends, its start line, its
//! header fields, and what the fields that frame a message say.
//!
//! Everything works in place on the bytes as captured: a head is validated once
//! here, kept as the captured bytes, and split into fields again only when a
//! sink writes it.

use std::borrow::Cow;
use std::ops::Range;

use memchr::memchr;

/// Which kind of message a head starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
        }
    }
}

/// Where the scan for the end of a head (or trailer section) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The section ends just before this offset (after its empty line).
    Complete(usize),
    /// No empty line yet; scanning may resume at this offset (the start of
    /// the line not yet ended).
    Incomplete(usize),
    /// A line is longer than allowed.
    LineTooLong,
}

/// Finds the empty line that ends a section of lines in `buf`, resuming at
/// `line_start` (which must be the start of a line, and not the section's
/// first: a section's first line is never empty). Lines end in LF, with or
/// without CR (RFC 9112 §2.2 lets a recipient accept a bare LF).
pub fn scan(buf: &[u8], mut line_start: usize, max_line: usize) -> Scan {
    loop {
        let Some(i) = memchr(b'\n', &buf[line_start..]) else {
            return if buf.len() - line_start > max_line {
                Scan::LineTooLong
            } else {
                Scan::Incomplete(line_start)
            };
        };
        if i > max_line {
            return Scan::LineTooLong;
        }
        let nl = line_start + i;
        if line_start > 0 && (i == 0 || (i == 1 && buf[line_start] == b'\r')) {
            return Scan::Complete(nl + 1);
        }
        line_start = nl + 1;
    }
}

/// Like [`scan`] for a section that may be empty (a trailer section): an
/// empty line at `0` ends it at once.
pub fn scan_section(buf: &[u8], line_start: usize, max_line: usize) -> Scan {
    if line_start == 0 {
        match buf {
            [b'\n', ..] => return Scan::Complete(1),
            [b'\r', b'\n', ..] => return Scan::Complete(2),
            [] | [b'\r'] => return Scan::Incomplete(0),
            _ => {}
        }
    }
    scan(buf, line_start, max_line)
}

/// One line without its line ending.
fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// RFC 9110 §5.6.2 token characters.
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v
        && is_ows(*first)
    {
        v = rest;
    }
    while let [rest @ .., last] = v
        && is_ows(*last)
    {
        v = rest;
    }
    v
}

/// `HTTP/1.x`: the minor version, if `v` is an HTTP/1 version.
fn http1_version(v: &[u8]) -> Result<u8, &'static str> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Ok(minor - b'0')
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err("not HTTP/1")
        }
        _ => Err("no HTTP version"),
    }
}

/// A parsed start line; ranges index the head's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Request {
        method: Range<usize>,
        target: Range<usize>,
        minor: u8,
    },
    Response {
        minor: u8,
        status: u16,
        reason: Range<usize>,
    },
}

/// Parses a start line (`line` without its line ending, at `at` in the head).
pub fn start_line(line: &[u8], at: usize) -> Result<Start, String> {
    if line.starts_with(b"HTTP/") {
        let sp = memchr(b' ', line).ok_or("status line without a status code")?;
        let minor = http1_version(&line[..sp]).map_err(|e| format!("status line: {e}"))?;
        let rest = &line[sp + 1..];
        let code = rest.get(..3).ok_or("status line without a status code")?;
        if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
            return Err(format!(
                "status code `{}` is not three digits",
                String::from_utf8_lossy(&rest[..rest.len().min(16)])
            ));
        }
        let status = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        if status < 100 {
            return Err(format!("status code {status} is below 100"));
        }
        let reason_at = at + sp + 1 + rest.len().min(4);
        if rest[rest.len().min(4)..]
            .iter()
            .any(|&b| b < 0x20 && b != b'\t')
        {
            return Err("reason phrase holds a control character".into());
        }
        return Ok(Start::Response {
            minor,
            status,
            reason: reason_at..at + line.len(),
        });
    }
    let sp1 = memchr(b' ', line).ok_or("request line without spaces")?;
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!(
            "method `{}` is not a token",
            String::from_utf8_lossy(&method[..method.len().min(32)])
        ));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr(b' ', rest).ok_or("request line without an HTTP version")?;
    let target = &rest[..sp2];
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err("request target is empty or holds a control character".into());
    }
    let minor = http1_version(&rest[sp2 + 1..]).map_err(|e| format!("request line: {e}"))?;
    Ok(Start::Request {
        method: at..at + sp1,
        target: at + sp1 + 1..at + sp1 + 1 + sp2,
        minor,
    })
}

/// How a message says its body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
    Deflate,
    /// Something spf does not decompress (br, zstd, several codings).
    Other,
}

impl Encoding {
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Other => "other",
        }
    }
}

/// A complete, valid head and what its fields say about the message.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub kind: Option<Kind>,
    /// Bytes of the head, its final empty line included.
    pub len: usize,
    pub start: Option<Start>,
    pub content_length: Option<u64>,
    /// A Transfer-Encoding field was present.
    pub transfer_encoding: bool,
    /// ... and its last coding is `chunked`.
    pub chunked: bool,
    pub connection_close: bool,
    pub connection_upgrade: bool,
    /// The first protocol of an Upgrade field.
    pub upgrade: Option<Range<usize>>,
    pub host: Option<Range<usize>>,
    pub expect_continue: bool,
    /// Content-Type says text a person can read (text/*, JSON, XML, forms).
    pub textual: bool,
    /// Content-Type is one of Docker's hijacked-stream types.
    pub docker_stream: bool,
    pub encoding: Encoding,
    /// Header fields, and their size as RFC 9113 counts it (name + value + 32).
    pub fields: usize,
    pub list_size: usize,
}

impl Head {
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Some(Start::Response { status, .. }) => Some(status),
            _ => None,
        }
    }
}

/// Why a head is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub code: &'static str,
    pub message: String,
}

impl HeadError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        HeadError {
            code,
            message: message.into(),
        }
    }
}

/// Bounds on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub list_size: usize,
    pub fields: usize,
}

/// Parses a complete head `h` (as [`scan`] delimited it).
pub fn head(h: &[u8], lim: HeadLimits) -> Result<Head, HeadError> {
    let first_nl = memchr(b'\n', h).ok_or_else(|| HeadError::new("BAD_START_LINE", "no line"))?;
    let start =
        start_line(trim_eol(&h[..first_nl]), 0).map_err(|m| HeadError::new("BAD_START_LINE", m))?;
    let mut head = Head {
        kind: Some(match start {
            Start::Request { .. } => Kind::Request,
            Start::Response { .. } => Kind::Response,
        }),
        len: h.len(),
        start: Some(start),
        ..Head::default()
    };
    fields(h, first_nl + 1, lim, &mut head)?;
    Ok(head)
}

/// Parses the field lines of `h` from `from` up to its empty line into
/// `head`; also used for trailer sections.
pub fn fields(h: &[u8], from: usize, lim: HeadLimits, head: &mut Head) -> Result<(), HeadError> {
    let mut at = from;
    let mut line_no = 1;
    while at < h.len() {
        let nl = memchr(b'\n', &h[at..]).map_or(h.len(), |i| at + i);
        let line = trim_eol(&h[at..nl]);
        let line_at = at;
        at = nl + 1;
        line_no += 1;
        if line.is_empty() {
            break;
        }
        if is_ows(line[0]) {
            // obs-fold (RFC 9112 §5.2): a continuation of the previous value.
            if head.fields == 0 {
                return Err(HeadError::new(
                    "BAD_HEADER",
                    format!("line {line_no} continues a header field, but none came before it"),
                ));
            }
            head.list_size += line.len();
            continue;
        }
        let Some(colon) = memchr(b':', line) else {
            return Err(HeadError::new(
                "BAD_HEADER",
                format!(
                    "header line {line_no} has no colon: `{}`",
                    String::from_utf8_lossy(&line[..line.len().min(64)])
                ),
            ));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::new(
                "BAD_HEADER",
                format!(
                    "header line {line_no}: field name `{}` is not a token",
                    String::from_utf8_lossy(&name[..name.len().min(64)])
                ),
            ));
        }
        let raw = &line[colon + 1..];
        let value = trim_ows(raw);
        let value_at = line_at + (value.as_ptr() as usize - line.as_ptr() as usize);
        head.fields += 1;
        head.list_size += name.len() + value.len() + 32;
        if head.fields > lim.fields {
            return Err(HeadError::new(
                "LIMIT",
                format!(
                    "more header fields than limits.header_fields ({})",
                    lim.fields
                ),
            ));
        }
        if head.list_size > lim.list_size {
            return Err(HeadError::new(
                "LIMIT",
                format!(
                    "header list larger than limits.header_list_size ({})",
                    lim.list_size
                ),
            ));
        }
        framing_field(name, value, value_at, head)?;
    }
    Ok(())
}

/// Notes what one field says about framing, upgrades and content.
fn framing_field(
    name: &[u8],
    value: &[u8],
    value_at: usize,
    head: &mut Head,
) -> Result<(), HeadError> {
    // Dispatch on length first: most fields are none of these.
    match name.len() {
        4 if name.eq_ignore_ascii_case(b"host") => {
            head.host = Some(value_at..value_at + value.len());
        }
        6 if name.eq_ignore_ascii_case(b"expect") => {
            head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        7 if name.eq_ignore_ascii_case(b"upgrade") => {
            let first = value.split(|&b| b == b',').next().map(trim_ows);
            if let Some(p) = first.filter(|p| !p.is_empty()) {
                let off = p.as_ptr() as usize - value.as_ptr() as usize;
                head.upgrade = Some(value_at + off..value_at + off + p.len());
            }
        }
        10 if name.eq_ignore_ascii_case(b"connection") => {
            for opt in value.split(|&b| b == b',').map(trim_ows) {
                head.connection_close |= opt.eq_ignore_ascii_case(b"close");
                head.connection_upgrade |= opt.eq_ignore_ascii_case(b"upgrade");
            }
        }
        12 if name.eq_ignore_ascii_case(b"content-type") => {
            let ct = value.to_ascii_lowercase();
            let mime = ct.split(|&b| b == b';').next().map(trim_ows).unwrap_or(b"");
            head.textual = mime.starts_with(b"text/")
                || mime.ends_with(b"json")
                || mime.ends_with(b"xml")
                || mime.ends_with(b"javascript")
                || mime.ends_with(b"yaml")
                || mime == b"application/x-www-form-urlencoded";
            head.docker_stream = mime == b"application/vnd.docker.raw-stream"
                || mime == b"application/vnd.docker.multiplexed-stream";
        }
        14 if name.eq_ignore_ascii_case(b"content-length") => {
            for v in value.split(|&b| b == b',').map(trim_ows) {
                let n = decimal(v).ok_or_else(|| {
                    HeadError::new(
                        "BAD_CONTENT_LENGTH",
                        format!(
                            "Content-Length `{}` is not a number",
                            String::from_utf8_lossy(&value[..value.len().min(32)])
                        ),
                    )
                })?;
                if head.content_length.is_some_and(|c| c != n) {
                    return Err(HeadError::new(
                        "BAD_CONTENT_LENGTH",
                        "conflicting Content-Length values",
                    ));
                }
                head.content_length = Some(n);
            }
        }
        16 if name.eq_ignore_ascii_case(b"content-encoding") => {
            let mut codings = value
                .split(|&b| b == b',')
                .map(trim_ows)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
            let enc = match (codings.next(), codings.next()) {
                (None, _) => Encoding::Identity,
                (Some(c), None) if c.eq_ignore_ascii_case(b"gzip") => Encoding::Gzip,
                (Some(c), None) if c.eq_ignore_ascii_case(b"x-gzip") => Encoding::Gzip,
                (Some(c), None) if c.eq_ignore_ascii_case(b"deflate") => Encoding::Deflate,
                _ => Encoding::Other,
            };
            // Several Content-Encoding fields are one list.
            head.encoding = match (head.encoding, enc) {
                (Encoding::Identity, e) | (e, Encoding::Identity) => e,
                _ => Encoding::Other,
            };
        }
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
            head.transfer_encoding = true;
            if let Some(last) = value.rsplit(|&b| b == b',').map(trim_ows).next() {
                head.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        }
        _ => {}
    }
    Ok(())
}

/// A decimal number of at most 19 digits (so it fits in a u64).
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')))
}

/// The header fields of a valid head (or trailer section) from `from` on, in
/// order, with their original case; a folded value is joined with a space.
pub fn field_lines(h: &[u8], from: usize) -> FieldLines<'_> {
    FieldLines { h, at: from }
}

pub struct FieldLines<'a> {
    h: &'a [u8],
    at: usize,
}

impl<'a> Iterator for FieldLines<'a> {
    type Item = (&'a [u8], Cow<'a, [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.at >= self.h.len() {
                return None;
            }
            let nl = memchr(b'\n', &self.h[self.at..]).map_or(self.h.len(), |i| self.at + i);
            let line = trim_eol(&self.h[self.at..nl]);
            self.at = nl + 1;
            if line.is_empty() {
                self.at = self.h.len();
                return None;
            }
            let Some(colon) = memchr(b':', line) else {
                // A stray continuation line (only if validation was skipped).
                continue;
            };
            let name = &line[..colon];
            let mut value = Cow::Borrowed(trim_ows(&line[colon + 1..]));
            // Folded continuation lines belong to this value.
            while self.at < self.h.len() && is_ows(self.h[self.at]) {
                let nl = memchr(b'\n', &self.h[self.at..]).map_or(self.h.len(), |i| self.at + i);
                let more = trim_ows(trim_eol(&self.h[self.at..nl]));
                self.at = nl + 1;
                let v = value.to_mut();
                if !more.is_empty() {
                    v.push(b' ');
                    v.extend_from_slice(more);
                }
            }
            return Some((name, value));
        }
    }
}

/// Where the first line ends (offset after its LF).
pub fn first_line_end(h: &[u8]) -> usize {
    memchr(b'\n', h).map_or(h.len(), |i| i + 1)
}

/// The first line without its line ending.
pub fn first_line(h: &[u8]) -> &[u8] {
    trim_eol(&h[..memchr(b'\n', h).unwrap_or(h.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: HeadLimits = HeadLimits {
        list_size: 1 << 20,
        fields: 100,
    };

    fn parse(s: &str) -> Result<Head, HeadError> {
        let b = s.as_bytes();
        match scan(b, 0, 1 << 16) {
            Scan::Complete(n) => {
                assert_eq!(n, b.len(), "whole input is one head");
                head(b, LIM)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scans_to_the_empty_line_with_crlf_or_lf() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0, 100),
            Scan::Complete(24)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\nA: b\n\nrest", 0, 100),
            Scan::Complete(21)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nA: b\r\n", 0, 100),
            Scan::Incomplete(22)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nA: b\r\n\r", 22, 100),
            Scan::Incomplete(22)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 22, 100),
            Scan::Complete(24)
        );
        assert_eq!(scan(&[b'a'; 50], 0, 40), Scan::LineTooLong);
        assert_eq!(scan_section(b"\r\nX", 0, 10), Scan::Complete(2));
        assert_eq!(scan_section(b"\r", 0, 10), Scan::Incomplete(0));
        assert_eq!(scan_section(b"A: b\r\n\r\n", 0, 10), Scan::Complete(8));
    }

    #[test]
    fn request_head_and_framing_fields() {
        let h = parse(
            "POST /v1.43/containers/x/attach?stream=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 12\r\n\
             Connection: Upgrade\r\nUpgrade: tcp\r\nExpect: 100-continue\r\n\
             Content-Type: application/json; charset=utf-8\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.kind, Some(Kind::Request));
        assert_eq!(h.content_length, Some(12));
        assert!(h.connection_upgrade && h.expect_continue && h.textual);
        let b = "POST /v1.43/containers/x/attach?stream=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 12\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n";
        assert_eq!(&b[h.upgrade.clone().unwrap()], "tcp");
        assert_eq!(&b[h.host.clone().unwrap()], "docker");
        assert_eq!(h.fields, 6);
    }

    #[test]
    fn status_lines() {
        let h = parse("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h.status(), Some(204));
        let h = parse("HTTP/1.0 200\r\n\r\n").unwrap();
        assert_eq!(h.status(), Some(200));
        let h = parse("HTTP/1.1 101 \r\nUpgrade: h2c\r\n\r\n").unwrap();
        assert_eq!(h.status(), Some(101));
        for bad in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 099 x\r\n\r\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, "BAD_START_LINE", "{bad}");
        }
    }

    #[test]
    fn bad_heads_say_what_is_wrong() {
        let e = parse("GET / HTTP/1.1\r\nno colon here\r\n\r\n").unwrap_err();
        assert!(e.message.contains("no colon"), "{e:?}");
        let e = parse("G@T / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(e.message.contains("not a token"), "{e:?}");
        let e = parse("PRI * HTTP/2.0\r\n\r\n").unwrap_err();
        assert!(e.message.contains("not HTTP/1"), "{e:?}");
        let e =
            parse("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap_err();
        assert_eq!(e.code, "BAD_CONTENT_LENGTH");
        let e = parse("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap_err();
        assert_eq!(e.code, "BAD_CONTENT_LENGTH");
        let e = parse("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").unwrap_err();
        assert_eq!(e.code, "BAD_HEADER");
        // The same value twice is one length.
        let h =
            parse("GET / HTTP/1.1\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n").unwrap();
        assert_eq!(h.content_length, Some(5));
    }

    #[test]
    fn limits_on_fields() {
        let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let lim = HeadLimits {
            list_size: 1 << 20,
            fields: 10,
        };
        let e = head(text.as_bytes(), lim).unwrap_err();
        assert!(e.message.contains("limits.header_fields (10)"), "{e:?}");
        let lim = HeadLimits {
            list_size: 100,
            fields: 100,
        };
        let e = head(text.as_bytes(), lim).unwrap_err();
        assert!(e.message.contains("limits.header_list_size (100)"), "{e:?}");
    }

    #[test]
    fn transfer_and_content_codings() {
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Encoding: gzip\r\n\r\n",
        )
        .unwrap();
        assert!(h.transfer_encoding && h.chunked);
        assert_eq!(h.encoding, Encoding::Gzip);
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap();
        assert!(h.transfer_encoding && !h.chunked);
        let h = parse("HTTP/1.1 200 OK\r\nContent-Encoding: gzip, br\r\n\r\n").unwrap();
        assert_eq!(h.encoding, Encoding::Other);
        let h = parse(
            "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: deflate\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.encoding, Encoding::Deflate);
    }

    #[test]
    fn field_lines_keep_order_case_and_join_folds() {
        let b = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n  two\r\nx-lower:\tv \r\n\r\n";
        let h = head(b, LIM).unwrap();
        assert_eq!(h.fields, 3);
        let got: Vec<(String, String)> = field_lines(b, first_line_end(b))
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.into_owned()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Host".to_string(), "a".to_string()),
                ("X-Long".into(), "one two".into()),
                ("x-lower".into(), "v".into())
            ]
        );
        assert_eq!(first_line(b), b"GET / HTTP/1.1");
    }
}
