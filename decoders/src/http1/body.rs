//! Message bodies as RFC 9112 §6–7 frames them: a length, chunked transfer
//! coding (with chunk extensions and a trailer section), or everything until
//! the connection closes.
//!
//! [`Body::next`] looks at the bytes that continue a body and says what comes
//! first: data, framing, the trailers, the end, or that it needs more bytes.
//! It never holds bytes itself; the caller keeps what was not consumed and
//! offers it again with more.

use memchr::memchr;

use super::parse::{self, Scan};

/// How a body is delimited, as the head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a HEAD response, 1xx, 204, 304, or a request without length).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (a response without length).
    UntilClose,
}

impl Framing {
    pub const fn as_str(self) -> &'static str {
        match self {
            Framing::None => "none",
            Framing::Length(_) => "length",
            Framing::Chunked => "chunked",
            Framing::UntilClose => "until-close",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        left: u64,
    },
    Size,
    Data {
        left: u64,
    },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk; `scanned` is where the line
    /// scan resumes.
    Trailers {
        scanned: usize,
    },
    UntilClose,
    Done,
}

/// What comes first in the bytes offered to [`Body::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `len` bytes of body data.
    Data { len: usize },
    /// A chunk-size line of `len` bytes; its extensions, if any, are at
    /// `ext` within it.
    Chunk {
        len: usize,
        size: u64,
        ext: Option<std::ops::Range<usize>>,
    },
    /// `len` bytes of framing (the CRLF after chunk data).
    Framing { len: usize },
    /// A trailer section of `len` bytes (its empty line included) with at
    /// least one field; the message ends after it.
    Trailers { len: usize },
    /// The message ends after `len` more bytes.
    End { len: usize },
    /// Nothing can be said before more bytes come.
    NeedMore,
}

/// Why a body's framing is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub code: &'static str,
    pub message: String,
}

/// Bounds on a body's framing lines.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub line: usize,
    pub head: parse::HeadLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    state: State,
}

impl Body {
    pub fn new(f: Framing) -> Self {
        let state = match f {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n },
            Framing::Chunked => State::Size,
            Framing::UntilClose => State::UntilClose,
        };
        Body { state }
    }

    /// Body bytes still expected where the framing says how many (the rest of
    /// a length, or of the current chunk's data): a gap no longer than this
    /// can be stepped over without losing track.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Length { left } | State::Data { left } => Some(left),
            State::UntilClose => Some(u64::MAX),
            _ => None,
        }
    }

    /// `n` data bytes were not captured; `n <= data_left()`.
    pub fn skip_data(&mut self, n: u64) {
        self.state = match self.state {
            State::Length { left } if left <= n => State::Done,
            State::Length { left } => State::Length { left: left - n },
            State::Data { left } if left <= n => State::DataEnd,
            State::Data { left } => State::Data { left: left - n },
            other => other,
        };
    }

    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Says what comes first in `input`, the bytes that continue this body.
    pub fn next(&mut self, input: &[u8], lim: BodyLimits) -> Result<Step, BodyError> {
        match self.state {
            State::Done => Ok(Step::End { len: 0 }),
            State::UntilClose if input.is_empty() => Ok(Step::NeedMore),
            State::UntilClose => Ok(Step::Data { len: input.len() }),
            State::Length { .. } | State::Data { .. } if input.is_empty() => Ok(Step::NeedMore),
            State::Length { left } => {
                let len = clamp(left, input.len());
                let left = left - len as u64;
                self.state = if left == 0 {
                    State::Done
                } else {
                    State::Length { left }
                };
                Ok(Step::Data { len })
            }
            State::Data { left } => {
                let len = clamp(left, input.len());
                let left = left - len as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data { left }
                };
                Ok(Step::Data { len })
            }
            State::DataEnd => match input {
                [] | [b'\r'] => Ok(Step::NeedMore),
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Step::Framing { len: 2 })
                }
                [b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Step::Framing { len: 1 })
                }
                _ => Err(BodyError {
                    code: "BAD_CHUNK",
                    message: "chunk data longer than its chunk size (no CRLF after it)".into(),
                }),
            },
            State::Size => self.size_line(input, lim),
            State::Trailers { scanned } => match parse::scan_section(input, scanned, lim.line) {
                Scan::Incomplete(at) => {
                    if input.len() > lim.head.list_size {
                        return Err(limit_error(lim, "trailer section"));
                    }
                    self.state = State::Trailers { scanned: at };
                    Ok(Step::NeedMore)
                }
                Scan::LineTooLong => Err(BodyError {
                    code: "LIMIT",
                    message: format!("trailer line longer than limits.line_length ({})", lim.line),
                }),
                Scan::Complete(len) => {
                    self.state = State::Done;
                    if len <= 2 {
                        return Ok(Step::End { len });
                    }
                    let mut h = parse::Head::default();
                    parse::fields(&input[..len], 0, lim.head, &mut h).map_err(|e| BodyError {
                        code: e.code,
                        message: format!("trailer section: {}", e.message),
                    })?;
                    Ok(Step::Trailers { len })
                }
            },
        }
    }

    /// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1).
    fn size_line(&mut self, input: &[u8], lim: BodyLimits) -> Result<Step, BodyError> {
        let Some(nl) = memchr(b'\n', &input[..input.len().min(lim.line + 1)]) else {
            if input.len() > lim.line {
                return Err(BodyError {
                    code: "LIMIT",
                    message: format!(
                        "chunk-size line longer than limits.line_length ({})",
                        lim.line
                    ),
                });
            }
            if let Some(bad) = input.iter().position(|&b| !size_line_byte(b)) {
                return Err(bad_size(&input[..=bad]));
            }
            return Ok(Step::NeedMore);
        };
        let line = input[..nl].strip_suffix(b"\r").unwrap_or(&input[..nl]);
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return Err(bad_size(line));
        }
        let size = line[..digits]
            .iter()
            .fold(0u64, |a, &d| (a << 4) | u64::from(hex(d)));
        let rest = &line[digits..];
        let ext_at = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let ext = match &rest[ext_at..] {
            [] => None,
            [b';', ..] if rest.iter().all(|&b| b >= 0x20 || b == b'\t') => {
                Some(digits + ext_at..line.len())
            }
            _ => return Err(bad_size(line)),
        };
        self.state = if size == 0 {
            State::Trailers { scanned: 0 }
        } else {
            State::Data { left: size }
        };
        Ok(Step::Chunk {
            len: nl + 1,
            size,
            ext,
        })
    }
}

fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

fn size_line_byte(b: u8) -> bool {
    b >= 0x20 || b == b'\t' || b == b'\r'
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

fn bad_size(line: &[u8]) -> BodyError {
    BodyError {
        code: "BAD_CHUNK",
        message: format!(
            "bad chunk size line `{}`",
            String::from_utf8_lossy(&line[..line.len().min(40)]).escape_debug()
        ),
    }
}

fn limit_error(lim: BodyLimits, what: &str) -> BodyError {
    BodyError {
        code: "LIMIT",
        message: format!(
            "{what} larger than limits.header_list_size ({})",
            lim.head.list_size
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: BodyLimits = BodyLimits {
        line: 64,
        head: parse::HeadLimits {
            list_size: 1024,
            fields: 16,
        },
    };

    /// Runs a body over `input` offered in pieces of `step` bytes, the way a
    /// decoder does; returns the data and what ended it.
    fn run(f: Framing, input: &[u8], step: usize) -> (Vec<u8>, Vec<String>, Option<usize>) {
        let mut b = Body::new(f);
        let mut data = Vec::new();
        let mut notes = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let more = (fed + step).min(input.len());
            held.extend_from_slice(&input[fed..more]);
            fed = more;
            let mut pos = 0;
            loop {
                match b.next(&held[pos..], LIM).unwrap() {
                    Step::Data { len } => {
                        data.extend_from_slice(&held[pos..pos + len]);
                        pos += len;
                    }
                    Step::Chunk { len, ext, .. } => {
                        if let Some(e) = ext {
                            notes.push(String::from_utf8_lossy(&held[pos..][e]).into_owned());
                        }
                        pos += len;
                    }
                    Step::Framing { len } => pos += len,
                    Step::Trailers { len } => {
                        notes.push(String::from_utf8_lossy(&held[pos..pos + len]).into_owned());
                        return (data, notes, Some(fed - held.len() + pos + len));
                    }
                    Step::End { len } => return (data, notes, Some(fed - held.len() + pos + len)),
                    Step::NeedMore => break,
                }
            }
            held.drain(..pos);
            if fed == input.len() {
                return (data, notes, None);
            }
        }
    }

    #[test]
    fn length_bodies() {
        for step in [1, 3, 100] {
            let (d, _, end) = run(Framing::Length(5), b"helloGET", step);
            assert_eq!(d, b"hello");
            assert_eq!(end, Some(5));
        }
        assert_eq!(run(Framing::None, b"x", 1).2, Some(0));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (d, notes, end) = run(Framing::Chunked, wire, step);
            assert_eq!(d, b"hello world", "step {step}");
            assert_eq!(notes, [";name=v", "X-Sum: 1\r\n\r\n"], "step {step}");
            assert_eq!(end, Some(wire.len() - 4));
        }
        let wire = b"A\nabcdefghij\n0\n\nrest";
        let (d, _, end) = run(Framing::Chunked, wire, 4);
        assert_eq!(d, b"abcdefghij");
        assert_eq!(end, Some(16));
    }

    #[test]
    fn broken_chunks_are_errors() {
        let lim = LIM;
        let mut b = Body::new(Framing::Chunked);
        let e = b.next(b"zz\r\n", lim).unwrap_err();
        assert!(e.message.contains("bad chunk size line `zz`"), "{e:?}");
        let mut b = Body::new(Framing::Chunked);
        assert!(b.next(b"12345678901234567\r\n", lim).is_err());
        let mut b = Body::new(Framing::Chunked);
        assert!(b.next(b"5 x\r\n", lim).is_err());
        let mut b = Body::new(Framing::Chunked);
        assert!(
            b.next(b"5\x00", lim).is_err(),
            "junk is refused before the line ends"
        );
        let mut b = Body::new(Framing::Chunked);
        let e = b.next(&[b'1'; 80], lim).unwrap_err();
        assert!(e.message.contains("limits.line_length (64)"), "{e:?}");
        let mut b = Body::new(Framing::Chunked);
        assert!(matches!(
            b.next(b"2\r\n", lim),
            Ok(Step::Chunk { size: 2, .. })
        ));
        assert_eq!(b.next(b"abX", lim), Ok(Step::Data { len: 2 }));
        let e = b.next(b"X", lim).unwrap_err();
        assert!(e.message.contains("longer than its chunk size"), "{e:?}");
        let mut b = Body::new(Framing::Chunked);
        let _ = b.next(b"0\r\n", lim).unwrap();
        let e = b.next(b"no colon\r\n\r\n", lim).unwrap_err();
        assert!(e.message.starts_with("trailer section:"), "{e:?}");
    }

    #[test]
    fn gaps_inside_data_are_stepped_over() {
        let mut b = Body::new(Framing::Length(10));
        assert_eq!(b.next(b"abc", LIM), Ok(Step::Data { len: 3 }));
        assert_eq!(b.data_left(), Some(7));
        b.skip_data(7);
        assert!(b.is_done());
        let mut b = Body::new(Framing::Chunked);
        let _ = b.next(b"4\r\n", LIM).unwrap();
        b.skip_data(4);
        assert_eq!(b.next(b"\r\n0\r\n\r\n", LIM), Ok(Step::Framing { len: 2 }));
        assert_eq!(b.data_left(), None);
    }
}
