//! Dataset statistics: counts and length histograms, for the ingest metrics and the report.

use super::{Example, Format};
use serde::Serialize;

/// A histogram over power-of-two buckets: bucket `i` counts lengths in `[2^i, 2^(i+1))`
/// (bucket 0 also holds length 0). Log buckets keep it small and readable for any data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// `(lower bound, count)` per non-empty bucket, ascending.
    pub buckets: Vec<(usize, usize)>,
    /// Smallest length seen.
    pub min: usize,
    /// Largest length seen.
    pub max: usize,
    /// Mean length, rounded down.
    pub mean: usize,
}

impl Histogram {
    /// Builds a histogram of `lengths`.
    pub fn of(lengths: impl IntoIterator<Item = usize>) -> Self {
        let mut counts = std::collections::BTreeMap::<usize, usize>::new();
        let (mut min, mut max, mut sum, mut n) = (usize::MAX, 0, 0usize, 0usize);
        for len in lengths {
            let lower = if len == 0 { 0 } else { 1 << len.ilog2() };
            *counts.entry(lower).or_default() += 1;
            min = min.min(len);
            max = max.max(len);
            sum += len;
            n += 1;
        }
        if n == 0 {
            return Self::default();
        }
        Self {
            buckets: counts.into_iter().collect(),
            min,
            max,
            mean: sum / n,
        }
    }
}

/// What the ingest stage reports about one split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetStats {
    /// Examples kept.
    pub examples: usize,
    /// Examples per format (normally one format per dataset).
    pub formats: std::collections::BTreeMap<String, usize>,
    /// Lengths in characters.
    pub chars: Histogram,
}

impl DatasetStats {
    /// Describes `examples`.
    pub fn of<'a>(examples: impl IntoIterator<Item = &'a Example> + Clone) -> Self {
        let mut formats = std::collections::BTreeMap::new();
        let mut n = 0;
        for e in examples.clone() {
            *formats.entry(format_name(e.format())).or_default() += 1;
            n += 1;
        }
        Self {
            examples: n,
            formats,
            chars: Histogram::of(examples.into_iter().map(Example::char_len)),
        }
    }
}

fn format_name(f: Format) -> String {
    f.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_powers_of_two() {
        let h = Histogram::of([0, 1, 3, 4, 7, 8, 100]);
        assert_eq!(
            h.buckets,
            vec![(0, 1), (1, 1), (2, 1), (4, 2), (8, 1), (64, 1)]
        );
        assert_eq!((h.min, h.max, h.mean), (0, 100, 17));
        assert_eq!(Histogram::of([]), Histogram::default());
    }

    #[test]
    fn stats_count_formats() {
        let rows = [
            Example::Text { text: "abc".into() },
            Example::Completion {
                prompt: "p".into(),
                completion: "cc".into(),
                category: None,
                choices: Vec::new(),
            },
        ];
        let s = DatasetStats::of(rows.iter());
        assert_eq!(s.examples, 2);
        assert_eq!(s.formats["text"], 1);
        assert_eq!(s.formats["completions"], 1);
        assert_eq!(s.chars.max, 3);
    }
}
