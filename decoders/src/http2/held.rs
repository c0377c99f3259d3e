//! Bytes a connection holds while it waits for more (a frame's rest, a header
//! block's CONTINUATIONs), taken from the run's memory budget before they are
//! held and given back when they go.

use std::sync::Arc;

use spf_pipeline::Budget;

/// Why bytes could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than the buffer's own limit.
    Limit,
    /// The run's memory budget is spent.
    Budget,
}

/// Capacity kept when a buffer empties; more is given back.
const KEEP: usize = 64 * 1024;

pub(crate) struct Held {
    v: Vec<u8>,
    /// Capacity taken from the budget.
    taken: usize,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.v.len())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give(self.taken);
    }
}

impl Held {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Held {
            v: Vec::new(),
            taken: 0,
            budget,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.v
    }

    pub(crate) fn len(&self) -> usize {
        self.v.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// Appends `data`, refusing (and holding nothing more) when that would
    /// make more than `max` bytes or the budget cannot give the room.
    pub(crate) fn extend(&mut self, data: &[u8], max: usize) -> Result<(), Refused> {
        let need = self.v.len() + data.len();
        if need > max {
            return Err(Refused::Limit);
        }
        if need > self.v.capacity() {
            let want = need.max(self.v.capacity() * 2).min(max).max(need);
            let more = want.saturating_sub(self.taken);
            if !self.budget.try_take(more) {
                return Err(Refused::Budget);
            }
            self.taken += more;
            self.v.reserve_exact(want - self.v.len());
        }
        self.v.extend_from_slice(data);
        Ok(())
    }

    /// Empties the buffer, giving back all but a small capacity.
    pub(crate) fn clear(&mut self) {
        self.v.clear();
        if self.v.capacity() > KEEP {
            self.release();
        }
    }

    /// Empties the buffer and gives back everything.
    pub(crate) fn release(&mut self) {
        self.v = Vec::new();
        self.budget.give(self.taken);
        self.taken = 0;
    }

    /// Takes the bytes out (to run over them while the owner is borrowed
    /// elsewhere); hand them back with [`Held::restore`].
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.v)
    }

    pub(crate) fn restore(&mut self, v: Vec<u8>) {
        self.v = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_before_holding_and_gives_back() {
        let b = Budget::new(1000);
        let mut h = Held::new(Arc::clone(&b));
        h.extend(&[1; 100], 500).unwrap();
        assert!(b.used() >= 100);
        assert_eq!(h.extend(&[1; 401], 500), Err(Refused::Limit));
        assert_eq!(h.len(), 100);
        h.extend(&[2; 400], 500).unwrap();
        assert_eq!(b.used(), 500);
        assert_eq!(&h.as_slice()[100..], &[2; 400]);
        let mut other = Held::new(Arc::clone(&b));
        assert_eq!(other.extend(&[0; 600], 10_000), Err(Refused::Budget));
        assert!(other.is_empty());
        h.release();
        assert_eq!(b.used(), 0);
        h.extend(&[3; 10], 500).unwrap();
        drop(h);
        assert_eq!(b.used(), 0);
    }
}
