//! `batch_size: auto` in a train stage: choose the effective batch from the size of the
//! training set, let the memory probe of `micro_batch: auto` ([`crate::mlx::train::micro`])
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

/// Whether `with` asks for `batch_size: auto`.
pub fn is_auto(with: &Value) -> bool {
    with.get("batch_size") == Some(&Value::from("auto"))
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

/// `with` with `batch_size: auto` replaced by `batch_size` rows split by the memory probe
/// (`micro_batch: auto`); `with` unchanged when it is not automatic. `grad_accum` and a
/// fixed `micro_batch` contradict the automatic split and are refused.
pub fn with_batch_size(with: &Value, batch_size: usize) -> Result<Value, String> {
    if !is_auto(with) {
        return Ok(with.clone());
    }
    if with.get("grad_accum").is_some() {
        return Err("`batch_size: auto` chooses the rows per step and splits them into micro-batches and accumulation itself; remove `grad_accum`".into());
    }
    match with.get("micro_batch") {
        None | Some(Value::Null) => {}
        Some(v) if v == "auto" => {}
        Some(v) => {
            return Err(format!(
                "`batch_size: auto` takes the micro-batch from the memory probe; remove `micro_batch: {v}` (`memory_budget_mb` sets the budget)"
            ));
        }
    }
    let mut with = with.clone();
    with["batch_size"] = Value::from(batch_size);
    with["micro_batch"] = Value::from("auto");
    Ok(with)
}

/// The record written to `metrics.json`: the choice, how the probe split it, and the
/// peak memory measured over the run.
pub fn record(
    choice: &BatchSizeChoice,
    plan: Option<&crate::mlx::train::micro::BatchPlan>,
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
    use serde_json::json;

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

    #[test]
    fn auto_becomes_a_number_and_a_probed_split() {
        let with = json!({"batch_size": "auto", "memory_budget_mb": 512});
        assert_eq!(
            with_batch_size(&with, 8).unwrap(),
            json!({"batch_size": 8, "micro_batch": "auto", "memory_budget_mb": 512})
        );
        let fixed = json!({"batch_size": 4, "grad_accum": 2});
        assert_eq!(with_batch_size(&fixed, 8).unwrap(), fixed);
        let e = with_batch_size(&json!({"batch_size": "auto", "grad_accum": 2}), 8).unwrap_err();
        assert!(e.contains("remove `grad_accum`"), "{e}");
        let e = with_batch_size(&json!({"batch_size": "auto", "micro_batch": 2}), 8).unwrap_err();
        assert!(e.contains("remove `micro_batch: 2`"), "{e}");
        assert!(with_batch_size(&json!({"batch_size": "auto", "micro_batch": "auto"}), 8).is_ok());
    }

    #[test]
    fn train_stages_tune_trials_and_params_files_accept_auto() {
        use crate::stages::Kind;
        let train =
            json!({"model": "m", "train_data": "t.jsonl", "out_dir": "o", "batch_size": "auto"});
        assert_eq!(Kind::Train.check_with(&train), Ok(()));
        let mut bad = train.clone();
        bad["grad_accum"] = json!(2);
        let e = Kind::Train.check_with(&bad).unwrap_err();
        assert!(e.contains("remove `grad_accum`"), "{e}");
        let mut trial = train.clone();
        trial.as_object_mut().unwrap().remove("out_dir");
        let tune = json!({
            "out": "t",
            "space": {"learning_rate": {"float": [1e-5, 1e-3], "log": true}},
            "objective": {"metric": "train.final_valid_loss"},
            "budget": {"n_trials": 2},
            "trial": {"train": trial},
        });
        assert_eq!(Kind::Tune.check_with(&tune), Ok(()));
        // A params file may hold `batch_size: auto` too: it is merged before the choice.
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("best.yaml"), "batch_size: auto\n").unwrap();
        let with = json!({"params_file": "best.yaml", "batch_size": 16});
        let merged = crate::stages::params_file::merge(&with, dir.path()).unwrap();
        assert!(is_auto(&merged));
    }
}
