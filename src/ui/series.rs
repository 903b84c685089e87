//! Chart data: a run's loss curves as the page draws them, long series thinned on the
//! server so a page stays fast with many runs or 100,000-step runs.
//!
//! Thinning keeps, per bucket of consecutive points, the first, the lowest and the highest
//! (in step order), so spikes and the curve's envelope survive and the last point is always
//! the latest value; a chart of `max` buckets gets at most `3 × max` points.

use pipe_engine::history::record::Series;
use serde::Serialize;

/// One curve of one stage, thinned for a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// The stage.
    pub stage: String,
    /// The metric (`loss`, `valid_loss`, ...).
    pub name: String,
    /// `(step, value)`, in step order.
    pub points: Vec<(u64, f64)>,
    /// How many points the full series has.
    pub total: usize,
}

/// Buckets a chart gets by default: about one per horizontal pixel pair of a wide chart.
pub const DEFAULT_BUCKETS: usize = 400;

/// `points` thinned to at most `3 × buckets` points (min/max per bucket, plus each
/// bucket's first point and the very last one).
pub fn downsample(points: &[(u64, f64)], buckets: usize) -> Vec<(u64, f64)> {
    let buckets = buckets.max(1);
    if points.len() <= 3 * buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(3 * buckets + 1);
    for chunk in points.chunks(size) {
        let first = 0;
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[lo].1 {
                lo = i;
            }
            if p.1 > chunk[hi].1 {
                hi = i;
            }
        }
        let mut picks = [first, lo, hi];
        picks.sort_unstable();
        let mut last = None;
        for i in picks {
            if last != Some(i) {
                out.push(chunk[i]);
                last = Some(i);
            }
        }
    }
    if out.last() != points.last() {
        out.push(*points.last().expect("not empty"));
    }
    out
}

/// The curves of a finished stage's stored series.
pub fn from_series(stage: &str, series: &[Series], buckets: usize) -> Vec<Curve> {
    series
        .iter()
        .map(|s| {
            let full: Vec<(u64, f64)> = s.points.iter().map(|&(x, y, _)| (x, y)).collect();
            Curve {
                stage: stage.to_owned(),
                name: s.name.clone(),
                total: full.len(),
                points: downsample(&full, buckets),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_are_kept_whole() {
        let pts: Vec<(u64, f64)> = (0..10).map(|i| (i, i as f64)).collect();
        assert_eq!(downsample(&pts, 4), pts);
    }

    #[test]
    fn long_series_keep_spikes_and_the_last_point() {
        let mut pts: Vec<(u64, f64)> = (0..100_000).map(|i| (i, 1.0)).collect();
        pts[54_321].1 = 9.0;
        pts[77_777].1 = -3.0;
        let thin = downsample(&pts, 100);
        assert!(thin.len() <= 301, "{}", thin.len());
        assert!(thin.contains(&(54_321, 9.0)), "the spike up survives");
        assert!(thin.contains(&(77_777, -3.0)), "the spike down survives");
        assert_eq!(thin.last(), Some(&(99_999, 1.0)));
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
    }
}
