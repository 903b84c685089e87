//! Stopping unpromising trials early: the median stopping rule.
//!
//! A running trial reports intermediate values (a validation loss every N steps). At a
//! check step it is stopped when its best value so far is worse than the median of the
//! values that *completed* trials reported at that same step (Golovin et al. 2017,
//! "Google Vizier"; the rule of Optuna's `MedianPruner`). No check happens before
//! `min_trials` trials completed, before `warmup_steps`, or off the `interval` grid, so
//! early noise and a lack of history cannot stop a trial.

use super::suggest::Direction;
use serde::{Deserialize, Serialize};

/// The median rule's settings (`prune:` in a tune stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedianRule {
    /// Completed trials needed before anything is pruned.
    #[serde(default = "default_min_trials")]
    pub min_trials: usize,
    /// Steps before the first check.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Check every this many steps after the warmup.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_min_trials() -> usize {
    3
}
fn default_interval() -> u64 {
    1
}

impl Default for MedianRule {
    fn default() -> Self {
        Self {
            min_trials: default_min_trials(),
            warmup_steps: 0,
            interval: default_interval(),
        }
    }
}

/// Median of a non-empty list.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

impl MedianRule {
    /// Whether to stop a trial whose reports so far are `current` (`(step, value)`, in
    /// step order), given the reports of completed trials; `Some(reason)` to stop.
    pub fn check(
        &self,
        direction: Direction,
        current: &[(u64, f64)],
        completed: &[Vec<(u64, f64)>],
    ) -> Option<String> {
        let &(step, _) = current.last()?;
        if step < self.warmup_steps
            || !(step - self.warmup_steps).is_multiple_of(self.interval.max(1))
            || completed.len() < self.min_trials.max(1)
        {
            return None;
        }
        let mut at_step: Vec<f64> = completed
            .iter()
            .filter_map(|reports| reports.iter().find(|(s, _)| *s == step).map(|r| r.1))
            .filter(|v| v.is_finite())
            .collect();
        if at_step.is_empty() {
            return None;
        }
        let n = at_step.len();
        let med = median(&mut at_step);
        let best = current
            .iter()
            .map(|r| r.1)
            .filter(|v| v.is_finite())
            .reduce(|a, b| if direction.better(a, b) { a } else { b });
        match best {
            // A trial reporting NaN has diverged: nothing it does later is comparable.
            None => Some(format!(
                "step {step}: every reported value is NaN or infinite"
            )),
            Some(b) if direction.better(med, b) => Some(format!(
                "step {step}: best value so far {b:.4} is worse than the median {med:.4} of {n} completed trials at that step"
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<Vec<(u64, f64)>> {
        vec![
            vec![(10, 2.0), (20, 1.5)],
            vec![(10, 2.2), (20, 1.4)],
            vec![(10, 1.8), (20, 1.2)],
        ]
    }

    #[test]
    fn prunes_only_below_the_median_at_the_same_step() {
        let rule = MedianRule::default();
        // Median at step 10 is 2.0; at step 20 it is 1.4.
        let reason = rule
            .check(Direction::Min, &[(10, 2.5)], &history())
            .expect("worse than the median");
        assert!(
            reason.contains("step 10") && reason.contains("2.0000"),
            "{reason}"
        );
        assert_eq!(rule.check(Direction::Min, &[(10, 1.9)], &history()), None);
        // The best so far counts, not the last value.
        assert_eq!(
            rule.check(Direction::Min, &[(10, 1.3), (20, 1.6)], &history()),
            None
        );
        assert!(
            rule.check(Direction::Min, &[(10, 1.9), (20, 1.6)], &history())
                .is_some()
        );
        // Maximising flips the comparison.
        assert!(
            rule.check(Direction::Max, &[(10, 1.9)], &history())
                .is_some()
        );
        assert_eq!(rule.check(Direction::Max, &[(10, 2.1)], &history()), None);
    }

    #[test]
    fn warmup_interval_and_history_gate_the_check() {
        let bad = [(10, 9.0)];
        let rule = MedianRule {
            min_trials: 4,
            ..MedianRule::default()
        };
        assert_eq!(
            rule.check(Direction::Min, &bad, &history()),
            None,
            "3 < 4 trials"
        );
        let rule = MedianRule {
            warmup_steps: 15,
            ..MedianRule::default()
        };
        assert_eq!(rule.check(Direction::Min, &bad, &history()), None, "warmup");
        let rule = MedianRule {
            interval: 20,
            ..MedianRule::default()
        };
        assert_eq!(
            rule.check(Direction::Min, &bad, &history()),
            None,
            "off the grid"
        );
        assert!(
            rule.check(Direction::Min, &[(10, 9.0), (20, 9.0)], &history())
                .is_some()
        );
        // No completed trial reported this step: nothing to compare with.
        assert_eq!(
            MedianRule::default().check(Direction::Min, &[(15, 9.0)], &history()),
            None
        );
        let reason = MedianRule::default()
            .check(Direction::Min, &[(10, f64::NAN)], &history())
            .unwrap();
        assert!(reason.contains("NaN"), "{reason}");
    }
}
