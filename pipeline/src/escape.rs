//! Escaping what traced processes wrote before it reaches a person's terminal.
//!
//! Names, paths, headers and payloads come from whoever talks over a socket. Shown
//! as they are, control characters could drive the terminal of whoever runs spf
//! (move the cursor, retitle the window, hide lines), and invisible or direction
//! changing characters could make one name look like another (`U+202E` shows
//! `exe.txt` as `txt.exe`). Two escapers, one for each kind of input:
//!
//! - [`escape_text`] for text that is already a `str` (names, paths, decoded
//!   headers): everything printable stays as it is, anything in
//!   [`is_hidden`] becomes `\u{XXXX}`.
//! - [`escape_bytes`] for raw payload bytes: printable ASCII as is, everything else
//!   as `\xNN`, so its output is ASCII whatever the input.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for characters that must not reach a terminal as they are: control
/// characters (C0, DEL, C1), and the characters that print nothing yet change how
/// the text around them shows: bidirectional controls (`U+202A`–`U+202E`,
/// `U+2066`–`U+2069`, the marks `U+200E`/`U+200F`/`U+061C`), zero-width and other
/// format characters (Unicode category Cf, e.g. `U+200B`–`U+200D`, `U+2060`–`U+2064`,
/// `U+FEFF`, tag characters), line and paragraph separators (`U+2028`, `U+2029`),
/// and the blank Hangul fillers often used to fake an empty name.
pub fn is_hidden(c: char) -> bool {
    matches!(
        c as u32,
        0x00..=0x1f
            | 0x7f..=0x9f
            | 0xad
            | 0x34f
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x115f..=0x1160
            | 0x17b4..=0x17b5
            | 0x180b..=0x180f
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x206f
            | 0x3164
            | 0xfe00..=0xfe0f
            | 0xfeff
            | 0xffa0
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0000..=0xe0fff
    )
}

/// `s` with every [`is_hidden`] character written as `\u{XXXX}` (lowercase hex).
/// Borrows when there is nothing to escape, which is nearly always.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    // Printable ASCII, the common case, needs no look at each character.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(is_hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hidden(c) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escapes arbitrary bytes the way the original tool showed them: printable ASCII
/// as is, `\n` `\r` `\t`, everything else as `\xNN`. With `json` set, the result is
/// also escaped for use inside a JSON string.
pub fn escape_bytes(data: &[u8], json: bool, out: &mut Vec<u8>) {
    let table = if json { &ESCAPE_JSON } else { &ESCAPE_TEXT };
    // Binary payloads escape nearly every byte. Each escape is copied as a fixed
    // six bytes into a stack buffer (one move, no call) and the cursor advances by
    // its real length; the buffer goes out in one copy per chunk.
    const CHUNK: usize = 256;
    let mut buf = [0u8; CHUNK * 6 + 6];
    for chunk in data.chunks(CHUNK) {
        let mut n = 0;
        for &b in chunk {
            let (bytes, len) = &table[b as usize];
            buf[n..n + 6].copy_from_slice(bytes);
            n += *len as usize;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

type EscapeTable = [([u8; 6], u8); 256];
static ESCAPE_TEXT: EscapeTable = escape_table(false);
static ESCAPE_JSON: EscapeTable = escape_table(true);

const fn escape_table(json: bool) -> EscapeTable {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [([0u8; 6], 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // The escape as text, then (for JSON) with each backslash and quote escaped.
        let mut plain = [0u8; 4];
        let plain_len = match c {
            b'\n' | b'\r' | b'\t' | b'\\' => {
                plain[0] = b'\\';
                plain[1] = match c {
                    b'\n' => b'n',
                    b'\r' => b'r',
                    b'\t' => b't',
                    _ => b'\\',
                };
                2
            }
            0x20..=0x7e => {
                plain[0] = c;
                1
            }
            _ => {
                plain[0] = b'\\';
                plain[1] = b'x';
                plain[2] = HEX[(c >> 4) as usize];
                plain[3] = HEX[(c & 0xf) as usize];
                4
            }
        };
        let mut out = [0u8; 6];
        let mut n = 0;
        let mut i = 0;
        while i < plain_len {
            let p = plain[i];
            if json && (p == b'\\' || p == b'"') {
                out[n] = b'\\';
                n += 1;
            }
            out[n] = p;
            n += 1;
            i += 1;
        }
        t[b] = (out, n as u8);
        b += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_text("plain /run/x.sock"), Cow::Borrowed(_)));
        assert!(matches!(escape_text("grüße 日本"), Cow::Borrowed(_)));
        assert_eq!(escape_text(""), "");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_text("\x1b]0;x\x07"), "\\u{1b}]0;x\\u{7}");
        assert_eq!(escape_text("a\rb\u{9b}c\u{7f}"), "a\\u{d}b\\u{9b}c\\u{7f}");
        assert_eq!(escape_text("\0"), "\\u{0}");
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped() {
        // What a right-to-left override would show as `txt.exe`.
        assert_eq!(escape_text("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
        for c in (0x202a..=0x202e).chain(0x2066..=0x2069) {
            let c = char::from_u32(c).unwrap();
            assert!(is_hidden(c), "{:x}", c as u32);
        }
        for c in [
            0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x2028, 0x2029, 0x2060, 0xfeff, 0x61c, 0xad,
            0x80, 0x85, 0x9f, 0xe0041, 0x3164,
        ] {
            let c = char::from_u32(c).unwrap();
            assert!(is_hidden(c), "{:x}", c as u32);
            assert_eq!(
                escape_text(&c.to_string()),
                format!("\\u{{{:x}}}", c as u32)
            );
        }
        // Visible letters, marks and symbols of any script stay.
        for s in ["é", "ß", "ж", "中", "ا", "🙂", "\u{301}", "€", " "] {
            assert_eq!(escape_text(s), s);
        }
    }

    #[test]
    fn bytes_escape_to_ascii() {
        let mut out = Vec::new();
        escape_bytes(b"GET\r\n\x01\xe2\x80\xae\"\\", false, &mut out);
        assert_eq!(out, b"GET\\r\\n\\x01\\xe2\\x80\\xae\"\\\\");
        out.clear();
        escape_bytes(b"\"\\\x00", true, &mut out);
        assert_eq!(out, br#"\"\\\\\\x00"#);
    }
}
