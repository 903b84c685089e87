//! Learning-rate schedules: constant, linear decay or cosine decay, each after an optional
//! linear warmup from zero.

use serde::{Deserialize, Serialize};

pub use pipe_schema::train::Decay;

/// A learning-rate schedule over `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The learning rate after warmup.
    pub peak_lr: f64,
    /// The floor the decay ends at.
    #[serde(default)]
    pub min_lr: f64,
    /// Steps of linear warmup from 0 to `peak_lr`.
    #[serde(default)]
    pub warmup_steps: u64,
    /// All optimizer steps, warmup included.
    pub total_steps: u64,
    /// The decay shape.
    #[serde(default)]
    pub decay: Decay,
}

impl Schedule {
    /// A constant schedule.
    pub fn constant(lr: f64) -> Self {
        Self {
            peak_lr: lr,
            min_lr: 0.0,
            warmup_steps: 0,
            total_steps: 1,
            decay: Decay::Constant,
        }
    }

    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            // Step 0 trains at a small positive rate rather than wasting a step at zero.
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let span = self.peak_lr - self.min_lr;
        match self.decay {
            Decay::Constant => self.peak_lr,
            Decay::Linear => self.peak_lr - span * t,
            Decay::Cosine => self.min_lr + span * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> Schedule {
        Schedule {
            peak_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 10,
            total_steps: 110,
            decay,
        }
    }

    #[test]
    fn warmup_rises_linearly_to_the_peak() {
        let s = schedule(Decay::Cosine);
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr_at(4) - 5e-4).abs() < 1e-12);
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-12);
    }

    #[test]
    fn decays_end_at_the_floor_and_are_monotone() {
        for decay in [Decay::Linear, Decay::Cosine] {
            let s = schedule(decay);
            assert!((s.lr_at(110) - 1e-5).abs() < 1e-12, "{decay:?}");
            assert!(
                (s.lr_at(500) - 1e-5).abs() < 1e-12,
                "{decay:?} past the end"
            );
            let lrs: Vec<f64> = (10..=110).map(|i| s.lr_at(i)).collect();
            assert!(lrs.windows(2).all(|w| w[1] <= w[0] + 1e-15), "{decay:?}");
        }
        let s = schedule(Decay::Cosine);
        assert!(
            (s.lr_at(60) - (1e-5 + (1e-3 - 1e-5) / 2.0)).abs() < 1e-12,
            "midpoint"
        );
        assert!((schedule(Decay::Linear).lr_at(60) - s.lr_at(60)).abs() < 1e-12);
    }

    #[test]
    fn constant_stays() {
        let s = Schedule::constant(3e-4);
        assert_eq!(s.lr_at(0), 3e-4);
        assert_eq!(s.lr_at(1_000_000), 3e-4);
    }
}
