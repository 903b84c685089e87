//! The `train` kind: fine-tune a model. `with:` is a training job (see
//! [`crate::mlx::train::job`]): `model`, `train_data`, `valid_data`, `out_dir` and every
//! trainer option, or `tokens` (a `tokenize` stage's out folder) instead of
//! `train_data`/`valid_data`. The out folder gets the adapter (mlx-lm and PEFT layouts),
//! the step log and `metrics.json`. `lora: {rank: auto}` picks the rank from the data
//! ([`super::rank_auto`]) and writes the choice and its reason to `rank.json`;
//! `params_file:` merges a YAML file of options over `with:` ([`super::params_file`]);
//! `batch_size: auto` chooses the rows per step from the data and splits them by the
//! memory probe ([`super::batch_auto`]), recording both in `metrics.json`.

use super::{batch_auto, rank_auto};
use crate::data::{ReadOptions, read_examples};
use crate::exec::progress::Progress;
use crate::mlx::train::job::{TrainJob, run_job_on};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Implementation version (part of every train stage's fingerprint).
/// 2: the base trains in bfloat16 on Metal (float32 adapters); micro-batches are evaluated
/// one by one.
pub const IMPL_VERSION: u32 = 2;

/// Splits `tokens` off a train stage's `with:`. With `tokens`, `train_data` and
/// `valid_data` must be absent; `train_data` is set to the tokens folder's train file so
/// the job reads as complete (it is never read as text).
pub fn split_tokens(
    with: &serde_json::Value,
) -> Result<(Option<PathBuf>, serde_json::Value), String> {
    let mut with = with.clone();
    let Some(map) = with.as_object_mut() else {
        return Ok((None, with));
    };
    let Some(tokens) = map.remove("tokens") else {
        return Ok((None, with));
    };
    let Some(dir) = tokens.as_str().map(PathBuf::from) else {
        return Err("`tokens` must be a path (a tokenize stage's `out`)".into());
    };
    if map.contains_key("train_data") || map.contains_key("valid_data") {
        return Err(
            "give either `tokens` (a tokenize stage's out) or `train_data`/`valid_data`, not both"
                .into(),
        );
    }
    map.insert(
        "train_data".into(),
        dir.join("train.tokens").display().to_string().into(),
    );
    Ok((Some(dir), with))
}

/// Parses a train stage's `with:` into a job and the tokens folder, if any.
pub fn parse(with: &serde_json::Value, root: &Path) -> anyhow::Result<(TrainJob, Option<PathBuf>)> {
    let (tokens, with) = split_tokens(with).map_err(|e| anyhow::anyhow!(e))?;
    let yaml = serde_yaml::to_string(&with)?;
    let job = TrainJob::from_yaml(&yaml, Path::new("train stage `with`"), root)?;
    Ok((job, tokens))
}

/// Runs a train stage; progress goes to stderr (the stage log), one line per 10 steps,
/// and after every step to the run's display ([`crate::exec::progress`]).
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let with = super::params_file::merge(with, root)?;
    let (tokens, mut with) = split_tokens(&with).map_err(|e| anyhow::anyhow!(e))?;
    // With `rank: auto` or `batch_size: auto` any value stands in until the data is
    // measured.
    let probe = batch_auto::with_batch_size(&rank_auto::with_rank(&with, 8), 8)
        .map_err(anyhow::Error::msg)?;
    let probe = serde_yaml::to_string(&probe)?;
    let probe = TrainJob::from_yaml(&probe, Path::new("train stage `with`"), root)?;
    let data = match &tokens {
        Some(dir) => Some(super::tokenize::load_for_training(
            &root.join(dir),
            &probe.model,
        )?),
        None => None,
    };
    let mut rank_choice = None;
    if rank_auto::is_auto(&with) {
        let choice = rank_auto::measure(&probe, data.as_ref().map(|d| d.train.as_slice()))?;
        eprintln!("rank: auto -> {}: {}", choice.rank, choice.reason);
        with = rank_auto::with_rank(&with, choice.rank);
        rank_choice = Some(choice);
    }
    let mut batch_choice = None;
    if batch_auto::is_auto(&with) {
        let examples = match &data {
            Some(d) => d.train.len(),
            None => read_examples(&probe.train_data, &ReadOptions::default())
                .with_context(|| {
                    format!(
                        "batch_size: auto: cannot read {}",
                        probe.train_data.display()
                    )
                })?
                .0
                .len(),
        };
        let choice = batch_auto::choose(examples);
        eprintln!(
            "batch_size: auto -> {}: {}",
            choice.batch_size, choice.reason
        );
        with = batch_auto::with_batch_size(&with, choice.batch_size).map_err(anyhow::Error::msg)?;
        batch_choice = Some(choice);
    }
    let yaml = serde_yaml::to_string(&with)?;
    let mut job = TrainJob::from_yaml(&yaml, Path::new("train stage `with`"), root)?;
    // Runs and tune trials of the workspace share one activation cache directory.
    job.config.activation_cache = job.config.activation_cache.or_workspace_dir(root);
    let total = job.config.iters;
    let mut valid_loss = None;
    let report = run_job_on(&job, data, false, &mut |r| {
        valid_loss = r.valid_loss.or(valid_loss);
        Progress {
            step: r.step,
            total: Some(total),
            loss: Some(r.loss),
            valid_loss,
            tokens_per_second: Some(r.trained_tokens_per_second),
        }
        .report();
        if r.step.is_multiple_of(10) || r.valid_loss.is_some() || r.step == total {
            eprintln!(
                "step {}/{total} loss {:.4} lr {:.2e} {:.1} tok/s{}",
                r.step,
                r.loss,
                r.lr,
                r.trained_tokens_per_second,
                r.valid_loss
                    .map(|v| format!(" valid {v:.4}"))
                    .unwrap_or_default()
            );
        }
    })?;
    if let Some(choice) = &rank_choice {
        super::write_json(&job.out_dir.join(rank_auto::FILE), choice)?;
    }
    if let Some(choice) = &batch_choice {
        let path = job.out_dir.join("metrics.json");
        let mut metrics: serde_json::Value = serde_json::to_value(&report)?;
        metrics[batch_auto::METRICS_KEY] = batch_auto::record(
            choice,
            report.summary.batch.as_ref(),
            report.summary.peak_memory_bytes,
        );
        super::write_json(&path, &metrics)?;
    }
    eprintln!(
        "trained {} steps: loss {:.4}, valid {:?}, {:.1} trained tok/s, peak memory {:.0} MiB",
        report.summary.steps,
        report.summary.final_train_loss,
        report.summary.final_valid_loss,
        report.summary.trained_tokens_per_second,
        report.summary.peak_memory_bytes as f64 / (1u64 << 20) as f64
    );
    if let Some(plan) = &report.summary.batch {
        eprintln!("{}", crate::mlx::train::micro::describe(plan));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_replace_the_data_files() {
        let (dir, with) =
            split_tokens(&json!({"model": "m", "tokens": "t", "out_dir": "o"})).unwrap();
        assert_eq!(dir, Some(PathBuf::from("t")));
        assert_eq!(with["train_data"], "t/train.tokens");
        assert!(with.get("tokens").is_none());
        let err = split_tokens(&json!({"tokens": "t", "valid_data": "v"})).unwrap_err();
        assert!(err.contains("not both"), "{err}");
        assert!(split_tokens(&json!({"tokens": 3})).is_err());
        let (none, same) = split_tokens(&json!({"train_data": "a"})).unwrap();
        assert_eq!((none, same), (None, json!({"train_data": "a"})));
    }
}
