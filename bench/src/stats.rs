//! Summary statistics of repeated measurements: this machine is shared and noisy, so every
//! figure is a median with its p95 and range, never a single run or a mean.

use serde::Serialize;

/// Median, p95 and range of a set of samples (any unit; the report knows which).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no samples. NaNs are dropped (a failed run is counted elsewhere, not averaged
    /// in).
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Stats {
            n: sorted.len(),
            median: quantile(&sorted, 0.5),
            p95: quantile(&sorted, 0.95),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The `q` quantile of sorted, non-empty `sorted`, linearly interpolated between the two
/// nearest ranks (numpy's default), so the median of an even count is the mean of the middle
/// two.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len() - 1;
    #[allow(clippy::cast_precision_loss)] // sample counts are far below 2^52
    let pos = q * last as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0 <= pos <= last
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    #[allow(clippy::cast_precision_loss)]
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_nan_only_give_none() {
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }

    #[test]
    fn odd_and_even_medians() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]).expect("stats");
        assert!((s.median - 2.5).abs() < 1e-12);
    }

    #[test]
    fn p95_interpolates_near_the_top() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&samples).expect("stats");
        assert!((s.p95 - 95.05).abs() < 1e-9, "{}", s.p95);
        assert!((s.median - 50.5).abs() < 1e-9);
        let one = Stats::of(&[7.0]).expect("stats");
        assert_eq!(
            (one.median, one.p95, one.min, one.max),
            (7.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn nan_samples_are_ignored() {
        let s = Stats::of(&[1.0, f64::NAN, 3.0]).expect("stats");
        assert_eq!((s.n, s.median), (2, 2.0));
    }
}
