//! How sure it is that bytes are HTTP/2: the client's connection preface, a
//! server's first SETTINGS frame, or (joined midway) frame headers that chain
//! the way only real frames do.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADER: usize = 9;
/// Frames longer than this are not taken as evidence (the protocol allows
/// up to 16 MiB, but such frames are rare and make junk look like frames).
const MAX_LEN: usize = 1 << 20;

/// One frame header that obeys RFC 9113's rules for its type: known type,
/// flags that type defines, the stream it may be on, its fixed length.
fn frame_len(h: &[u8]) -> Option<usize> {
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let (kind, flags) = (h[3], h[4]);
    let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    if sid & 1 << 31 != 0 || len > MAX_LEN {
        return None;
    }
    let on_stream = sid != 0;
    let ok = match kind {
        0 => on_stream && flags & !0x09 == 0,
        1 => on_stream && flags & !0x2d == 0,
        2 => on_stream && flags == 0 && len == 5,
        3 => on_stream && flags == 0 && len == 4,
        4 => !on_stream && flags & !0x01 == 0 && len % 6 == 0 && (flags == 0 || len == 0),
        5 => on_stream && flags & !0x0c == 0 && len >= 4,
        6 => !on_stream && flags & !0x01 == 0 && len == 8,
        7 => !on_stream && flags == 0 && len >= 8,
        8 => flags == 0 && len == 4,
        9 => on_stream && flags & !0x04 == 0,
        _ => false,
    };
    ok.then_some(len)
}

/// Valid frame headers in a row from `at`: (complete frames, whether one
/// more began whose payload runs past the data).
fn chain(data: &[u8], mut at: usize) -> (usize, bool) {
    let mut n = 0;
    while at + HEADER <= data.len() {
        let Some(len) = frame_len(&data[at..at + HEADER]) else {
            return (n, false);
        };
        if at + HEADER + len > data.len() {
            return (n, true);
        }
        n += 1;
        at += HEADER + len;
    }
    (n, false)
}

/// 0–100: how sure it is that a stream whose first bytes are `data` carries
/// HTTP/2.
pub fn confidence(data: &[u8]) -> u8 {
    if data.starts_with(PREFACE) {
        return 100;
    }
    if data.len() < HEADER {
        return 0;
    }
    // A server speaks first with SETTINGS (RFC 9113 §3.4).
    if data[3] == 4
        && data[8] == 0
        && data[5..8] == [0, 0, 0]
        && frame_len(&data[..HEADER]).is_some()
    {
        return 90;
    }
    match chain(data, 0) {
        (n, partial) if n >= 2 || (n == 1 && partial) => return 70,
        _ => {}
    }
    // Joined midway: frames that begin somewhere further on.
    for at in 1..data.len().saturating_sub(HEADER) {
        if chain(data, at).0 >= 3 {
            return 60;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        v.extend([kind, flags]);
        v.extend(sid.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn preface_settings_and_frame_chains() {
        let mut c = PREFACE.to_vec();
        c.extend(frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        assert_eq!(confidence(&c), 100);
        assert_eq!(confidence(&frame(4, 0, 0, &[0, 4, 0, 1, 0, 0])), 90);
        let mut mid = frame(0, 0, 5, b"some data");
        mid.extend(frame(1, 4, 7, b"hdrs"));
        assert_eq!(confidence(&mid), 70);
        let mut junk_then_frames = vec![0xaa; 7];
        for i in 0..3 {
            junk_then_frames.extend(frame(0, 0, 1 + 2 * i, b"payload"));
        }
        assert_eq!(confidence(&junk_then_frames), 60);
    }

    #[test]
    fn other_protocols_are_not_http2() {
        assert_eq!(confidence(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        assert_eq!(confidence(b"HTTP/1.1 200 OK\r\n\r\n"), 0);
        assert_eq!(confidence(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"), 0);
        assert_eq!(confidence(b"PRI * HTTP/2.0\r\n"), 0);
        // Random bytes, many seeds: never sure.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let data: Vec<u8> = (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(confidence(&data) < 60);
        }
    }
}
