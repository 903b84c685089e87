//! Memory-aware micro-batch size (`micro_batch: auto`).
//!
//! A step trains on `batch_size × grad_accum` rows (the effective batch). With
//! `micro_batch: auto` the trainer picks how many of them go through the model at once:
//! the largest divisor of the effective batch whose measured peak memory fits the budget;
//! the rest becomes gradient accumulation, so `micro_batch × grad_accum` is the effective
//! batch and the optimizer sees the same token-weighted mean gradient.
//!
//! How it measures: a probe runs the real loss and gradient (same model, same options,
//! gradient checkpointing and QLoRA recomputation included) on the longest training rows
//! and reads MLX's peak-memory counter, which includes the weights. It probes one row and
//! two rows, extrapolates linearly to pick a candidate, then probes the candidate itself,
//! stepping down while it does not fit. The optimizer's two moments and the accumulated
//! gradient are not allocated yet during a probe, so three times the trainable bytes are
//! added to every measurement.
//!
//! The budget defaults to a share of the machine's memory ([`default_budget`]).

use super::batch::{BatchSpec, TokenizedExample, pad_batch};
use super::loss::{LossBatch, masked_lm_loss};
use crate::models::llama::Llama;
use anyhow::bail;
use mlx_rs::module::ModuleParameters;
use serde::{Deserialize, Serialize};

pub use pipe_schema::train::MicroBatch;

/// One probe: rows in the micro-batch and the peak memory it needed (margin included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Rows.
    pub rows: usize,
    /// MLX peak memory of the probe step plus the optimizer margin, in bytes.
    pub peak_bytes: u64,
}

/// How the effective batch is split; recorded in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: u32,
    /// `micro_batch × grad_accum`.
    pub effective_batch: usize,
    /// The memory budget the micro-batch was chosen for (`micro_batch: auto`).
    pub memory_budget_bytes: Option<u64>,
    /// The measured need of the chosen micro-batch (`micro_batch: auto`).
    pub probe_peak_bytes: Option<u64>,
    /// Every probe, in the order run.
    pub probes: Vec<Probe>,
}

/// The default budget: 70% of a Mac's unified memory (Metal's recommended working set is
/// about 75% of it), or 80% of the memory Linux reports available.
pub fn default_budget() -> u64 {
    let machine = pipe_engine::hardware::Machine::detect();
    if cfg!(target_os = "macos") {
        machine.memory_total_bytes / 10 * 7
    } else {
        machine.memory_available_bytes / 10 * 8
    }
}

/// What the probes need besides the model.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec<'a> {
    /// Training rows (the longest are probed).
    pub examples: &'a [TokenizedExample],
    /// Truncation and padding as in training.
    pub max_seq_len: usize,
    /// Rounding of batch lengths as in training.
    pub pad_multiple: usize,
    /// Prefix sharing as in training.
    pub share_prefix: bool,
    /// The padding id.
    pub pad_id: u32,
}

/// Picks the largest divisor of `effective` rows whose probe fits `budget` bytes.
/// `model` must be prepared exactly as for training (adapters attached, training mode and
/// gradient checkpointing set).
pub fn choose(
    model: &mut Llama,
    spec: &ProbeSpec<'_>,
    effective: usize,
    budget: u64,
) -> anyhow::Result<BatchPlan> {
    let effective = effective.max(1);
    let divisors: Vec<usize> = (1..=effective)
        .filter(|d| effective.is_multiple_of(*d))
        .collect();
    let margin = 3 * model
        .trainable_parameters()
        .flatten()
        .values()
        .map(|a| a.nbytes() as u64)
        .sum::<u64>();
    let mut order: Vec<usize> = (0..spec.examples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(spec.examples[i].len()));
    let mut probes: Vec<Probe> = Vec::new();
    let mut measure = |model: &mut Llama, rows: usize| -> anyhow::Result<u64> {
        if let Some(p) = probes.iter().find(|p| p.rows == rows) {
            return Ok(p.peak_bytes);
        }
        let peak = probe(model, spec, &order, rows)? + margin;
        probes.push(Probe {
            rows,
            peak_bytes: peak,
        });
        Ok(peak)
    };
    let one = measure(model, 1)?;
    if one > budget {
        bail!(
            "one row of the longest training examples needs {} MiB, more than the memory budget of {} MiB; raise memory_budget_mb, lower max_seq_len, or turn on grad_checkpoint",
            one >> 20,
            budget >> 20
        );
    }
    let per_row = if effective > 1 {
        measure(model, 2)?.saturating_sub(one)
    } else {
        0
    };
    let predicted = |rows: usize| one + per_row * (rows as u64 - 1);
    let mut candidates: Vec<usize> = divisors
        .iter()
        .copied()
        .filter(|&d| predicted(d) <= budget)
        .collect();
    let mut chosen = (1, one);
    while let Some(rows) = candidates.pop() {
        let need = measure(model, rows)?;
        if need <= budget {
            chosen = (rows, need);
            break;
        }
    }
    mlx_rs::memory::clear_cache()?;
    let (micro_batch, need) = chosen;
    Ok(BatchPlan {
        micro_batch,
        grad_accum: (effective / micro_batch) as u32,
        effective_batch: effective,
        memory_budget_bytes: Some(budget),
        probe_peak_bytes: Some(need),
        probes,
    })
}

/// One line for logs: the split, and for `auto` the budget and the measured need.
pub fn describe(plan: &BatchPlan) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut line = format!(
        "micro-batch {} x {} accumulated = {} rows per step",
        plan.micro_batch, plan.grad_accum, plan.effective_batch
    );
    if let (Some(budget), Some(need)) = (plan.memory_budget_bytes, plan.probe_peak_bytes) {
        line.push_str(&format!(
            " (auto: measured {:.0} MiB of a {:.0} MiB budget)",
            mib(need),
            mib(budget)
        ));
    }
    line
}

/// Peak memory of one loss-and-gradient pass over the `rows` longest examples.
fn probe(
    model: &mut Llama,
    spec: &ProbeSpec<'_>,
    longest_first: &[usize],
    rows: usize,
) -> anyhow::Result<u64> {
    let picked: Vec<&TokenizedExample> = longest_first
        .iter()
        .cycle()
        .take(rows)
        .map(|&i| &spec.examples[i])
        .collect();
    let batch_spec = BatchSpec {
        batch_size: rows,
        max_seq_len: spec.max_seq_len,
        pad_multiple: spec.pad_multiple,
        keep_partial: true,
    };
    let padded = pad_batch(&picked, &batch_spec, spec.pad_id);
    let batch = if spec.share_prefix {
        LossBatch::from_padded_shared(&padded)
    } else {
        LossBatch::from_padded(&padded)
    };
    let mut value_and_grad = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    mlx_rs::memory::clear_cache()?;
    mlx_rs::memory::reset_peak_memory()?;
    let (loss, grads) = value_and_grad(model, &batch)?;
    let mut outputs: Vec<&mlx_rs::Array> = loss.iter().collect();
    outputs.extend(grads.values());
    mlx_rs::transforms::eval(outputs)?;
    let peak = mlx_rs::memory::peak_memory()? as u64;
    drop((loss, grads));
    Ok(peak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipe_schema::train::TrainConfig;

    #[test]
    fn micro_batch_reads_auto_or_a_number() {
        let auto: MicroBatch = serde_yaml::from_str("auto").unwrap();
        assert_eq!(auto, MicroBatch::Auto);
        let four: MicroBatch = serde_yaml::from_str("4").unwrap();
        assert_eq!(four, MicroBatch::Value(4));
        let err = serde_yaml::from_str::<MicroBatch>("big").unwrap_err();
        assert!(err.to_string().contains("`auto`"), "{err}");
        // 0 parses; the config check refuses it.
        let zero = TrainConfig {
            micro_batch: Some(serde_yaml::from_str("0").unwrap()),
            ..TrainConfig::default()
        };
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("micro_batch"), "{err}");
        assert_eq!(serde_yaml::to_string(&auto).unwrap().trim(), "auto");
    }
}
