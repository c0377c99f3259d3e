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
/// Pooled buffers come in powers of two from MIN_POOLED to MAX_POOLED, one
/// free list each: a buffer is handed out only for what its class holds, so
/// none sits unused because it is too small for what comes.
const CLASSES: usize = (MAX_POOLED.trailing_zeros() - MIN_POOLED.trailing_zeros() + 1) as usize;

/// The class of buffers that hold `len` bytes, if pooled.
fn class(len: usize) -> Option<usize> {
    if len > MAX_POOLED {
        return None;
    }
    let size = len.max(MIN_POOLED).next_power_of_two();
    Some((size.trailing_zeros() - MIN_POOLED.trailing_zeros()) as usize)
}

#[derive(Default)]
struct Free {
    lists: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
}

#[derive(Clone, Default)]
pub(crate) struct Pool {
    free: Arc<Mutex<Free>>,
}

impl Pool {
    /// An empty buffer with room for `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let Some(c) = class(len).filter(|_| len >= MIN_POOLED) else {
            return Vec::with_capacity(len);
        };
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(buf) = free.lists[c].pop() {
            free.bytes -= buf.capacity();
            return buf;
        }
        Vec::with_capacity(MIN_POOLED << c)
    }

    /// `buf` as Bytes that hand the buffer back here when the last clone is
    /// dropped, if it is one of the pool's sizes.
    pub(crate) fn bytes(&self, buf: Vec<u8>) -> Bytes {
        match class(buf.capacity()) {
            Some(c) if buf.capacity() == MIN_POOLED << c => Bytes::from_owner(Pooled {
                buf,
                pool: self.clone(),
            }),
            _ => Bytes::from(buf),
        }
    }

    fn put(&self, mut buf: Vec<u8>) {
        let Some(c) = class(buf.capacity()) else {
            return;
        };
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.bytes + buf.capacity() > KEEP_BYTES {
            return;
        }
        buf.clear();
        free.bytes += buf.capacity();
        free.lists[c].push(buf);
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let free = self.free.lock().unwrap();
        (free.lists.iter().map(Vec::len).sum(), free.bytes)
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
        assert_eq!(pool.kept(), (1, 64 * 1024));
        let again = pool.take(40 * 1024);
        assert_eq!(again.as_ptr(), ptr, "40 KiB is in the 64 KiB class");
        assert!(again.is_empty() && again.capacity() == 64 * 1024);
        assert_eq!(pool.kept(), (0, 0));
    }

    #[test]
    fn each_size_class_gets_its_own_buffers() {
        let pool = Pool::default();
        drop(pool.bytes(pool.take(20 * 1024)));
        drop(pool.bytes(pool.take(600 * 1024)));
        assert_eq!(pool.kept(), (2, 32 * 1024 + 1024 * 1024));
        // A small event does not take the big buffer, nor a big one the small.
        assert_eq!(pool.take(17 * 1024).capacity(), 32 * 1024);
        assert_eq!(pool.take(100 * 1024).capacity(), 128 * 1024);
        assert_eq!(pool.take(513 * 1024).capacity(), 1024 * 1024);
        assert_eq!(pool.kept(), (0, 0));
    }

    #[test]
    fn small_big_and_too_many_buffers_are_not_kept() {
        let pool = Pool::default();
        drop(pool.bytes(pool.take(100)));
        drop(pool.bytes(pool.take(2 << 20)));
        // A buffer of another size than the pool's, handed in by mistake.
        drop(pool.bytes(Vec::with_capacity(20_000)));
        assert_eq!(pool.kept().0, 0);
        let many: Vec<Bytes> = (0..64).map(|_| pool.bytes(pool.take(MAX_POOLED))).collect();
        drop(many);
        let (n, bytes) = pool.kept();
        assert_eq!(n, KEEP_BYTES / MAX_POOLED);
        assert!(bytes <= KEEP_BYTES);
    }

    #[test]
    fn classes_cover_the_pooled_range() {
        assert_eq!(class(1), Some(0));
        assert_eq!(class(MIN_POOLED), Some(0));
        assert_eq!(class(MIN_POOLED + 1), Some(1));
        assert_eq!(class(MAX_POOLED), Some(CLASSES - 1));
        assert_eq!(class(MAX_POOLED + 1), None);
    }
}
