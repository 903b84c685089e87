//! Stopping rules: a divergence guard that stops on NaN/inf or an exploding loss, and
//! early stopping on validation loss with patience, remembering the best step.

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
/// is taken over an exponential moving average.
#[derive(Debug, Clone)]
pub struct DivergenceGuard {
    factor: f64,
    min_steps: u64,
    ema: Option<f64>,
    best: f64,
}

impl DivergenceGuard {
    /// A guard with the given explosion factor (e.g. 4.0).
    pub fn new(factor: f64, min_steps: u64) -> Self {
        Self {
            factor,
            min_steps,
            ema: None,
            best: f64::INFINITY,
        }
    }

    /// Records `loss` at `step`; an error means stop and keep the last good checkpoint.
    pub fn observe(&mut self, step: u64, loss: f64) -> Result<(), Divergence> {
        if !loss.is_finite() {
            return Err(Divergence::NotFinite {
                step,
                loss: loss.to_string(),
            });
        }
        let ema = self.ema.map_or(loss, |e| 0.9 * e + 0.1 * loss);
        self.ema = Some(ema);
        if step >= self.min_steps && ema > self.factor * self.best {
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
        g.observe(0, 2.0).unwrap();
        assert!(matches!(
            g.observe(1, f64::NAN),
            Err(Divergence::NotFinite { step: 1, .. })
        ));
        assert!(g.observe(2, f64::INFINITY).is_err());
    }

    #[test]
    fn one_noisy_batch_is_tolerated_but_a_blow_up_is_not() {
        let mut g = DivergenceGuard::new(4.0, 5);
        for step in 0..20 {
            g.observe(step, 1.0).unwrap();
        }
        g.observe(20, 8.0)
            .expect("a single spike moves the average only a little");
        let mut stopped = None;
        for step in 21..60 {
            if let Err(e) = g.observe(step, 50.0) {
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
