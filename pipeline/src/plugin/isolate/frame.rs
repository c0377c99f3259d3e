//! The framing between spf and an isolated plugin's process: each frame is a
//! little-endian `u32` length, a type byte and its payload; byte strings inside
//! are a `u32` length and the bytes. Event views travel field by field, so the
//! child rebuilds an [`SpfEventView`] that points into the frame it read.

use spf_plugin::{SpfBytes, SpfEventView};

/// spf to the plugin's process.
pub const INIT: u8 = 1;
pub const DECODE: u8 = 2;
pub const DETECT: u8 = 3;
pub const LOST: u8 = 4;
pub const CLOSED: u8 = 5;
pub const FINISH: u8 = 6;
pub const WRITE: u8 = 7;
pub const FLUSH: u8 = 8;

/// The plugin's process to spf.
pub const HELLO: u8 = 0x81;
pub const RECORD: u8 = 0x82;
pub const ERROR: u8 = 0x83;
pub const EXCHANGE: u8 = 0x84;
pub const DONE: u8 = 0x85;

/// Largest frame spf sends (an event of the largest snaplen, with room).
pub const MAX_TO_CHILD: usize = 64 << 20;
/// Largest frame spf takes from a plugin's process: a record of the largest
/// JSON and text spf accepts from any plugin. A bigger one ends the process.
pub const MAX_FROM_CHILD: usize = 2 * super::super::output::MAX_OUTPUT_JSON + 64;

/// Appends frames to a buffer.
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Writer<'a> {
    pub fn begin(buf: &'a mut Vec<u8>, kind: u8) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Writer { buf, start }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A byte string; longer than `u32::MAX` is cut (frames are far smaller).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len().min(u32::MAX as usize);
        self.u32(n as u32);
        self.buf.extend_from_slice(&b[..n]);
        self
    }

    /// The event view `v` with `data` as its bytes.
    pub fn view(&mut self, v: &SpfEventView) -> &mut Self {
        for x in [
            v.seq,
            v.ts_ns,
            v.time_ns,
            v.conn,
            v.socket,
            v.len,
            v.pos,
            v.peer_socket,
            v.cgroup,
        ] {
            self.u64(x);
        }
        for x in [
            v.pid,
            v.tid,
            v.peer_pid,
            v.dir,
            v.sock,
            v.truncated,
            v.side,
            v.role,
            v.via,
            v.has_pos,
        ] {
            self.u32(x);
        }
        // SAFETY: the view's byte strings are lent by its maker for this call.
        unsafe {
            self.bytes(v.comm.as_slice())
                .bytes(v.path.as_slice())
                .bytes(v.peer_comm.as_slice())
                .bytes(v.node.as_slice())
                .bytes(v.data.as_slice());
        }
        self
    }

    /// Writes the length; the frame is complete.
    pub fn end(self) -> usize {
        let len = self.buf.len() - self.start - 4;
        self.buf[self.start..self.start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        len
    }
}

/// Reads the payload of one frame.
pub struct Reader<'a> {
    rest: &'a [u8],
}

/// A frame that does not hold what its type says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct Malformed(pub &'static str);

impl<'a> Reader<'a> {
    pub fn new(payload: &'a [u8]) -> Self {
        Reader { rest: payload }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed("shorter than its fields"));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// An event view pointing into the frame.
    pub fn view(&mut self) -> Result<SpfEventView, Malformed> {
        let mut u = [0u64; 9];
        for x in &mut u {
            *x = self.u64()?;
        }
        let mut w = [0u32; 10];
        for x in &mut w {
            *x = self.u32()?;
        }
        let comm = SpfBytes::from_slice(self.bytes()?);
        let path = SpfBytes::from_slice(self.bytes()?);
        let peer_comm = SpfBytes::from_slice(self.bytes()?);
        let node = SpfBytes::from_slice(self.bytes()?);
        let data = SpfBytes::from_slice(self.bytes()?);
        Ok(SpfEventView {
            seq: u[0],
            ts_ns: u[1],
            time_ns: u[2],
            conn: u[3],
            socket: u[4],
            len: u[5],
            pos: u[6],
            peer_socket: u[7],
            cgroup: u[8],
            pid: w[0],
            tid: w[1],
            peer_pid: w[2],
            dir: w[3],
            sock: w[4],
            truncated: w[5],
            side: w[6],
            role: w[7],
            via: w[8],
            has_pos: w[9],
            comm,
            path,
            data,
            peer_comm,
            node,
        })
    }
}

/// Finds the first whole frame at the start of `buf`: `Ok(Some((kind,
/// payload range, frame length)))`, `Ok(None)` while it is incomplete, `Err`
/// when its length is past `max`.
pub fn split(buf: &[u8], max: usize) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, usize> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > max {
        return Err(len);
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], 5..4 + len, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_survives_the_trip() {
        let e = crate::event::Event {
            seq: 7,
            ts_ns: 8,
            pid: 9,
            comm: std::sync::Arc::from("cli"),
            peer_comm: std::sync::Arc::from("srv"),
            role: crate::event::Role::Server,
            via: Some(crate::event::Direction::Send),
            pos: Some(12),
            data: bytes::Bytes::from_static(b"hello"),
            len: 9,
            truncated: true,
            ..Default::default()
        };
        let v = crate::plugin::decoder::event_view(&e, &e.data);
        let mut buf = Vec::new();
        let mut w = Writer::begin(&mut buf, DECODE);
        w.view(&v);
        w.end();
        buf.extend_from_slice(b"next");
        let (kind, payload, used) = split(&buf, MAX_TO_CHILD).unwrap().unwrap();
        assert_eq!((kind, used), (DECODE, buf.len() - 4));
        let back = Reader::new(&buf[payload]).view().unwrap();
        // SAFETY: the view points into `buf`, alive here.
        unsafe {
            let a = spf_plugin::Event::from_view(&v);
            let b = spf_plugin::Event::from_view(&back);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(b.data, b"hello");
            assert_eq!(b.pos, Some(12));
        }
        assert_eq!(split(&buf[..10], MAX_TO_CHILD), Ok(None));
        assert_eq!(
            split(&[0xff, 0xff, 0xff, 0x7f, 1], MAX_TO_CHILD),
            Err(0x7fff_ffff)
        );
        assert!(Reader::new(&[1, 2]).view().is_err());
    }
}
