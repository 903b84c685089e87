//! Confidence for accuracies measured on a finite set of examples (issue #20): a 95%
//! interval for one accuracy, and a paired test for two models scored on the same
//! examples.
//!
//! - [`wilson`]: the Wilson score interval for a proportion (Wilson 1927). Unlike the
//!   normal ("Wald") interval it stays inside `[0, 1]` and keeps close to its nominal
//!   coverage at 0 or all correct and at the 50 to 100 examples an evaluation scores
//!   (Newcombe 1998, method 3; Brown, Cai & DasGupta 2001).
//! - [`mcnemar`]: the exact McNemar test for two models on the same examples. Only the
//!   discordant examples (one right, the other wrong) carry information about which is
//!   better; under "equally good" each is a fair coin, so the two-sided p-value is a
//!   binomial tail (McNemar 1947; the exact form as in Fagerland, Lydersen & Laake 2013).
//!   Pairing is what makes a 3-point difference on 100 examples testable at all: the
//!   unpaired intervals of 0.81 and 0.84 overlap almost entirely.
//! - [`paired_difference`]: the difference of the two accuracies with a 95% interval
//!   (Newcombe 1998b, method 10: Wilson intervals of each accuracy combined with the
//!   correlation of the paired outcomes), so a report can say how large a difference the
//!   data allow, not only whether it is zero.
//! - [`bootstrap_difference`]: a percentile bootstrap interval of the difference of two
//!   accuracies whose example sets overlap only in part (the `monitor` kind: a pinned
//!   probe set scored every night, plus new data that differs from night to night).
//!   Shared examples are resampled as pairs, the others on their own side (a stratified
//!   bootstrap, Efron & Tibshirani 1993, ch. 13), so a fully paired comparison is the
//!   paired bootstrap and a disjoint one the two-sample bootstrap.

use serde::{Deserialize, Serialize};

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A proportion with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// Successes over trials.
    pub value: f64,
    /// Lower end of the 95% Wilson interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Successes.
    pub successes: usize,
    /// Trials.
    pub n: usize,
}

impl Proportion {
    /// `successes` of `n`, with its Wilson interval; `None` for no trials.
    pub fn of(successes: usize, n: usize) -> Option<Self> {
        let (low, high) = wilson(successes, n, Z95)?;
        Some(Self {
            value: successes as f64 / n as f64,
            low,
            high,
            successes,
            n,
        })
    }

    /// `0.810 [0.722, 0.875]`.
    pub fn display(&self) -> String {
        format!("{:.3} [{:.3}, {:.3}]", self.value, self.low, self.high)
    }
}

/// The Wilson score interval of `successes` out of `n` at normal quantile `z`; `None`
/// when `n` is 0 or `successes > n`.
pub fn wilson(successes: usize, n: usize, z: f64) -> Option<(f64, f64)> {
    if n == 0 || successes > n {
        return None;
    }
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 and n the formula gives the bound exactly in theory; clamp the rounding.
    let low = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if successes as f64 == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Some((low, high))
}

/// The two-sided exact McNemar p-value for `only_a` examples right only under A and
/// `only_b` right only under B: `min(1, 2 P(X <= min(only_a, only_b)))`,
/// `X ~ Binomial(only_a + only_b, 1/2)`; 1 when there are no discordant examples.
pub fn mcnemar(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // Sum the binomial probabilities in log space: n may be in the thousands.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// The outcome of comparing two models on the same examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// Examples scored by both.
    pub n: usize,
    /// Right under A only.
    pub only_a: usize,
    /// Right under B only.
    pub only_b: usize,
    /// Accuracy of A minus accuracy of B.
    pub difference: f64,
    /// Lower end of the difference's 95% interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// The exact McNemar p-value of "equally accurate".
    pub p_value: f64,
}

impl PairedComparison {
    /// Whether the data tell the two apart at the 5% level.
    pub fn distinguishable(&self) -> bool {
        self.p_value < 0.05
    }
}

/// Compares per-example correctness `a` and `b` of two models on the same examples (the
/// same order); `None` when the lengths differ or there are none.
pub fn paired_difference(a: &[bool], b: &[bool]) -> Option<PairedComparison> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let n = a.len();
    let count =
        |f: &dyn Fn(bool, bool) -> bool| a.iter().zip(b).filter(|(x, y)| f(**x, **y)).count();
    let both = count(&|x, y| x && y);
    let only_a = count(&|x, y| x && !y);
    let only_b = count(&|x, y| !x && y);
    let neither = n - both - only_a - only_b;
    let (pa, pb) = (
        (both + only_a) as f64 / n as f64,
        (both + only_b) as f64 / n as f64,
    );
    let (la, ua) = wilson(both + only_a, n, Z95)?;
    let (lb, ub) = wilson(both + only_b, n, Z95)?;
    // Newcombe's method 10: the phi correlation of the 2x2 table, 0 when a margin is 0.
    let (nf, bf, cf, df) = (both as f64, only_a as f64, only_b as f64, neither as f64);
    let margins = (nf + bf) * (cf + df) * (nf + cf) * (bf + df);
    let phi = if margins > 0.0 {
        (nf * df - bf * cf) / margins.sqrt()
    } else {
        0.0
    };
    let d = pa - pb;
    let low_sq = (pa - la).powi(2) - 2.0 * phi * (pa - la) * (ub - pb) + (ub - pb).powi(2);
    let high_sq = (ua - pa).powi(2) - 2.0 * phi * (ua - pa) * (pb - lb) + (pb - lb).powi(2);
    Some(PairedComparison {
        n,
        only_a,
        only_b,
        difference: d,
        low: d - low_sq.max(0.0).sqrt(),
        high: d + high_sq.max(0.0).sqrt(),
        p_value: mcnemar(only_a, only_b),
    })
}

/// A difference of two accuracies with a bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapDifference {
    /// Accuracy of A minus accuracy of B, on the data as measured.
    pub difference: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// The interval's confidence (0.95).
    pub confidence: f64,
    /// Resamples drawn.
    pub resamples: usize,
}

/// Outcomes of two evaluations A and B: `pairs` are the examples both scored (A's and B's
/// correctness), `only_a` and `only_b` those scored by one side only.
#[derive(Debug, Clone, Copy)]
pub struct Outcomes<'a> {
    /// `(a_correct, b_correct)` per shared example.
    pub pairs: &'a [(bool, bool)],
    /// Correctness on examples only A scored.
    pub only_a: &'a [bool],
    /// Correctness on examples only B scored.
    pub only_b: &'a [bool],
}

impl Outcomes<'_> {
    fn accuracies(&self, pairs: &[usize], only_a: &[usize], only_b: &[usize]) -> (f64, f64) {
        let a = pairs.iter().filter(|&&i| self.pairs[i].0).count()
            + only_a.iter().filter(|&&i| self.only_a[i]).count();
        let b = pairs.iter().filter(|&&i| self.pairs[i].1).count()
            + only_b.iter().filter(|&&i| self.only_b[i]).count();
        let na = (pairs.len() + only_a.len()).max(1) as f64;
        let nb = (pairs.len() + only_b.len()).max(1) as f64;
        (a as f64 / na, b as f64 / nb)
    }
}

/// The percentile bootstrap interval (at `confidence`, e.g. 0.95) of accuracy(A) −
/// accuracy(B), from `resamples` draws seeded by `seed` (the same data give the same
/// interval, so a rerun decides the same). `None` when a side has no example.
pub fn bootstrap_difference(
    outcomes: Outcomes<'_>,
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<BootstrapDifference> {
    use rand::{Rng, SeedableRng};
    let n_pairs = outcomes.pairs.len();
    let (n_a, n_b) = (outcomes.only_a.len(), outcomes.only_b.len());
    if n_pairs + n_a == 0 || n_pairs + n_b == 0 || resamples == 0 {
        return None;
    }
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let (a, b) = outcomes.accuracies(&all(n_pairs), &all(n_a), &all(n_b));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<usize> { (0..n).map(|_| rng.random_range(0..n)).collect() };
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| {
            let (p, x, y) = (draw(n_pairs), draw(n_a), draw(n_b));
            let (ra, rb) = outcomes.accuracies(&p, &x, &y);
            ra - rb
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| diffs[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    Some(BootstrapDifference {
        difference: a - b,
        low: at(tail),
        high: at(1.0 - tail),
        confidence,
        resamples,
    })
}

/// `successes` of `n` as the evaluate report's [`Rate`](pipe_schema::evaluate::Rate) (the
/// same fields as [`Proportion`]); `None` for no trials.
pub fn rate(successes: usize, n: usize) -> Option<pipe_schema::evaluate::Rate> {
    Proportion::of(successes, n).map(Into::into)
}

impl From<Proportion> for pipe_schema::evaluate::Rate {
    fn from(p: Proportion) -> Self {
        Self {
            value: p.value,
            low: p.low,
            high: p.high,
            successes: p.successes,
            n: p.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The Wilson intervals of Newcombe (1998), "Two-sided confidence intervals for the
    /// single proportion", Table II, method 3, to the four places printed there.
    #[test]
    fn wilson_matches_newcombes_table() {
        for (k, n, low, high) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson(k, n, Z95).unwrap();
            assert!(
                (l - low).abs() < 5e-5 && (h - high).abs() < 5e-5,
                "{k}/{n}: {l} {h}"
            );
        }
        let all = Proportion::of(20, 20).unwrap();
        assert_eq!((all.value, all.high), (1.0, 1.0));
        assert!((all.low - (1.0 - 0.1611)).abs() < 5e-5, "symmetric to 0/20");
        assert_eq!(
            Proportion::of(81, 100).unwrap().display(),
            "0.810 [0.722, 0.875]"
        );
        assert_eq!(wilson(0, 0, Z95), None);
        assert_eq!(wilson(3, 2, Z95), None);
    }

    /// Exact binomial tails worked out by hand: 1 vs 9 discordant examples gives
    /// 2 (C(10,0) + C(10,1)) / 2^10 = 22/1024; equal counts give 1.
    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        assert!((mcnemar(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar(9, 1) - 22.0 / 1024.0).abs() < 1e-12, "symmetric");
        assert!((mcnemar(0, 5) - 2.0 / 32.0).abs() < 1e-12);
        assert_eq!(mcnemar(4, 4), 1.0);
        assert_eq!(mcnemar(0, 0), 1.0);
        // Large counts stay finite and sensible: 500 vs 600 is significant, 500 vs 520 not.
        assert!(mcnemar(500, 600) < 0.01);
        assert!(mcnemar(500, 520) > 0.4);
    }

    #[test]
    fn paired_difference_counts_the_discordant_examples() {
        let a = [true, true, true, false, false, true];
        let b = [true, false, false, false, true, true];
        let c = paired_difference(&a, &b).unwrap();
        assert_eq!((c.n, c.only_a, c.only_b), (6, 2, 1));
        assert!((c.difference - 1.0 / 6.0).abs() < 1e-12);
        assert!(c.low < c.difference && c.difference < c.high);
        assert!(!c.distinguishable());
        assert_eq!(paired_difference(&a, &b[..3]), None);
        assert_eq!(paired_difference(&[], &[]), None);
        // Identical answers: no difference, an interval around 0, p = 1.
        let same = paired_difference(&a, &a).unwrap();
        assert_eq!((same.difference, same.p_value), (0.0, 1.0));
        assert!(same.low <= 0.0 && same.high >= 0.0);
    }

    /// The difference's interval covers the true difference about 95% of the time: two
    /// correlated models (accuracies 0.80 and 0.74 on 100 examples), 2000 seeded draws.
    /// Newcombe reports coverage close to nominal for method 10; a formula slip (a wrong
    /// sign of the correlation term, a swapped bound) drops it well below 0.93 or pushes
    /// it to 1.
    #[test]
    fn the_difference_interval_has_its_nominal_coverage() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
        // Joint outcome probabilities: both right 0.70, only A 0.10, only B 0.04.
        let (both, only_a, only_b) = (0.70, 0.10, 0.04);
        let truth = only_a - only_b;
        let (mut covered, mut significant, draws) = (0, 0, 2000);
        for _ in 0..draws {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..100 {
                let u: f64 = rng.random();
                a.push(u < both + only_a);
                b.push(u < both || (u >= both + only_a && u < both + only_a + only_b));
            }
            let c = paired_difference(&a, &b).unwrap();
            covered += usize::from(c.low <= truth && truth <= c.high);
            significant += usize::from(c.distinguishable());
        }
        let coverage = covered as f64 / draws as f64;
        assert!((0.93..0.975).contains(&coverage), "coverage {coverage}");
        // And the test has some power here, but far from all (a 6-point gap on 100).
        let power = significant as f64 / draws as f64;
        assert!((0.1..0.9).contains(&power), "power {power}");
    }

    fn outcomes(pairs: &[(bool, bool)]) -> Outcomes<'_> {
        Outcomes {
            pairs,
            only_a: &[],
            only_b: &[],
        }
    }

    /// Pairing is what the bootstrap is for: 10 of 100 examples flip from right to wrong
    /// and nothing else changes. Paired, the interval excludes 0; the same accuracies as
    /// two unrelated samples give an interval that includes it.
    #[test]
    fn the_paired_bootstrap_sees_what_unpaired_samples_hide() {
        let pairs: Vec<(bool, bool)> = (0..100).map(|i| (i < 80, i < 70)).collect();
        let paired = bootstrap_difference(outcomes(&pairs), 2000, 0.95, 7).unwrap();
        assert!((paired.difference - 0.10).abs() < 1e-12);
        assert!(paired.low > 0.03 && paired.high < 0.17, "{paired:?}");
        let a: Vec<bool> = pairs.iter().map(|p| p.0).collect();
        let b: Vec<bool> = pairs.iter().map(|p| p.1).collect();
        let apart = Outcomes {
            pairs: &[],
            only_a: &a,
            only_b: &b,
        };
        let unpaired = bootstrap_difference(apart, 2000, 0.95, 7).unwrap();
        assert!((unpaired.difference - 0.10).abs() < 1e-12);
        assert!(unpaired.low < 0.0 && unpaired.high > 0.2, "{unpaired:?}");
        // Seeded: the same data give the same interval.
        assert_eq!(
            bootstrap_difference(outcomes(&pairs), 2000, 0.95, 7),
            Some(paired)
        );
        assert_eq!(bootstrap_difference(outcomes(&[]), 100, 0.95, 0), None);
    }

    /// Coverage: the paired bootstrap's 95% interval covers the true difference about 95%
    /// of the time (same correlated models as above; the percentile bootstrap runs a
    /// little narrow at n = 100, so the band is 0.92 to 0.975).
    #[test]
    fn the_bootstrap_interval_has_about_its_nominal_coverage() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let (both, only_a, only_b) = (0.70, 0.10, 0.04);
        let truth = only_a - only_b;
        let (mut covered, draws) = (0, 400);
        for seed in 0..draws {
            let pairs: Vec<(bool, bool)> = (0..100)
                .map(|_| {
                    let u: f64 = rng.random();
                    (
                        u < both + only_a,
                        u < both || (u >= both + only_a && u < both + only_a + only_b),
                    )
                })
                .collect();
            let c = bootstrap_difference(outcomes(&pairs), 1000, 0.95, seed).unwrap();
            covered += usize::from(c.low <= truth && truth <= c.high);
        }
        let coverage = covered as f64 / draws as f64;
        assert!((0.92..0.98).contains(&coverage), "coverage {coverage}");
    }
}
