//! `batch_size: auto` in a train stage: choose the effective batch from the size of the
//! training set, let the memory probe of `micro_batch: auto` ([`crate::train::micro`])
//! pick how many rows go through the model at once, and make the rest gradient
//! accumulation. The choice, its reason, the split and the measured peak memory are
//! recorded under `batch_size_auto` in the train `metrics.json`.
//!
//! The rule ([`choose`]): the largest power of two that still gives at least
//! [`STEPS_PER_EPOCH`] optimizer steps per epoch, clamped to [`MIN`]..=[`MAX`] and to the
//! number of examples. Why:
//! - small sets need many updates more than large batches: 64 steps per epoch leaves room
//!   for warmup, a schedule and several validations within the first epoch;
//! - below 4 rows the gradient of a LoRA step is noisy (4 is mlx-lm's default
//!   `batch_size`), and above 32 a small-model LoRA run gains little per example (common
//!   recipes, e.g. Axolotl's LoRA examples and the QLoRA paper, use effective batches of
//!   8 to 32); a larger batch on a large set mostly buys fewer, costlier steps;
//! - a power of two has many divisors, so the probe can pick a micro-batch close to what
//!   fits instead of falling back to a small divisor.

use serde::Serialize;
use serde_json::Value;

/// Fewest optimizer steps one epoch should give.
pub const STEPS_PER_EPOCH: usize = 64;
/// Smallest effective batch chosen (fewer only when there are fewer examples).
pub const MIN: usize = 4;
/// Largest effective batch chosen.
pub const MAX: usize = 32;

/// Key of the record in the train `metrics.json`.
pub const METRICS_KEY: &str = "batch_size_auto";

/// The chosen effective batch and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSizeChoice {
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Training examples it was chosen for.
    pub train_examples: usize,
    /// The rule applied, in words.
    pub reason: String,
}

/// The effective batch for a training set of `examples` rows (see the module doc).
pub fn choose(examples: usize) -> BatchSizeChoice {
    let by_steps = examples / STEPS_PER_EPOCH;
    let power = if by_steps == 0 {
        0
    } else {
        1 << by_steps.ilog2()
    };
    let clamped = power.clamp(MIN, MAX);
    let batch_size = clamped.min(examples).max(1);
    let reason = if batch_size < clamped {
        format!(
            "{examples} training examples: fewer than the smallest batch of {MIN}, so one batch holds them all"
        )
    } else if power < MIN {
        format!(
            "{examples} training examples: under {} examples, the floor of {MIN} rows (fewer steps per epoch than {STEPS_PER_EPOCH}, rather than a noisier gradient)",
            MIN * STEPS_PER_EPOCH
        )
    } else if power > MAX {
        format!(
            "{examples} training examples: capped at {MAX} rows ({} steps per epoch)",
            examples / MAX
        )
    } else {
        format!(
            "{examples} training examples: the largest power of two giving at least {STEPS_PER_EPOCH} steps per epoch ({} steps)",
            examples / batch_size
        )
    };
    BatchSizeChoice {
        batch_size,
        train_examples: examples,
        reason,
    }
}

/// The record written to `metrics.json`: the choice, how the probe split it, and the
/// peak memory measured over the run.
pub fn record(
    choice: &BatchSizeChoice,
    plan: Option<&crate::train::micro::BatchPlan>,
    peak_memory_bytes: u64,
) -> Value {
    serde_json::json!({
        "batch_size": choice.batch_size,
        "train_examples": choice.train_examples,
        "reason": choice.reason,
        "micro_batch": plan.map(|p| p.micro_batch),
        "grad_accum": plan.map(|p| p.grad_accum),
        "peak_memory_bytes": peak_memory_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_follows_the_data_within_bounds() {
        let sizes: Vec<(usize, usize)> = [
            1, 3, 10, 100, 300, 511, 512, 1000, 1024, 2047, 5000, 1_000_000,
        ]
        .iter()
        .map(|&n| (n, choose(n).batch_size))
        .collect();
        assert_eq!(
            sizes,
            [
                (1, 1),
                (3, 3),
                (10, 4),
                (100, 4),
                (300, 4),
                (511, 4),
                (512, 8),
                (1000, 8),
                (1024, 16),
                (2047, 16),
                (5000, 32),
                (1_000_000, 32)
            ]
        );
        for n in [3, 100, 1000, 1_000_000] {
            let c = choose(n);
            assert!(
                c.reason.starts_with(&format!("{n} training examples")),
                "{c:?}"
            );
        }
        assert!(choose(3).reason.contains("all"));
        assert!(choose(100).reason.contains("floor"));
        assert!(choose(1000).reason.contains("125 steps"));
        assert!(choose(1_000_000).reason.contains("capped"));
    }
}
