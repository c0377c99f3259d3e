//! Where HTTP/1 messages start: at a connection's first bytes (how sure is it
//! HTTP/1?), and where decoding joined a connection midway or lost its place
//! (where is the next request or status line?).
//!
//! Finding a start inside arbitrary bytes is a guess, so it asks more than the
//! grammar does: an upper-case method of at most 24 letters, a target that
//! begins like a real one, and `HTTP/1.x` ending the line; a status line with
//! a three-digit code.

use memchr::memchr;
use memchr::memmem;

use super::parse::{Kind, start_line};

/// Methods recognised where a request line follows other bytes on its line
/// (a body that did not end with a newline).
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
    b"MKCALENDAR",
];

const MAX_METHOD: usize = 24;

fn is_method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `line` (without its line ending) is a start line worth trusting,
/// and of which kind.
pub fn plausible(line: &[u8]) -> Option<Kind> {
    if let Some(rest) = line.strip_prefix(b"HTTP/1.") {
        let ok = rest.len() >= 5
            && rest[0].is_ascii_digit()
            && rest[1] == b' '
            && rest[2..5].iter().all(u8::is_ascii_digit)
            && rest[2] != b'0'
            && (rest.len() == 5 || rest[5] == b' ')
            && !rest[5.min(rest.len())..]
                .iter()
                .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f);
        return ok.then_some(Kind::Response);
    }
    let sp = memchr(b' ', line)?;
    let method = &line[..sp];
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_method_char(b))
    {
        return None;
    }
    let rest = &line[sp + 1..];
    let sp2 = memchr(b' ', rest)?;
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    let target_ok = match target.first() {
        Some(b'/' | b'*') => true,
        Some(b) => b.is_ascii_alphanumeric(),
        None => false,
    } && !target.iter().any(|&b| b <= 0x20 || b == 0x7f);
    let version_ok =
        version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    (target_ok && version_ok).then_some(Kind::Request)
}

/// What a search for a message start found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A start line of this kind begins at this offset.
    At(usize, Kind),
    /// None yet; bytes before `keep_from` cannot be part of one and may go.
    NotYet { keep_from: usize },
}

/// Looks for the first plausible start line in `buf` (of kind `want`, if
/// given); lines longer than `max_line` are not considered. `starts_line`
/// says whether `buf` begins at the start of a line (else a request line
/// found at its very beginning must have a known method).
pub fn find_start(buf: &[u8], want: Option<Kind>, max_line: usize, starts_line: bool) -> Found {
    for i in memmem::find_iter(buf, b"HTTP/1.") {
        let line_start = buf[..i]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let Some(eol) = memchr(b'\n', &buf[i..]).map(|e| i + e) else {
            // This line is not complete: whatever starts on it may yet be one.
            let keep = line_start.max(i.saturating_sub(max_line));
            return Found::NotYet { keep_from: keep };
        };
        if want != Some(Kind::Request) && plausible(trim_eol(&buf[i..eol])) == Some(Kind::Response)
        {
            return Found::At(i, Kind::Response);
        }
        if want != Some(Kind::Response)
            && let Some(start) = request_start(buf, line_start, i, max_line, starts_line)
            && plausible(trim_eol(&buf[start..eol])) == Some(Kind::Request)
        {
            return Found::At(start, Kind::Request);
        }
    }
    // Keep what may be the beginning of a start line still to come.
    let line_start = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    Found::NotYet {
        keep_from: line_start.max(buf.len().saturating_sub(max_line)),
    }
}

/// Where the request line that ends with the `HTTP/1.` at `version` would
/// begin: the target and method before it, the method trimmed to a known one
/// when other bytes come before it on the line.
fn request_start(
    buf: &[u8],
    line_start: usize,
    version: usize,
    max_line: usize,
    starts_line: bool,
) -> Option<usize> {
    if version < line_start + 4 || buf[version - 1] != b' ' {
        return None;
    }
    let target_end = version - 1;
    let lowest = line_start.max(target_end.saturating_sub(max_line));
    let sp = buf[lowest..target_end].iter().rposition(|&b| b == b' ')? + lowest;
    let mut k = sp;
    while k > line_start && sp - k < MAX_METHOD && is_method_char(buf[k - 1]) {
        k -= 1;
    }
    if k == sp {
        return None;
    }
    // A known method, or one glued to the end of other bytes; else (at a
    // line start only) any upper-case word.
    let run = &buf[k..sp];
    KNOWN_METHODS
        .iter()
        .filter(|m| run.ends_with(m))
        .map(|m| sp - m.len())
        .min()
        .or((k == line_start && (k > 0 || starts_line)).then_some(k))
}

/// Whether `b`, the beginning of a line not yet ended, could still become a
/// start line: lets a decoder give up on junk early instead of waiting for a
/// line end that may be far away.
pub fn could_start(b: &[u8]) -> bool {
    const STATUS: &[u8] = b"HTTP/1.";
    if b.len() <= STATUS.len() && STATUS.starts_with(b) {
        return true;
    }
    if let Some(rest) = b.strip_prefix(STATUS) {
        return rest.iter().enumerate().all(|(i, &c)| match i {
            0 => c.is_ascii_digit(),
            1 => c == b' ',
            2..=4 => c.is_ascii_digit(),
            _ => c >= 0x20 || c == b'\t' || c == b'\r',
        });
    }
    let Some(sp) = memchr(b' ', b) else {
        return b.len() <= MAX_METHOD && b.iter().all(|&c| super::parse::is_tchar(c));
    };
    if sp == 0 || sp > MAX_METHOD || !b[..sp].iter().all(|&c| super::parse::is_tchar(c)) {
        return false;
    }
    let rest = &b[sp + 1..];
    let (target, version) = match memchr(b' ', rest) {
        Some(sp2) => (&rest[..sp2], Some(&rest[sp2 + 1..])),
        None => (rest, None),
    };
    if target.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return false;
    }
    match version {
        None => true,
        Some(v) => {
            const V: &[u8] = b"HTTP/1.";
            let n = v.len().min(V.len());
            v[..n] == V[..n]
                && v.get(7).is_none_or(u8::is_ascii_digit)
                && v.get(8).is_none_or(|&c| c == b'\r')
                && v.len() <= 9
        }
    }
}

/// How sure it is (0–100) that a stream whose first bytes are `data` carries
/// HTTP/1: a start line right at the beginning, or (joined midway) a
/// plausible one further on.
pub fn confidence(data: &[u8]) -> u8 {
    // Empty lines before a request line are allowed (RFC 9112 §2.2).
    let lead = data
        .iter()
        .take(8)
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let data = &data[lead..];
    let window = &data[..data.len().min(64 << 10)];
    if let Some(eol) = memchr(b'\n', window) {
        let line = trim_eol(&window[..eol]);
        match plausible(line) {
            Some(Kind::Response) => return 95,
            Some(Kind::Request) => {
                let sp = memchr(b' ', line).unwrap_or(0);
                return if KNOWN_METHODS.contains(&&line[..sp]) {
                    95
                } else {
                    85
                };
            }
            None if start_line(line, 0).is_ok() => return 70,
            None => {}
        }
    }
    // A request line still arriving: a known method and an origin-form
    // target are enough to go on.
    if memchr(b'\n', window).is_none()
        && let Some(sp) = memchr(b' ', &window[..window.len().min(MAX_METHOD + 1)])
        && KNOWN_METHODS.contains(&&window[..sp])
        && window.get(sp + 1) == Some(&b'/')
        && could_start(window)
    {
        return 60;
    }
    match find_start(window, None, 8 << 10, true) {
        Found::At(..) => 60,
        Found::NotYet { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_lines() {
        assert_eq!(plausible(b"GET /x HTTP/1.1"), Some(Kind::Request));
        assert_eq!(plausible(b"CONNECT host:443 HTTP/1.1"), Some(Kind::Request));
        assert_eq!(plausible(b"OPTIONS * HTTP/1.1"), Some(Kind::Request));
        assert_eq!(plausible(b"HTTP/1.1 200 OK"), Some(Kind::Response));
        assert_eq!(plausible(b"HTTP/1.0 404"), Some(Kind::Response));
        assert_eq!(plausible(b"get /x HTTP/1.1"), None);
        assert_eq!(plausible(b"PRI * HTTP/2.0"), None);
        assert_eq!(plausible(b"GET  /x HTTP/1.1"), None);
        assert_eq!(plausible(b"HTTP/1.1 20 OK"), None);
        assert_eq!(plausible(b"HTTP/1.1 200 O\x01K"), None);
    }

    #[test]
    fn finds_starts_glued_to_bodies_and_waits_for_unfinished_lines() {
        let b = b"xx}GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(find_start(b, None, 1000, true), Found::At(3, Kind::Request));
        // An upper-case body end glued to the method: the known method wins.
        let b = b"ABCPOST /a HTTP/1.1\r\n";
        assert_eq!(find_start(b, None, 1000, true), Found::At(3, Kind::Request));
        // An unknown method only where a line starts.
        let b = b"ET /a HTTP/1.1\r\n";
        assert_eq!(find_start(b, None, 1000, true), Found::At(0, Kind::Request));
        assert_eq!(
            find_start(b, None, 1000, false),
            Found::NotYet { keep_from: 16 }
        );
        let b = b"x\nBREW /a HTTP/1.1\r\n";
        assert_eq!(
            find_start(b, None, 1000, false),
            Found::At(2, Kind::Request)
        );
        let b = b"\x00\x01binary\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(
            find_start(b, None, 1000, true),
            Found::At(10, Kind::Response)
        );
        assert_eq!(
            find_start(b, Some(Kind::Request), 1000, true),
            Found::NotYet { keep_from: 27 }
        );
        let b = b"junk\nGET /a HTT";
        assert_eq!(
            find_start(b, None, 1000, true),
            Found::NotYet { keep_from: 5 }
        );
        let b = b"junk\nGET /a HTTP/1.1";
        assert_eq!(
            find_start(b, None, 1000, true),
            Found::NotYet { keep_from: 5 }
        );
        // A mention of HTTP/1.1 inside text is not a start line.
        let b = b"we speak HTTP/1.1 here\n";
        assert_eq!(
            find_start(b, None, 1000, true),
            Found::NotYet { keep_from: 23 }
        );
        // Long lines keep only their tail.
        let b = vec![b'a'; 5000];
        assert_eq!(
            find_start(&b, None, 100, true),
            Found::NotYet { keep_from: 4900 }
        );
    }

    #[test]
    fn could_start_rejects_junk_early() {
        for ok in [
            &b""[..],
            b"G",
            b"GET",
            b"GET /",
            b"GET /x HTTP/1",
            b"GET /x HTTP/1.1\r",
            b"HTT",
            b"HTTP/1.1 2",
            b"HTTP/1.1 200 O",
        ] {
            assert!(could_start(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"\x16\x03\x01"[..],
            b"GET /x\x00",
            b"GET /x HTTP/2",
            b"HTTP/1.1 x",
            b"{\"json\": 1",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!could_start(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn confidence_of_first_bytes() {
        assert_eq!(confidence(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 95);
        assert_eq!(confidence(b"\r\nPOST / HTTP/1.1\r\n"), 95);
        assert_eq!(confidence(b"HTTP/1.1 200 OK\r\n"), 95);
        assert_eq!(confidence(b"BREW /pot HTTP/1.1\r\n"), 85);
        assert_eq!(confidence(b"brew /pot HTTP/1.1\r\n"), 70);
        assert_eq!(confidence(b"\"tail of a body\"}GET / HTTP/1.1\r\n"), 60);
        assert_eq!(confidence(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0);
        assert_eq!(confidence(b"*1\r\n$4\r\nPING\r\n"), 0);
        assert_eq!(confidence(b"GET / HT"), 60);
        assert_eq!(confidence(b"GET /x\x00"), 0);
        assert_eq!(confidence(b"GE"), 0);
    }
}
