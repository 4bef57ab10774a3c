//! Order statistics over repeated measurements: medians, spread and ratios between conditions.

use serde::Serialize;

/// Median and spread of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Median (mean of the two middle values when `n` is even).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// 25th percentile (linear interpolation).
    pub p25: f64,
    /// 75th percentile (linear interpolation).
    pub p75: f64,
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly between neighbours.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Summarises `values`, ignoring NaNs; `None` when nothing is left.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        n: v.len(),
        median: quantile_sorted(&v, 0.5),
        min: v[0],
        max: v[v.len() - 1],
        p25: quantile_sorted(&v, 0.25),
        p75: quantile_sorted(&v, 0.75),
    })
}

/// Median of `values` (NaNs ignored).
pub fn median(values: &[f64]) -> Option<f64> {
    summarize(values).map(|s| s.median)
}

/// Throughput lost with a probe, in percent of the throughput without it (negative: faster).
pub fn loss_pct(without: f64, with: f64) -> f64 {
    (1.0 - with / without) * 100.0
}

/// Increase of a latency with a probe, in percent of the latency without it.
pub fn increase_pct(without: f64, with: f64) -> f64 {
    (with / without - 1.0) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None, "NaNs are not values");
    }

    #[test]
    fn spread_is_min_max_and_quartiles() {
        let s = summarize(&[5.0, 1.0, 4.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!((s.min, s.max, s.median), (1.0, 5.0, 3.0));
        assert_eq!((s.p25, s.p75), (2.0, 4.0));
        // Interpolated: position 0.75 between 10 and 20.
        let s = summarize(&[10.0, 20.0]).unwrap();
        assert_eq!(s.p25, 12.5);
        assert_eq!(s.p75, 17.5);
    }

    #[test]
    fn ratios_are_percent_of_the_baseline() {
        assert!((loss_pct(100.0, 97.0) - 3.0).abs() < 1e-9);
        assert!((loss_pct(100.0, 101.0) + 1.0).abs() < 1e-9);
        assert!((increase_pct(200.0, 210.0) - 5.0).abs() < 1e-9);
        assert!(
            loss_pct(0.0, 1.0).is_infinite(),
            "a zero baseline is not hidden"
        );
    }
}
