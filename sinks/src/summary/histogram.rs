//! Latency quantiles in bounded memory, whatever the traffic: a log-bucket
//! histogram in the manner of HdrHistogram.
//!
//! Values below 64 have a bucket each. Above, every power of two is split
//! into 32 buckets of equal width, so a bucket is never wider than 1/32 of
//! its lower bound; a quantile is reported as the middle of its bucket, at
//! most 1/64 (1.6 %) away from the exact value. Counters are kept in
//! chunks of 32, one per power of two, allocated when a value first falls
//! there: at most 60 chunks (15 KiB) for any u64, a few hundred bytes for
//! latencies that span a few orders of magnitude.

/// Bits of a value kept below its leading one: 2^SUB_BITS buckets per octave.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Chunks 0 and 1 hold the values 0..64 one per bucket; chunk k ≥ 2 the
/// octave [2^(k+4), 2^(k+5)).
const CHUNKS: usize = 65 - SUB_BITS as usize;

#[derive(Debug, Clone)]
pub struct Histogram {
    chunks: [Option<Box<[u64; SUB]>>; CHUNKS],
    count: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            chunks: std::array::from_fn(|_| None),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// The bucket of `v`: (chunk, slot).
fn bucket(v: u64) -> (usize, usize) {
    if v < (2 * SUB) as u64 {
        return (v as usize / SUB, v as usize % SUB);
    }
    let top = 63 - v.leading_zeros();
    let shift = top - SUB_BITS;
    // The leading one and the SUB_BITS bits below it: in [SUB, 2 * SUB).
    let m = (v >> shift) as usize;
    (shift as usize + 1, m - SUB)
}

/// The lowest value of a bucket, and its width.
fn bounds(chunk: usize, slot: usize) -> (u64, u64) {
    if chunk < 2 {
        return ((chunk * SUB + slot) as u64, 1);
    }
    let shift = chunk as u32 - 1;
    (((SUB + slot) as u64) << shift, 1 << shift)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let (chunk, slot) = bucket(v);
        let c = self.chunks[chunk].get_or_insert_with(|| Box::new([0; SUB]));
        c[slot] = c[slot].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.chunks.iter_mut().zip(&other.chunks) {
            if let Some(t) = theirs {
                let m = mine.get_or_insert_with(|| Box::new([0; SUB]));
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a = a.saturating_add(*b);
                }
            }
        }
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank: the value below which a
    /// fraction `q` of the values lie, within 1/64 of it (the largest value
    /// exactly). None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        // The ends are known exactly.
        if rank == self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (chunk, c) in self.chunks.iter().enumerate() {
            let Some(c) = c else { continue };
            for (slot, &n) in c.iter().enumerate() {
                seen = seen.saturating_add(n);
                if seen >= rank {
                    let (low, width) = bounds(chunk, slot);
                    let mid = low.saturating_add(width / 2);
                    return Some(mid.clamp(self.min, self.max));
                }
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible pseudo-random numbers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Log-uniform over [1, 2^bits): every order of magnitude alike,
        /// as latencies spread.
        fn log_uniform(&mut self, bits: u32) -> u64 {
            let top = self.next() % u64::from(bits);
            (1u64 << top) | (self.next() & ((1u64 << top) - 1))
        }
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn buckets_tile_every_value() {
        for v in (0..5000u64).chain([u64::MAX, u64::MAX - 1, 1 << 63, (1 << 40) + 12345]) {
            let (chunk, slot) = bucket(v);
            let (low, width) = bounds(chunk, slot);
            assert!(chunk < CHUNKS && slot < SUB, "{v}");
            assert!(low <= v && v - low < width, "{v}: [{low}, +{width})");
            assert!(width == 1 || width * 32 <= low, "{v}: bucket too wide");
        }
    }

    #[test]
    fn quantiles_are_within_one_64th_of_exact_ones() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (n, bits) in [
            (1usize, 20),
            (7, 12),
            (1000, 30),
            (100_000, 40),
            (50_000, 64),
        ] {
            let mut h = Histogram::default();
            let mut values: Vec<u64> = (0..n).map(|_| rng.log_uniform(bits)).collect();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            assert_eq!(h.count(), n as u64);
            for q in [0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let want = exact(&values, q);
                let got = h.quantile(q).unwrap();
                assert!(
                    got.abs_diff(want) <= want / 64,
                    "n {n}, q {q}: {got} vs exact {want}"
                );
            }
            assert_eq!(h.quantile(1.0), values.last().copied());
        }
    }

    #[test]
    fn small_values_are_exact_and_merging_adds() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        assert_eq!(a.quantile(0.5), None);
        for v in 0..50 {
            a.record(v);
        }
        for v in 50..64 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 64);
        assert_eq!(a.quantile(0.5), Some(31));
        assert_eq!(a.quantile(0.99), Some(63));
    }

    #[test]
    fn chunks_are_allocated_only_where_values_fall() {
        let mut h = Histogram::default();
        let mut rng = Rng(7);
        // About 1 µs to 1 s: the twenty octaves from 2^10 to 2^30.
        for _ in 0..10_000 {
            let top = 10 + rng.next() % 20;
            h.record((1 << top) | (rng.next() & ((1 << top) - 1)));
        }
        let chunks = h.chunks.iter().filter(|c| c.is_some()).count();
        assert_eq!(chunks, 20);
    }
}
