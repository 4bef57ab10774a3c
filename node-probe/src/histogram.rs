//! A log-linear histogram of nanosecond values for the ingest hot path.
//!
//! Recording is a few integer instructions (no logarithm, no allocation once the value range
//! is covered); at window close the buckets become a DDSketch, the mergeable form windows
//! carry. Buckets are 1/64 of an octave wide (≤ 0.8% error at the midpoint), below the sketch's
//! own 1% accuracy.
//!
//! Counters are 16 bits: every exchange increments three histograms at random places, so their
//! size decides how many of those land in cache (half the bytes, a third more records per
//! second). A bucket that fills carries on in a side table, so no count is ever lost.

use sketches_ddsketch::{Config, DDSketch};

/// Mantissa bits kept: 64 buckets per octave.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// Bucket index of `v`: exact below 64, then 64 buckets per power of two.
#[inline]
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    ((u64::from(e - SUB_BITS + 1) << SUB_BITS) | sub) as usize
}

/// Midpoint of bucket `i`, in the recorded unit.
fn midpoint(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64;
    }
    let e = (i >> SUB_BITS) + u64::from(SUB_BITS) - 1;
    let sub = i & (SUB - 1);
    let width = 1u64 << (e - u64::from(SUB_BITS));
    ((SUB + sub) * width) as f64 + (width as f64 - 1.0) / 2.0
}

/// Counts per bucket over the range of indexes seen so far.
#[derive(Clone, Debug, Default)]
pub struct LogHistogram {
    /// Index of `counts[0]`.
    first: usize,
    counts: Vec<u16>,
    /// Multiples of 2^16 counted by buckets that wrapped, by bucket index (rare: a bucket needs
    /// 65536 values in one window).
    overflow: Vec<(usize, u64)>,
    total: u64,
}

impl LogHistogram {
    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        self.total += 1;
        // Below `first` wraps to a huge offset: one bounds check covers both ends.
        if let Some(c) = self.counts.get_mut(i.wrapping_sub(self.first)) {
            let (n, wrapped) = c.overflowing_add(1);
            *c = n;
            if wrapped {
                self.carry(i);
            }
            return;
        }
        self.grow_to(i);
        self.counts[i - self.first] = 1;
    }

    /// Moves the 2^16 values a bucket `i` just wrapped around from into the side table.
    #[cold]
    fn carry(&mut self, i: usize) {
        const WRAP: u64 = 1 << 16;
        match self.overflow.iter_mut().find(|(b, _)| *b == i) {
            Some((_, n)) => *n += WRAP,
            None => self.overflow.push((i, WRAP)),
        }
    }

    /// Widens the covered range to include bucket `i` (which is empty).
    #[cold]
    fn grow_to(&mut self, i: usize) {
        if self.counts.is_empty() {
            self.first = i;
            self.counts.push(0);
        } else if i < self.first {
            let mut c = vec![0; self.first - i];
            c.extend_from_slice(&self.counts);
            self.counts = c;
            self.first = i;
        } else {
            self.counts.resize(i - self.first + 1, 0);
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The histogram as a DDSketch of `v / divisor` (e.g. 1e6 for ns -> ms).
    pub fn to_sketch(&self, divisor: f64) -> DDSketch {
        let mut s = DDSketch::new(Config::defaults());
        for (k, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                s.add_with_count(midpoint(self.first + k) / divisor, u64::from(n));
            }
        }
        for &(i, n) in &self.overflow {
            s.add_with_count(midpoint(i) / divisor, n);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indexes_are_contiguous_and_monotonic() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = index(v);
            assert!(i == last || i == last + 1, "v={v} i={i} last={last}");
            last = i;
        }
        assert!(index(u64::MAX) > index(u64::MAX / 2));
    }

    #[test]
    fn full_buckets_lose_no_count() {
        let mut h = LogHistogram::default();
        let n = 3 * u64::from(u16::MAX) + 7;
        for _ in 0..n {
            h.record(1_000_000);
        }
        h.record(2_000_000);
        let s = h.to_sketch(1e6);
        assert_eq!(s.count() as u64, n + 1);
        assert!((s.quantile(0.5).unwrap().unwrap() - 1.0).abs() < 0.02);
        assert!((s.max().unwrap() - 2.0).abs() < 0.02);
    }

    proptest! {
        #[test]
        fn midpoint_is_within_one_percent(v in 1u64..u64::MAX / 2) {
            let m = midpoint(index(v));
            prop_assert!((m - v as f64).abs() <= v as f64 * 0.008 + 0.5, "v={} m={}", v, m);
        }

        #[test]
        fn quantiles_match_an_exact_sketch(vs in proptest::collection::vec(1_000u64..5_000_000_000, 1..300)) {
            let mut h = LogHistogram::default();
            let mut exact = DDSketch::new(Config::defaults());
            for &v in &vs {
                h.record(v);
                exact.add(v as f64 / 1e6);
            }
            let s = h.to_sketch(1e6);
            prop_assert_eq!(s.count(), vs.len());
            for q in [0.5, 0.9, 0.99] {
                let a = s.quantile(q).unwrap().unwrap();
                let b = exact.quantile(q).unwrap().unwrap();
                prop_assert!((a - b).abs() <= b * 0.025, "q={} {} vs {}", q, a, b);
            }
        }
    }
}
