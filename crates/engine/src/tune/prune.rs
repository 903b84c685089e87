//! Stopping unpromising trials early: the median stopping rule and asynchronous
//! successive halving.
//!
//! A running trial reports intermediate values (a validation loss every N steps). Each
//! report is judged once, in order, by the study's [`Rule`] against the other trials'
//! reports ([`Peer`]); a verdict to stop carries the reason recorded with the trial.
//!
//! - [`MedianRule`]: at a check step a trial is stopped when its best value so far is
//!   worse than the median of the values that *completed* trials reported at that same
//!   step (Golovin et al. 2017, "Google Vizier"; Optuna's `MedianPruner`).
//! - [`HalvingRule`]: asynchronous successive halving (ASHA; Li et al. 2018, "A System for
//!   Massively Parallel Hyperparameter Tuning"; Optuna's `SuccessiveHalvingPruner`). A
//!   trial reaching a rung continues only when its value is in the top `1/eta` of every
//!   value recorded at that rung so far, by any trial (completed, pruned, failed or still
//!   running).

use super::suggest::Direction;
pub use pipe_schema::tune::{HalvingRule, MedianRule, Rule};

/// What a rule sees of another trial of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Whether it ran to the end (the median rule compares with these only).
    pub complete: bool,
    /// The `(step, value)` reports it made that were judged (a pruned trial's end at the
    /// report that stopped it; a running trial's grow as it is judged).
    pub reports: Vec<(u64, f64)>,
}

/// Judging a trial's reports by a rule's settings (the settings are `pipe_schema::tune`'s).
pub trait Judge {
    /// Judges a trial's latest report (the last of `current`, its reports in step order):
    /// `Some(reason)` to stop it.
    fn check(&self, direction: Direction, current: &[(u64, f64)], peers: &[Peer])
    -> Option<String>;
}

impl Judge for Rule {
    /// Judges a trial's latest report (the last of `current`, its reports in step order):
    /// `Some(reason)` to stop it.
    fn check(
        &self,
        direction: Direction,
        current: &[(u64, f64)],
        peers: &[Peer],
    ) -> Option<String> {
        match self {
            Rule::Median(rule) => {
                let completed: Vec<Vec<(u64, f64)>> = peers
                    .iter()
                    .filter(|p| p.complete)
                    .map(|p| p.reports.clone())
                    .collect();
                median_check(rule, direction, current, &completed)
            }
            Rule::Halving(rule) => rule.check(direction, current, peers),
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

/// Whether to stop a trial whose reports so far are `current` (`(step, value)`, in
/// step order), given the reports of completed trials; `Some(reason)` to stop.
pub fn median_check(
    rule: &MedianRule,
    direction: Direction,
    current: &[(u64, f64)],
    completed: &[Vec<(u64, f64)>],
) -> Option<String> {
    let &(step, _) = current.last()?;
    if step < rule.warmup_steps
        || !(step - rule.warmup_steps).is_multiple_of(rule.interval.max(1))
        || completed.len() < rule.min_trials.max(1)
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

impl Judge for HalvingRule {
    /// Judges the last report of `current` at every rung it reaches first.
    fn check(
        &self,
        direction: Direction,
        current: &[(u64, f64)],
        peers: &[Peer],
    ) -> Option<String> {
        let (&(step, value), before) = current.split_last()?;
        for (k, rung) in self.rungs_reached(before.last().map(|r| r.0), step) {
            if !value.is_finite() {
                return Some(format!(
                    "rung {k} (step {rung}): the value is NaN or infinite"
                ));
            }
            let mut values: Vec<f64> = peers
                .iter()
                .filter_map(|p| HalvingRule::value_at(&p.reports, rung))
                .filter(|v| v.is_finite())
                .collect();
            values.push(value);
            let n = values.len();
            if n < self.bootstrap_count {
                continue;
            }
            // Best first.
            values.sort_by(|a, b| direction.to_min(*a).total_cmp(&direction.to_min(*b)));
            let keep = (n / self.eta as usize).max(1);
            let cutoff = values[keep - 1];
            if direction.better(cutoff, value) {
                return Some(format!(
                    "rung {k} (step {rung}): value {value:.4} is not in the top 1/{eta} of the {n} values recorded at this rung (the best {keep} go on; cutoff {cutoff:.4})",
                    eta = self.eta
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median rule judged against completed trials' reports, as `Rule::check` does.
    trait MedianCheck {
        fn check(
            &self,
            direction: Direction,
            current: &[(u64, f64)],
            completed: &[Vec<(u64, f64)>],
        ) -> Option<String>;
    }

    impl MedianCheck for MedianRule {
        fn check(
            &self,
            direction: Direction,
            current: &[(u64, f64)],
            completed: &[Vec<(u64, f64)>],
        ) -> Option<String> {
            median_check(self, direction, current, completed)
        }
    }

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

    fn peers(reports: &[&[(u64, f64)]]) -> Vec<Peer> {
        reports
            .iter()
            .map(|r| Peer {
                complete: false,
                reports: r.to_vec(),
            })
            .collect()
    }

    fn halving(eta: u64) -> HalvingRule {
        HalvingRule {
            min_resource: 10,
            eta,
            bootstrap_count: 0,
        }
    }

    #[test]
    fn rungs_are_min_resource_times_powers_of_eta() {
        let rule = halving(3);
        assert_eq!(rule.rungs_reached(None, 9), []);
        assert_eq!(rule.rungs_reached(None, 10), [(0, 10)]);
        // A first report late reaches every rung up to it; later reports only new ones.
        assert_eq!(rule.rungs_reached(None, 95), [(0, 10), (1, 30), (2, 90)]);
        assert_eq!(rule.rungs_reached(Some(10), 29), []);
        assert_eq!(rule.rungs_reached(Some(29), 30), [(1, 30)]);
        assert_eq!(rule.rungs_reached(Some(30), 40), []);
        // Far steps stop at u64's end instead of overflowing.
        assert_eq!(rule.rungs_reached(Some(u64::MAX - 1), u64::MAX), []);
        assert_eq!(
            HalvingRule::value_at(&[(5, 1.0), (12, 2.0), (30, 3.0)], 10),
            Some(2.0)
        );
        assert_eq!(HalvingRule::value_at(&[(5, 1.0)], 10), None);
    }

    #[test]
    fn halving_keeps_the_top_third_of_each_rung() {
        let rule = Rule::Halving(halving(3));
        // Five values at rung 0 (step 10) from other trials, of any status.
        let others: Vec<&[(u64, f64)]> = vec![
            &[(10, 1.0), (30, 0.5)],
            &[(10, 2.0)],
            &[(10, 3.0)],
            &[(10, 4.0), (30, 3.9)],
            &[(10, 5.0)],
        ];
        let p = peers(&others);
        // Six values with the new one: the best 2 continue; the cutoff is the 2nd best.
        assert_eq!(rule.check(Direction::Min, &[(10, 1.5)], &p), None);
        assert_eq!(
            rule.check(Direction::Min, &[(10, 2.0)], &p),
            None,
            "a tie with the cutoff continues"
        );
        let reason = rule
            .check(Direction::Min, &[(10, 2.5)], &p)
            .expect("not in the top third");
        assert!(
            reason.contains("rung 0 (step 10)")
                && reason.contains("value 2.5000")
                && reason.contains("top 1/3 of the 6 values")
                && reason.contains("cutoff 2.0000"),
            "{reason}"
        );
        // Reports between rungs are not judged; a rung is judged by its first report.
        assert_eq!(
            rule.check(Direction::Min, &[(10, 1.5), (20, 9.0)], &p),
            None
        );
        // Rung 1 (step 30) has two other values: with three, only the best continues.
        assert!(
            rule.check(Direction::Min, &[(10, 1.5), (20, 9.0), (30, 3.0)], &p)
                .is_some()
        );
        assert_eq!(
            rule.check(Direction::Min, &[(10, 1.5), (20, 9.0), (30, 0.4)], &p),
            None
        );
        // Maximising flips the order: 4.5 is second of six.
        assert_eq!(rule.check(Direction::Max, &[(10, 4.5)], &p), None);
        assert!(rule.check(Direction::Max, &[(10, 3.5)], &p).is_some());
        let reason = rule.check(Direction::Min, &[(10, f64::NAN)], &p).unwrap();
        assert!(reason.contains("NaN"), "{reason}");
    }

    #[test]
    fn halving_with_few_values_keeps_only_a_new_best_unless_bootstrapped() {
        let p = peers(&[&[(10, 1.0)]]);
        let rule = Rule::Halving(halving(3));
        assert_eq!(
            rule.check(Direction::Min, &[(10, 0.9)], &[]),
            None,
            "the first trial always continues"
        );
        assert_eq!(rule.check(Direction::Min, &[(10, 0.9)], &p), None);
        assert!(rule.check(Direction::Min, &[(10, 1.1)], &p).is_some());
        let rule = Rule::Halving(HalvingRule {
            bootstrap_count: 3,
            ..halving(3)
        });
        assert_eq!(
            rule.check(Direction::Min, &[(10, 1.1)], &p),
            None,
            "2 < 3 values"
        );
        let p = peers(&[&[(10, 1.0)], &[(10, 1.2)]]);
        assert!(rule.check(Direction::Min, &[(10, 1.3)], &p).is_some());
    }

    #[test]
    fn the_median_rule_compares_with_completed_peers_only() {
        let mut p = peers(&[&[(10, 1.0)], &[(10, 1.0)], &[(10, 1.0)]]);
        let rule = Rule::Median(MedianRule::default());
        assert_eq!(
            rule.check(Direction::Min, &[(10, 2.0)], &p),
            None,
            "none completed"
        );
        for peer in &mut p {
            peer.complete = true;
        }
        assert!(rule.check(Direction::Min, &[(10, 2.0)], &p).is_some());
    }

    #[test]
    fn impossible_halving_settings_are_refused() {
        let e = Rule::Halving(halving(1)).validate().unwrap_err();
        assert!(e.contains("`prune.eta`"), "{e}");
        let e = Rule::Halving(HalvingRule {
            min_resource: 0,
            ..halving(3)
        })
        .validate()
        .unwrap_err();
        assert!(e.contains("`prune.min_resource`"), "{e}");
        assert_eq!(Rule::Median(MedianRule::default()).validate(), Ok(()));
    }
}
