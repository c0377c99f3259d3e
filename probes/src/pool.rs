//! Buffers for big events, reused once the pipeline drops the event.
//!
//! A bulk transfer hands the reader 64 KiB events faster than the allocator
//! likes: buffers freed on the pipeline's threads go back to the kernel, and
//! every new one faults in and zeroes fresh pages, a tenth of the reader's
//! time. Reused buffers are already mapped, and often still in cache.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Events smaller than this are copied into plain allocations: the allocator
/// serves those from memory it keeps.
pub(crate) const MIN_POOLED: usize = 16 * 1024;
/// Buffers bigger than this are not kept: rare, and each would hold a lot.
const MAX_POOLED: usize = 1 << 20;
/// Capacity the pool keeps at most, over all its buffers.
const KEEP_BYTES: usize = 32 << 20;
/// Free buffers looked at for one that is big enough.
const SCAN: usize = 8;

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

#[derive(Clone, Default)]
pub(crate) struct Pool {
    free: Arc<Mutex<Free>>,
}

impl Pool {
    /// An empty buffer with room for `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if (MIN_POOLED..=MAX_POOLED).contains(&len) {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let n = free.bufs.len();
            let found = (n.saturating_sub(SCAN)..n)
                .rev()
                .find(|&i| free.bufs[i].capacity() >= len);
            if let Some(i) = found {
                let buf = free.bufs.swap_remove(i);
                free.bytes -= buf.capacity();
                return buf;
            }
        }
        Vec::with_capacity(len)
    }

    /// `buf` as Bytes that hand the buffer back here when the last clone is
    /// dropped.
    pub(crate) fn bytes(&self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED || buf.capacity() > MAX_POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.bytes + buf.capacity() > KEEP_BYTES {
            return;
        }
        buf.clear();
        free.bytes += buf.capacity();
        free.bufs.push(buf);
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let free = self.free.lock().unwrap();
        (free.bufs.len(), free.bytes)
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused_empty() {
        let pool = Pool::default();
        let mut buf = pool.take(64 * 1024);
        buf.extend_from_slice(&[7u8; 64 * 1024]);
        let ptr = buf.as_ptr();
        let b = pool.bytes(buf);
        let clone = b.clone();
        drop(b);
        assert_eq!(pool.kept().0, 0, "still held by a clone");
        assert_eq!(clone.len(), 64 * 1024);
        assert!(clone.iter().all(|&x| x == 7));
        drop(clone);
        assert_eq!(pool.kept().0, 1);
        let again = pool.take(40 * 1024);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty() && again.capacity() >= 64 * 1024);
        assert_eq!(pool.kept(), (0, 0));
    }

    #[test]
    fn small_big_and_too_many_buffers_are_not_kept() {
        let pool = Pool::default();
        drop(pool.bytes(pool.take(100)));
        drop(pool.bytes(pool.take(2 << 20)));
        assert_eq!(pool.kept().0, 0);
        let many: Vec<Bytes> = (0..64).map(|_| pool.bytes(pool.take(MAX_POOLED))).collect();
        drop(many);
        let (n, bytes) = pool.kept();
        assert_eq!(n, KEEP_BYTES / MAX_POOLED);
        assert!(bytes <= KEEP_BYTES);
    }

    #[test]
    fn a_buffer_too_small_is_not_handed_out() {
        let pool = Pool::default();
        drop(pool.bytes(pool.take(MIN_POOLED)));
        let buf = pool.take(MIN_POOLED * 2);
        assert!(buf.capacity() >= MIN_POOLED * 2);
        assert_eq!(pool.kept().0, 1);
    }
}
