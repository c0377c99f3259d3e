//! The on-disk part of the sink's buffer: messages that did not fit in memory,
//! first in first out, in one file of bounded size.
//!
//! Each entry is a fixed header (payload length, kind, sequence, records, the
//! time of its last record) and the payload. Entries are appended at the end
//! and read from the front; when the reader catches up, the file is emptied
//! and used again from its start, so its size never passes `limit`.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use spf_pipeline::output::open_output;

use super::queue::Msg;
use crate::wire::Kind;

/// length u32, kind u8, seq u64, first u64, records u64, ts_ns u64, time_ns u64
const HEADER: usize = 4 + 1 + 8 * 5;

pub struct Spool {
    path: PathBuf,
    writer: File,
    reader: File,
    limit: u64,
    read: u64,
    write: u64,
    /// Entries written and not yet read.
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("spool `{path}`: {message}")]
pub struct SpoolError {
    pub path: String,
    pub message: String,
}

impl Spool {
    /// Opens the spool file the way spf opens every output file
    /// ([`open_output`]: a new file of mode 0600, or an existing regular file
    /// of the effective user with no other link, emptied; never through a
    /// symbolic link), and once more for reading through the descriptor
    /// itself, so both name the very file that was checked. Whatever was in
    /// it is not trusted: another run's spool is not replayed.
    pub fn open(path: &Path, limit: u64) -> Result<Spool, SpoolError> {
        let err = |message: String| SpoolError {
            path: path.display().to_string(),
            message,
        };
        let writer = open_output(path, false).map_err(|e| err(e.to_string()))?;
        let reader = File::open(format!("/proc/self/fd/{}", writer.as_raw_fd()))
            .map_err(|e| err(format!("cannot open for reading: {e}")))?;
        let (w, r) = (
            writer
                .metadata()
                .map_err(|e| err(format!("cannot inspect: {e}")))?,
            reader
                .metadata()
                .map_err(|e| err(format!("cannot inspect: {e}")))?,
        );
        if (w.dev(), w.ino()) != (r.dev(), r.ino()) {
            return Err(err("changed while it was being opened".into()));
        }
        Ok(Spool {
            path: path.to_path_buf(),
            writer,
            reader,
            limit,
            read: 0,
            write: 0,
            entries: 0,
        })
    }

    /// Bytes an entry takes besides its payload.
    pub const ENTRY_OVERHEAD: usize = HEADER;

    /// Bytes that can still be appended.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.write)
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Appends `msg`; `Err(None)` when it does not fit.
    pub fn push(&mut self, msg: &Msg) -> Result<(), Option<SpoolError>> {
        let size = (HEADER + msg.payload.len()) as u64;
        if self.write + size > self.limit {
            return Err(None);
        }
        let mut head = [0u8; HEADER];
        let len = u32::try_from(msg.payload.len())
            .map_err(|_| Some(self.error("message larger than 4 GiB".into())))?;
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[4] = msg.kind.index() as u8;
        head[5..13].copy_from_slice(&msg.seq.to_le_bytes());
        head[13..21].copy_from_slice(&msg.first.to_le_bytes());
        head[21..29].copy_from_slice(&msg.records.to_le_bytes());
        head[29..37].copy_from_slice(&msg.ts_ns.to_le_bytes());
        head[37..45].copy_from_slice(&msg.time_ns.to_le_bytes());
        let r = self.writer.write_all_at(&head, self.write).and_then(|()| {
            self.writer
                .write_all_at(&msg.payload, self.write + HEADER as u64)
        });
        if let Err(e) = r {
            return Err(Some(self.error(format!("cannot write: {e}"))));
        }
        self.write += size;
        self.entries += 1;
        Ok(())
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Result<Option<Msg>, SpoolError> {
        if self.entries == 0 {
            return Ok(None);
        }
        let mut head = [0u8; HEADER];
        self.reader
            .read_exact_at(&mut head, self.read)
            .map_err(|e| self.error(format!("cannot read: {e}")))?;
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = *Kind::ALL
            .get(usize::from(head[4]))
            .ok_or_else(|| self.error("corrupt entry".into()))?;
        if self.read + (HEADER + len) as u64 > self.write {
            return Err(self.error("corrupt entry".into()));
        }
        let mut payload = vec![0u8; len];
        self.reader
            .read_exact_at(&mut payload, self.read + HEADER as u64)
            .map_err(|e| {
                if e.kind() == ErrorKind::UnexpectedEof {
                    self.error("shorter than written (changed by someone else?)".into())
                } else {
                    self.error(format!("cannot read: {e}"))
                }
            })?;
        self.read += (HEADER + len) as u64;
        self.entries -= 1;
        if self.entries == 0 {
            // Caught up: start the file over, so it never grows past `limit`.
            self.read = 0;
            self.write = 0;
            self.writer
                .set_len(0)
                .map_err(|e| self.error(format!("cannot empty: {e}")))?;
        }
        Ok(Some(Msg {
            kind,
            seq: u64_at(5),
            first: u64_at(13),
            records: u64_at(21),
            ts_ns: u64_at(29),
            time_ns: u64_at(37),
            payload: Bytes::from(payload),
        }))
    }

    fn error(&self, message: String) -> SpoolError {
        SpoolError {
            path: self.path.display().to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, n: usize) -> Msg {
        Msg {
            kind: Kind::Records,
            seq,
            first: seq * 3,
            records: seq * 2,
            ts_ns: seq + 1,
            time_ns: seq + 2,
            payload: Bytes::from(vec![seq as u8; n]),
        }
    }

    #[test]
    fn first_in_first_out_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool");
        let mut s = Spool::open(&p, 3 * (HEADER as u64 + 100)).unwrap();
        for i in 1..=3 {
            s.push(&msg(i, 100)).unwrap();
        }
        assert!(s.push(&msg(4, 100)).unwrap_err().is_none());
        assert_eq!(s.pop().unwrap().unwrap(), msg(1, 100));
        // Still full until the reader catches up: the file only shrinks then.
        assert!(s.push(&msg(4, 100)).is_err());
        assert_eq!(s.pop().unwrap().unwrap(), msg(2, 100));
        assert_eq!(s.pop().unwrap().unwrap(), msg(3, 100));
        assert_eq!(s.pop().unwrap(), None);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        s.push(&msg(5, 10)).unwrap();
        assert_eq!(s.pop().unwrap().unwrap(), msg(5, 10));
    }

    #[test]
    fn opens_only_what_is_safe() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = Spool::open(&link, 100).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = Spool::open(&hard, 100).err().unwrap();
        assert!(e.to_string().contains("hard link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let e = Spool::open(dir.path(), 100).err().unwrap();
        assert!(e.to_string().contains("spool"), "{e}");
        // An old file of ours is taken over, emptied and made private.
        let old = dir.path().join("old");
        std::fs::write(&old, b"stale").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        Spool::open(&old, 100).unwrap();
        let m = std::fs::metadata(&old).unwrap();
        assert_eq!((m.len(), m.permissions().mode() & 0o777), (0, 0o600));
    }
}
