//! Stopping rules: a divergence guard that stops on NaN/inf (loss or gradient), an
//! exploding loss or a model that collapsed to chance, and early stopping on validation
//! loss with patience, remembering the best step.

use serde::Serialize;

/// Why training must stop now.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Divergence {
    /// The loss is NaN or infinite.
    #[error("the training loss became {loss} at step {step}; try a lower learning rate")]
    NotFinite {
        /// The step.
        step: u64,
        /// The loss, as text (NaN does not serialise as a number).
        loss: String,
    },
    /// The gradient norm is NaN or infinite (the update would write NaN into the weights).
    #[error(
        "the gradient norm became {norm} at step {step} (loss {loss:.3}); try a lower learning rate"
    )]
    GradientNotFinite {
        /// The step.
        step: u64,
        /// The norm, as text.
        norm: String,
        /// The step's loss.
        loss: f64,
    },
    /// The loss climbed to that of a uniform guess over the vocabulary and stayed there:
    /// the model lost what it knew (a learning rate far too high does this; the loss then
    /// sits at `ln(vocab)` for ever, far below the explosion factor times its best).
    #[error(
        "the training loss rose to {loss:.3} at step {step}, the loss of a uniform guess over the vocabulary ({chance:.3}), from a best of {best:.3}: the model collapsed; try a lower learning rate"
    )]
    Collapsed {
        /// The step.
        step: u64,
        /// The loss.
        loss: f64,
        /// `ln(vocab)`.
        chance: f64,
        /// The best smoothed loss so far.
        best: f64,
    },
    /// The loss rose far above its best so far.
    #[error(
        "the training loss exploded to {loss:.3} at step {step} (best {best:.3}); try a lower learning rate or stronger gradient clipping"
    )]
    Exploded {
        /// The step.
        step: u64,
        /// The loss.
        loss: f64,
        /// The best smoothed loss so far.
        best: f64,
    },
}

/// Watches the training loss. A loss above `factor` times the best smoothed loss, after
/// `min_steps`, counts as divergence: single noisy batches do not trip it because the best
/// is taken over an exponential moving average. With the vocabulary known
/// ([`DivergenceGuard::with_vocab`]), a loss at chance level for [`COLLAPSE_STEPS`] steps
/// in a row, after the smoothed loss had been well below it, is divergence too, from any
/// step: the factor alone misses it when the starting loss is more than a quarter of
/// chance (SmolLM2 starts at 4.5 on a 10.8 chance level; lr 1e3 sat at 10.8 for good).
#[derive(Debug, Clone)]
pub struct DivergenceGuard {
    factor: f64,
    min_steps: u64,
    ema: Option<f64>,
    best: f64,
    /// `ln(vocab)`, the loss of a uniform guess.
    chance: Option<f64>,
    /// Steps in a row at chance level.
    at_chance: u64,
}

/// Steps in a row at chance level that count as a collapse.
pub const COLLAPSE_STEPS: u64 = 3;

/// The smallest best loss the explosion factor is applied to, in nats per token. Near zero
/// a ratio means nothing: a model that has memorised a small set (best 0.005) and then sees
/// 0.24 on one batch is still far from diverged, yet 48 times its best (a 219-row task
/// stopped at step 130 of 200 this way).
pub const EXPLOSION_FLOOR: f64 = 0.1;

impl DivergenceGuard {
    /// A guard with the given explosion factor (e.g. 4.0).
    pub fn new(factor: f64, min_steps: u64) -> Self {
        Self {
            factor,
            min_steps,
            ema: None,
            best: f64::INFINITY,
            chance: None,
            at_chance: 0,
        }
    }

    /// Also watches for a collapse to chance level over a vocabulary of `vocab` tokens.
    pub fn with_vocab(mut self, vocab: usize) -> Self {
        self.chance = (vocab > 1).then(|| (vocab as f64).ln());
        self
    }

    /// Records `loss` (and the gradient norm, when measured) at `step`; an error means
    /// stop, before this step's update is saved anywhere.
    pub fn observe(
        &mut self,
        step: u64,
        loss: f64,
        grad_norm: Option<f64>,
    ) -> Result<(), Divergence> {
        if !loss.is_finite() {
            return Err(Divergence::NotFinite {
                step,
                loss: loss.to_string(),
            });
        }
        if let Some(norm) = grad_norm.filter(|n| !n.is_finite()) {
            return Err(Divergence::GradientNotFinite {
                step,
                norm: norm.to_string(),
                loss,
            });
        }
        let ema = self.ema.map_or(loss, |e| 0.9 * e + 0.1 * loss);
        self.ema = Some(ema);
        if let Some(chance) = self.chance {
            // 1% below chance still counts: a collapsed model's loss sits a hair off it.
            let learned = self.best < 0.9 * chance;
            self.at_chance = if learned && loss >= 0.99 * chance {
                self.at_chance + 1
            } else {
                0
            };
            if self.at_chance >= COLLAPSE_STEPS {
                return Err(Divergence::Collapsed {
                    step,
                    loss,
                    chance,
                    best: self.best,
                });
            }
        }
        if step >= self.min_steps && ema > self.factor * self.best.max(EXPLOSION_FLOOR) {
            return Err(Divergence::Exploded {
                step,
                loss,
                best: self.best,
            });
        }
        self.best = self.best.min(ema);
        Ok(())
    }
}

/// What [`EarlyStopping::observe`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new best: save this checkpoint as the best one.
    Improved,
    /// Not better, but patience remains.
    Wait,
    /// Patience ran out: stop.
    Stop,
}

/// Early stopping on validation loss.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: Option<u32>,
    min_delta: f64,
    best: Option<(u64, f64)>,
    bad_evals: u32,
}

impl EarlyStopping {
    /// `patience = None` never stops early but still tracks the best step.
    pub fn new(patience: Option<u32>, min_delta: f64) -> Self {
        Self {
            patience,
            min_delta,
            best: None,
            bad_evals: 0,
        }
    }

    /// Records a validation loss at `step`.
    pub fn observe(&mut self, step: u64, valid_loss: f64) -> Verdict {
        let improved = valid_loss.is_finite()
            && self
                .best
                .is_none_or(|(_, best)| valid_loss < best - self.min_delta);
        if improved {
            self.best = Some((step, valid_loss));
            self.bad_evals = 0;
            return Verdict::Improved;
        }
        self.bad_evals += 1;
        match self.patience {
            Some(p) if self.bad_evals >= p => Verdict::Stop,
            _ => Verdict::Wait,
        }
    }

    /// The best `(step, loss)` so far.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_stops_at_once() {
        let mut g = DivergenceGuard::new(4.0, 10);
        g.observe(0, 2.0, None).unwrap();
        assert!(matches!(
            g.observe(1, f64::NAN, None),
            Err(Divergence::NotFinite { step: 1, .. })
        ));
        assert!(g.observe(2, f64::INFINITY, None).is_err());
        let err = g.observe(3, 2.0, Some(f64::INFINITY)).unwrap_err();
        assert!(
            matches!(err, Divergence::GradientNotFinite { step: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("gradient norm became inf at step 3")
        );
    }

    /// What lr 1e3 did to SmolLM2-135M (vocabulary 49,152, chance 10.803): 4.53, 45.6,
    /// then 10.803 at every step. The factor rule never fires (the average stays under
    /// 4 × 4.53); the chance rule stops it at the third step at or above chance.
    #[test]
    fn a_collapse_to_chance_stops_but_a_model_that_starts_there_trains_on() {
        let chance = 49_152f64.ln();
        let mut g = DivergenceGuard::new(4.0, 10).with_vocab(49_152);
        let mut losses = vec![4.53, 45.6];
        losses.extend([10.8027; 10]);
        let stopped = losses
            .iter()
            .zip(1..)
            .find_map(|(&loss, step)| g.observe(step, loss, Some(1.0)).err());
        let err = stopped.expect("a collapse is divergence");
        assert!(
            matches!(err, Divergence::Collapsed { step: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("uniform guess"), "{err}");
        // A random-weight model starts at chance: that is not a collapse.
        let mut fresh = DivergenceGuard::new(4.0, 10).with_vocab(32);
        for step in 1..30 {
            fresh.observe(step, 32f64.ln(), None).unwrap();
        }
        // Nor is one batch at chance level among good ones.
        let mut noisy = DivergenceGuard::new(4.0, 10).with_vocab(49_152);
        for step in 1..30 {
            let loss = if step % 5 == 0 { chance } else { 2.0 };
            noisy.observe(step, loss, None).unwrap();
        }
    }

    #[test]
    fn a_memorised_set_is_not_an_explosion_but_a_real_blow_up_still_is() {
        let mut g = DivergenceGuard::new(4.0, 5);
        for step in 0..40 {
            g.observe(step, 0.005, None).unwrap();
        }
        for step in 40..45 {
            g.observe(step, 0.24, None)
                .expect("0.24 after 0.005 is noise on a memorised set, not divergence");
        }
        let stopped = (45..100).find_map(|step| g.observe(step, 5.0, None).err());
        assert!(
            matches!(stopped, Some(Divergence::Exploded { .. })),
            "{stopped:?}"
        );
    }

    #[test]
    fn one_noisy_batch_is_tolerated_but_a_blow_up_is_not() {
        let mut g = DivergenceGuard::new(4.0, 5);
        for step in 0..20 {
            g.observe(step, 1.0, None).unwrap();
        }
        g.observe(20, 8.0, None)
            .expect("a single spike moves the average only a little");
        let mut stopped = None;
        for step in 21..60 {
            if let Err(e) = g.observe(step, 50.0, None) {
                stopped = Some(e);
                break;
            }
        }
        assert!(matches!(stopped, Some(Divergence::Exploded { .. })));
    }

    #[test]
    fn early_stopping_waits_for_patience_and_keeps_the_best() {
        let mut e = EarlyStopping::new(Some(2), 0.0);
        assert_eq!(e.observe(10, 1.0), Verdict::Improved);
        assert_eq!(e.observe(20, 0.8), Verdict::Improved);
        assert_eq!(e.observe(30, 0.9), Verdict::Wait);
        assert_eq!(e.observe(40, 0.85), Verdict::Stop);
        assert_eq!(e.best(), Some((20, 0.8)));
    }

    #[test]
    fn without_patience_it_never_stops() {
        let mut e = EarlyStopping::new(None, 0.0);
        e.observe(0, 1.0);
        for step in 1..100 {
            assert_ne!(e.observe(step, 2.0), Verdict::Stop);
        }
    }
}
