//! A log-linear histogram of nanosecond values for the ingest hot path.
//!
//! Recording is a few integer instructions (no logarithm, no allocation once the value range
//! is covered); at window close the buckets become a DDSketch, the mergeable form windows
//! carry. Buckets are 1/64 of an octave wide (≤ 0.8% error at the midpoint), below the sketch's
//! own 1% accuracy.
//!
//! Counters are 16 bits: every exchange increments three histograms at random places, so their
//! size decides how many of those land in cache (half the bytes, a third more records per
//! second). A bucket that fills carries on in a side table, so no count is ever lost. The three
//! histograms of an exchange share their buckets' cache lines (see [`LogHistogram`]).

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

/// `N` histograms over one bucket range, recorded together: bucket `i` of every lane sits in
/// one `[u16; N]`. An exchange's latency, time to first byte and wait are close to each other
/// (often in the same bucket), so recording all three touches one or two cache lines instead
/// of three, with one range check and one count.
#[derive(Clone, Debug)]
pub struct LogHistogram<const N: usize> {
    /// Index of `counts[0]`.
    first: usize,
    counts: Vec<[u16; N]>,
    /// Multiples of 2^16 counted by buckets that wrapped, by (bucket index, lane) (rare: a
    /// bucket needs 65536 values in one window).
    overflow: Vec<(usize, usize, u64)>,
    total: u64,
}

impl<const N: usize> Default for LogHistogram<N> {
    fn default() -> Self {
        LogHistogram {
            first: 0,
            counts: Vec::new(),
            overflow: Vec::new(),
            total: 0,
        }
    }
}

impl<const N: usize> LogHistogram<N> {
    /// Records one value per lane.
    #[inline]
    pub fn record(&mut self, vs: [u64; N]) {
        let idx = vs.map(index);
        self.total += 1;
        // Below `first` wraps to a huge offset: one comparison covers both ends.
        let len = self.counts.len();
        if idx.iter().any(|&i| i.wrapping_sub(self.first) >= len) {
            self.grow_to(&idx);
        }
        for (lane, &i) in idx.iter().enumerate() {
            let c = &mut self.counts[i - self.first][lane];
            let (n, wrapped) = c.overflowing_add(1);
            *c = n;
            if wrapped {
                self.carry(i, lane);
            }
        }
    }

    /// Moves the 2^16 values bucket `i` of `lane` just wrapped around from into the side table.
    #[cold]
    fn carry(&mut self, i: usize, lane: usize) {
        const WRAP: u64 = 1 << 16;
        match self
            .overflow
            .iter_mut()
            .find(|(b, l, _)| *b == i && *l == lane)
        {
            Some((_, _, n)) => *n += WRAP,
            None => self.overflow.push((i, lane, WRAP)),
        }
    }

    /// Widens the covered range to include every bucket of `idx` (new buckets are empty).
    #[cold]
    fn grow_to(&mut self, idx: &[usize; N]) {
        let (Some(&lo), Some(&hi)) = (idx.iter().min(), idx.iter().max()) else {
            return;
        };
        if self.counts.is_empty() {
            self.first = lo;
            self.counts.resize(hi - lo + 1, [0; N]);
            return;
        }
        if lo < self.first {
            let mut c = vec![[0; N]; self.first - lo];
            c.extend_from_slice(&self.counts);
            self.counts = c;
            self.first = lo;
        }
        if hi >= self.first + self.counts.len() {
            self.counts.resize(hi - self.first + 1, [0; N]);
        }
    }

    /// Values recorded in each lane.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Lane `lane` as a DDSketch of `v / divisor` (e.g. 1e6 for ns -> ms).
    pub fn to_sketch(&self, lane: usize, divisor: f64) -> DDSketch {
        let mut s = DDSketch::new(Config::defaults());
        for (k, c) in self.counts.iter().enumerate() {
            let n = c.get(lane).copied().unwrap_or(0);
            if n > 0 {
                s.add_with_count(midpoint(self.first + k) / divisor, u64::from(n));
            }
        }
        for &(i, _, n) in self.overflow.iter().filter(|(_, l, _)| *l == lane) {
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
        let mut h = LogHistogram::<1>::default();
        let n = 3 * u64::from(u16::MAX) + 7;
        for _ in 0..n {
            h.record([1_000_000]);
        }
        h.record([2_000_000]);
        let s = h.to_sketch(0, 1e6);
        assert_eq!(s.count() as u64, n + 1);
        assert!((s.quantile(0.5).unwrap().unwrap() - 1.0).abs() < 0.02);
        assert!((s.max().unwrap() - 2.0).abs() < 0.02);
    }

    #[test]
    fn lanes_are_counted_apart() {
        // Lane 0 wraps its bucket twice, lane 1 shares it once per value, lane 2 stays apart.
        let mut h = LogHistogram::<3>::default();
        let n = 2 * u64::from(u16::MAX) + 5;
        for k in 0..n {
            h.record([
                1_000_000,
                if k % 2 == 0 { 1_000_000 } else { 10 },
                5_000_000,
            ]);
        }
        h.record([7, 2_000_000, 1]);
        let (a, b, c) = (
            h.to_sketch(0, 1e6),
            h.to_sketch(1, 1e6),
            h.to_sketch(2, 1e6),
        );
        assert_eq!([a.count(), b.count(), c.count()], [n as usize + 1; 3]);
        assert!((a.quantile(0.5).unwrap().unwrap() - 1.0).abs() < 0.02);
        assert!((b.max().unwrap() - 2.0).abs() < 0.02);
        assert!((c.quantile(0.5).unwrap().unwrap() - 5.0).abs() < 0.1);
        assert_eq!(h.to_sketch(3, 1e6).count(), 0, "no such lane: empty");
    }

    proptest! {
        #[test]
        fn midpoint_is_within_one_percent(v in 1u64..u64::MAX / 2) {
            let m = midpoint(index(v));
            prop_assert!((m - v as f64).abs() <= v as f64 * 0.008 + 0.5, "v={} m={}", v, m);
        }

        #[test]
        fn quantiles_match_an_exact_sketch(vs in proptest::collection::vec(1_000u64..5_000_000_000, 1..300)) {
            let mut h = LogHistogram::<1>::default();
            let mut exact = DDSketch::new(Config::defaults());
            for &v in &vs {
                h.record([v]);
                exact.add(v as f64 / 1e6);
            }
            let s = h.to_sketch(0, 1e6);
            prop_assert_eq!(s.count(), vs.len());
            for q in [0.5, 0.9, 0.99] {
                let a = s.quantile(q).unwrap().unwrap();
                let b = exact.quantile(q).unwrap().unwrap();
                prop_assert!((a - b).abs() <= b * 0.025, "q={} {} vs {}", q, a, b);
            }
        }
    }
}
