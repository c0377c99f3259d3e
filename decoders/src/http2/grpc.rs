//! gRPC over HTTP/2: length-prefixed messages carried in DATA frames, and the
//! status in trailers.

use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::Budget;

/// Length-prefixed messages of one stream in one direction, reassembled across
/// DATA frames. Only a message split over frames is copied; one that lies
/// within a frame is a slice of it.
#[derive(Debug, Default)]
pub struct Messages {
    buf: Vec<u8>,
    /// What `buf` took of the run's memory budget.
    budget: Option<Arc<Budget>>,
    taken: usize,
}

impl Drop for Messages {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.taken);
        }
    }
}

/// One whole gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub compressed: bool,
    pub data: Bytes,
}

/// Why a stream's messages cannot be followed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcError {
    /// A message prefix whose flag is neither 0 nor 1.
    Flag(u8),
    /// A message announced larger than the limit.
    TooLarge { len: usize, max: usize },
    /// The memory budget refused the bytes of a message split over frames.
    Budget,
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcError::Flag(v) => write!(f, "gRPC message flag {v} (must be 0 or 1)"),
            GrpcError::TooLarge { len, max } => write!(
                f,
                "gRPC message of {len} bytes larger than limits.message_size ({max})"
            ),
            GrpcError::Budget => f.write_str("memory budget exhausted"),
        }
    }
}

impl Messages {
    /// Messages whose partial bytes are taken from `budget`.
    pub fn with_budget(budget: Arc<Budget>) -> Self {
        Messages {
            buf: Vec::new(),
            budget: Some(budget),
            taken: 0,
        }
    }

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

    /// Adds DATA payload, appending every message it completes. A bad flag,
    /// or a prefix that announces a message larger than `max`, is an error;
    /// the held bytes are then dropped and the stream's messages can no longer
    /// be told apart.
    pub fn push(
        &mut self,
        data: &Bytes,
        max: usize,
        out: &mut impl Extend<Message>,
    ) -> Result<(), GrpcError> {
        let r = self.push_inner(data, max, out);
        if r.is_err() {
            self.release();
        }
        r
    }

    fn push_inner(
        &mut self,
        data: &Bytes,
        max: usize,
        out: &mut impl Extend<Message>,
    ) -> Result<(), GrpcError> {
        let mut at = 0;
        if !self.buf.is_empty() {
            // Complete the prefix, then the held message, from the new bytes.
            let take = (5usize.saturating_sub(self.buf.len())).min(data.len());
            self.hold(&data[..take])?;
            at = take;
            let Some(len) = self.expected() else {
                return Ok(());
            };
            check(self.buf[0], len, max)?;
            let take = (5 + len - self.buf.len()).min(data.len() - at);
            self.hold(&data[at..at + take])?;
            at += take;
            if self.buf.len() < 5 + len {
                return Ok(());
            }
            out.extend(Some(Message {
                compressed: self.buf[0] == 1,
                data: Bytes::copy_from_slice(&self.buf[5..]),
            }));
            self.release();
        }
        while data.len() - at >= 5 {
            let d = &data[at..];
            let len = u32::from_be_bytes([d[1], d[2], d[3], d[4]]) as usize;
            check(d[0], len, max)?;
            if d.len() < 5 + len {
                break;
            }
            out.extend(Some(Message {
                compressed: d[0] == 1,
                data: data.slice(at + 5..at + 5 + len),
            }));
            at += 5 + len;
        }
        if at < data.len() {
            if data.len() - at >= 5 {
                // Only what this frame has: the rest comes with later frames.
                let d = &data[at..];
                let len = u32::from_be_bytes([d[1], d[2], d[3], d[4]]) as usize;
                check(d[0], len, max)?;
            }
            self.hold(&data[at..])?;
        }
        Ok(())
    }

    /// Appends to the held message, taking what it grows by from the budget.
    fn hold(&mut self, bytes: &[u8]) -> Result<(), GrpcError> {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            // Grow by doubling, but never far past the message itself.
            let want = need
                .max(self.buf.capacity() * 2)
                .min(need.max(self.target()));
            if let Some(b) = &self.budget {
                let more = want - self.taken.min(want);
                if !b.try_take(more) {
                    return Err(GrpcError::Budget);
                }
                self.taken += more;
            }
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The size the held message will have, once its prefix is known.
    fn target(&self) -> usize {
        self.expected().map_or(5, |l| l + 5)
    }

    /// Drops the held bytes and gives their memory back.
    fn release(&mut self) {
        self.buf = Vec::new();
        if let Some(b) = &self.budget {
            b.give(self.taken);
        }
        self.taken = 0;
    }
}

fn check(flag: u8, len: usize, max: usize) -> Result<(), GrpcError> {
    if flag > 1 {
        return Err(GrpcError::Flag(flag));
    }
    if len > max {
        return Err(GrpcError::TooLarge { len, max });
    }
    Ok(())
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
                let budget = Budget::new(1000);
                let mut m = Messages::with_budget(Arc::clone(&budget));
                let mut out = Vec::new();
                let wire = Bytes::from(wire.clone());
                m.push(&wire.slice(..cut), 100, &mut out).unwrap();
                m.push(&wire.slice(cut..cut2), 100, &mut out).unwrap();
                m.push(&wire.slice(cut2..), 100, &mut out).unwrap();
                assert_eq!(out.len(), 3, "cuts {cut} {cut2}");
                assert_eq!(
                    out[0],
                    Message {
                        compressed: false,
                        data: Bytes::from_static(b"\x08\x01")
                    }
                );
                assert_eq!(
                    out[1],
                    Message {
                        compressed: true,
                        data: Bytes::from_static(b"abcdef")
                    }
                );
                assert!(out[2].data.is_empty());
                assert_eq!(m.pending(), 0);
                assert_eq!(budget.used(), 0, "nothing held, nothing taken");
            }
        }
    }

    #[test]
    fn rejects_oversized_and_bad_flags() {
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        let mut m = Messages::default();
        let mut out = Vec::new();
        assert_eq!(
            m.push(&b(&frame(0, &[0; 20])), 10, &mut out),
            Err(GrpcError::TooLarge { len: 20, max: 10 })
        );
        let mut m = Messages::default();
        assert_eq!(
            m.push(&b(&frame(7, b"x")), 10, &mut out),
            Err(GrpcError::Flag(7))
        );
        let mut m = Messages::default();
        m.push(&b(&[0, 0]), 10, &mut out).unwrap();
        assert!(m.push(&b(&[0, 0, 99]), 10, &mut out).is_err());
        assert_eq!(m.pending(), 0);
        // A split message larger than the budget allows.
        let budget = Budget::new(16);
        let mut m = Messages::with_budget(Arc::clone(&budget));
        let big = frame(0, &[1; 40]);
        m.push(&b(&big[..10]), 100, &mut out).unwrap();
        assert_eq!(
            m.push(&b(&big[10..]), 100, &mut out),
            Err(GrpcError::Budget)
        );
        assert_eq!(budget.used(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode(b"a%20b%zz%4"), "a b%zz%4");
    }
}
