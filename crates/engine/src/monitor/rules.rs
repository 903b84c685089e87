//! The rules of a regression, and the night's decision.
//!
//! [`judge`] compares a current evaluation with its baseline by [`Rules`]: the accuracy
//! must have dropped by at least `min_absolute_drop` and by `min_relative_drop` of the
//! baseline, and the bootstrap interval of baseline minus current
//! ([`crate::stats::bootstrap_difference`], examples shared by both resampled as pairs)
//! must lie above 0, so that the noise of a small probe set alone never fires. [`decide`]
//! adds `consecutive`: the monitor fires after that many regressed evaluations of the same
//! model in a row. [`gate`] is the same judgement turned around, for a retrained
//! candidate: it replaces the watched model only if the watched model "regressed" against
//! it, that is, if it is better by as much, as surely.

use super::history::{Entry, Scored};
use crate::stats::{BootstrapDifference, Outcomes, bootstrap_difference};
use pipe_schema::monitor::Rules;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A current evaluation against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The baseline's accuracy.
    pub baseline: f64,
    /// The current accuracy.
    pub current: f64,
    /// `baseline - current`.
    pub drop: f64,
    /// `drop / baseline` (0 when the baseline is 0).
    pub relative_drop: f64,
    /// The bootstrap interval of `baseline - current`.
    pub interval: Option<BootstrapDifference>,
    /// Examples scored by both.
    pub shared: usize,
    /// Whether every rule held.
    pub regressed: bool,
    /// Why, in words: the rule that did not hold, or all of them.
    pub why: String,
}

/// Judges `current` against `baseline`. The bootstrap is seeded from `seed` (the data's
/// hash), so the same evaluations are always judged alike.
pub fn judge(baseline: &[Scored], current: &[Scored], rules: &Rules, seed: u64) -> Judgement {
    let now: HashMap<&str, bool> = current.iter().map(|s| (s.key.as_str(), s.ok)).collect();
    let before: HashMap<&str, bool> = baseline.iter().map(|s| (s.key.as_str(), s.ok)).collect();
    let pairs: Vec<(bool, bool)> = baseline
        .iter()
        .filter_map(|s| now.get(s.key.as_str()).map(|&c| (s.ok, c)))
        .collect();
    let only_base: Vec<bool> = baseline
        .iter()
        .filter(|s| !now.contains_key(s.key.as_str()))
        .map(|s| s.ok)
        .collect();
    let only_current: Vec<bool> = current
        .iter()
        .filter(|s| !before.contains_key(s.key.as_str()))
        .map(|s| s.ok)
        .collect();
    let interval = bootstrap_difference(
        Outcomes {
            pairs: &pairs,
            only_a: &only_base,
            only_b: &only_current,
        },
        rules.resamples,
        rules.confidence,
        seed,
    );
    let (b, c) = (
        super::history::accuracy(baseline),
        super::history::accuracy(current),
    );
    let drop = b - c;
    let relative_drop = if b > 0.0 { drop / b } else { 0.0 };
    // A small tolerance: 0.85 - 0.80 is 0.04999… in binary.
    const EPS: f64 = 1e-9;
    let pct = |v: f64| format!("{:.1} points", v * 100.0);
    let why = if drop <= 0.0 {
        format!("no drop ({:.3} -> {:.3})", b, c)
    } else if drop + EPS < rules.min_absolute_drop {
        format!(
            "dropped {} , less than min_absolute_drop ({})",
            pct(drop),
            pct(rules.min_absolute_drop)
        )
        .replace(" ,", ",")
    } else if relative_drop + EPS < rules.min_relative_drop {
        format!(
            "dropped {:.1}% of the baseline, less than min_relative_drop ({:.1}%)",
            relative_drop * 100.0,
            rules.min_relative_drop * 100.0
        )
    } else {
        match &interval {
            Some(i) if i.low > 0.0 => format!(
                "dropped {} ({:.3} -> {:.3}); {:.0}% interval of the drop [{:.3}, {:.3}] excludes 0",
                pct(drop),
                b,
                c,
                rules.confidence * 100.0,
                i.low,
                i.high
            ),
            Some(i) => format!(
                "dropped {} ({:.3} -> {:.3}), but the {:.0}% interval of the drop [{:.3}, {:.3}] \
                 includes 0: within the noise of {} examples",
                pct(drop),
                b,
                c,
                rules.confidence * 100.0,
                i.low,
                i.high,
                current.len()
            ),
            None => "no examples to compare".into(),
        }
    };
    let regressed = drop > 0.0
        && drop + EPS >= rules.min_absolute_drop
        && relative_drop + EPS >= rules.min_relative_drop
        && interval.is_some_and(|i| i.low > 0.0);
    Judgement {
        baseline: b,
        current: c,
        drop,
        relative_drop,
        interval,
        shared: pairs.len(),
        regressed,
        why,
    }
}

/// What the night's evaluation means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The model's first evaluation: it is the baseline from now on.
    Baseline,
    /// No regression.
    Ok,
    /// Regressed, but not yet `consecutive` times in a row.
    Regression {
        /// Regressed evaluations in a row, this one included.
        streak: u32,
        /// How many fire.
        needed: u32,
    },
    /// Regressed `consecutive` times in a row: retrain.
    Fired {
        /// Regressed evaluations in a row.
        streak: u32,
    },
}

impl Decision {
    /// One word for tables and `--json`.
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Baseline => "baseline",
            Decision::Ok => "ok",
            Decision::Regression { .. } => "regression",
            Decision::Fired { .. } => "fired",
        }
    }
}

/// The baseline of `model_hash` in `history`: its first evaluation.
pub fn baseline<'a>(history: &'a [Entry], model_hash: &str) -> Option<&'a Entry> {
    history.iter().find(|e| e.model_hash == model_hash)
}

/// The decision for `current` (already judged: `current.regressed`), given the history
/// before it: the streak counts the evaluations of the same model at the end of the
/// history that regressed, plus this one.
pub fn decide(history: &[Entry], current: &Entry, rules: &Rules) -> Decision {
    if baseline(history, &current.model_hash).is_none() {
        return Decision::Baseline;
    }
    if !current.regressed {
        return Decision::Ok;
    }
    let before = history
        .iter()
        .rev()
        .filter(|e| e.model_hash == current.model_hash)
        .take_while(|e| e.regressed)
        .count() as u32;
    let streak = before + 1;
    if streak >= rules.consecutive {
        Decision::Fired { streak }
    } else {
        Decision::Regression {
            streak,
            needed: rules.consecutive,
        }
    }
}

/// Whether a retrained candidate replaces the watched model: the watched model must
/// "regress" against the candidate by the same rules, on the same examples.
pub fn gate(watched: &[Scored], candidate: &[Scored], rules: &Rules, seed: u64) -> Judgement {
    let mut j = judge(candidate, watched, rules, seed);
    j.why = if j.regressed {
        format!("the candidate wins: {}", j.why)
    } else {
        format!(
            "the candidate does not beat the watched model by the rules: {}",
            j.why
        )
    };
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scored(oks: &[bool]) -> Vec<Scored> {
        oks.iter()
            .enumerate()
            .map(|(i, &ok)| Scored {
                key: format!("k{i}"),
                ok,
            })
            .collect()
    }

    fn entry(hash: &str, regressed: bool) -> Entry {
        Entry {
            at: String::new(),
            model: hash.into(),
            model_hash: hash.into(),
            data_hash: String::new(),
            examples: Vec::new(),
            regressed,
        }
    }

    /// 80 of 100 right, then the first `lost` of them wrong.
    fn fixture(lost: usize) -> (Vec<Scored>, Vec<Scored>) {
        let before: Vec<bool> = (0..100).map(|i| i < 80).collect();
        let after: Vec<bool> = (0..100).map(|i| i < 80 && i >= lost).collect();
        (scored(&before), scored(&after))
    }

    #[test]
    fn a_clear_drop_regresses_and_says_why() {
        let (b, c) = fixture(20);
        let j = judge(&b, &c, &Rules::default(), 1);
        assert!(j.regressed, "{j:?}");
        assert!((j.drop - 0.20).abs() < 1e-12);
        assert!((j.relative_drop - 0.25).abs() < 1e-12);
        assert_eq!(j.shared, 100);
        assert!(j.why.contains("excludes 0"), "{}", j.why);
    }

    #[test]
    fn each_rule_can_hold_a_drop_back() {
        let (b, c) = fixture(4);
        let j = judge(&b, &c, &Rules::default(), 1);
        assert!(!j.regressed);
        assert!(j.why.contains("min_absolute_drop"), "{}", j.why);
        let (b, c) = fixture(10);
        let strict = Rules {
            min_relative_drop: 0.2,
            ..Rules::default()
        };
        let j = judge(&b, &c, &strict, 1);
        assert!(!j.regressed);
        assert!(j.why.contains("min_relative_drop"), "{}", j.why);
        // Noise: 2 of 10 right become wrong and 1 wrong becomes right on a 10-example
        // probe: a 10-point drop, over min_absolute_drop, but the interval includes 0.
        let b = scored(&[
            true, true, true, true, true, true, false, false, false, false,
        ]);
        let c = scored(&[
            false, false, true, true, true, true, true, false, false, false,
        ]);
        let j = judge(&b, &c, &Rules::default(), 1);
        assert!((j.drop - 0.1).abs() < 1e-12);
        assert!(!j.regressed);
        assert!(j.why.contains("includes 0"), "{}", j.why);
    }

    #[test]
    fn new_examples_are_compared_unpaired() {
        // Baseline: 80/100 on its own examples; tonight: 30/100 on entirely new ones.
        let b = scored(&(0..100).map(|i| i < 80).collect::<Vec<_>>());
        let c: Vec<Scored> = (0..100)
            .map(|i| Scored {
                key: format!("new{i}"),
                ok: i < 30,
            })
            .collect();
        let j = judge(&b, &c, &Rules::default(), 1);
        assert_eq!(j.shared, 0);
        assert!(j.regressed, "{j:?}");
    }

    #[test]
    fn consecutive_counts_the_same_models_regressions_in_a_row() {
        let rules = Rules {
            consecutive: 2,
            ..Rules::default()
        };
        let mut history = vec![entry("m", false)];
        assert_eq!(decide(&[], &entry("m", true), &rules), Decision::Baseline);
        assert_eq!(decide(&history, &entry("m", false), &rules), Decision::Ok);
        assert_eq!(
            decide(&history, &entry("m", true), &rules),
            Decision::Regression {
                streak: 1,
                needed: 2
            }
        );
        history.push(entry("m", true));
        assert_eq!(
            decide(&history, &entry("m", true), &rules),
            Decision::Fired { streak: 2 }
        );
        // A recovery in between resets the streak; another model's entries do not count.
        history.push(entry("m", false));
        history.push(entry("other", true));
        assert_eq!(
            decide(&history, &entry("m", true), &rules).word(),
            "regression"
        );
        assert_eq!(
            decide(&history, &entry("new", true), &rules),
            Decision::Baseline
        );
    }

    #[test]
    fn the_gate_is_the_rule_turned_around() {
        let (better, worse) = fixture(20);
        assert!(gate(&worse, &better, &Rules::default(), 1).regressed);
        assert!(!gate(&better, &worse, &Rules::default(), 1).regressed);
        let g = gate(&better, &better, &Rules::default(), 1);
        assert!(!g.regressed && g.why.contains("does not beat"), "{}", g.why);
    }

    proptest! {
        /// Getting no worse never regresses, whatever the data and the rules.
        #[test]
        fn no_drop_never_regresses(
            before in proptest::collection::vec(any::<bool>(), 1..80),
            gains in proptest::collection::vec(any::<bool>(), 80),
            abs in 0.0f64..0.5,
            seed in any::<u64>(),
        ) {
            let after: Vec<bool> = before.iter().zip(&gains).map(|(b, g)| *b || *g).collect();
            let rules = Rules { min_absolute_drop: abs, resamples: 200, ..Rules::default() };
            prop_assert!(!judge(&scored(&before), &scored(&after), &rules, seed).regressed);
            prop_assert!(!judge(&scored(&before), &scored(&before), &rules, seed).regressed);
        }

        /// Losing more right answers never turns a regression into none (for the drop
        /// rules; the interval moves the same way with paired data).
        #[test]
        fn more_losses_keep_a_regression(lost in 0usize..60, more in 0usize..20, seed in any::<u64>()) {
            let rules = Rules { resamples: 500, ..Rules::default() };
            let (b, c1) = fixture(lost);
            let (_, c2) = fixture((lost + more).min(80));
            let (j1, j2) = (judge(&b, &c1, &rules, seed), judge(&b, &c2, &rules, seed));
            prop_assert!(j2.drop >= j1.drop);
            // The same seed draws the same examples, and the lost ones are a superset.
            if j1.regressed {
                prop_assert!(j2.regressed, "{:?} then {:?}", j1, j2);
            }
        }

        /// It fires exactly when the last `consecutive` evaluations of the model, this one
        /// included, regressed.
        #[test]
        fn fires_exactly_after_n_in_a_row(
            flags in proptest::collection::vec(any::<bool>(), 1..12),
            n in 1u32..5,
        ) {
            let rules = Rules { consecutive: n, ..Rules::default() };
            let history: Vec<Entry> = std::iter::once(entry("m", false))
                .chain(flags[..flags.len() - 1].iter().map(|&r| entry("m", r)))
                .collect();
            let current = entry("m", *flags.last().unwrap());
            let tail = flags.iter().rev().take_while(|&&r| r).count() as u32;
            let fired = matches!(decide(&history, &current, &rules), Decision::Fired { .. });
            prop_assert_eq!(fired, tail >= n);
        }
    }
}
