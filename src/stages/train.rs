//! The `train` kind: fine-tune a model. `with:` is a training job (see
//! [`crate::mlx::train::job`]): `model`, `train_data`, `valid_data`, `out_dir` and every
//! trainer option. The out folder gets the adapter (mlx-lm and PEFT layouts), the step log
//! and `metrics.json`. `lora: {rank: auto}` picks the rank from the data
//! ([`super::rank_auto`]) and writes the choice and its reason to `rank.json`;
//! `params_file:` merges a YAML file of options over `with:` ([`super::params_file`]).

use super::rank_auto;
use crate::mlx::train::job::{TrainJob, run_job};
use std::path::Path;

/// Implementation version (part of every train stage's fingerprint).
pub const IMPL_VERSION: u32 = 1;

/// Runs a train stage; progress goes to stderr (the stage log), one line per 10 steps.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let mut with = super::params_file::merge(with, root)?;
    let mut rank_choice = None;
    if rank_auto::is_auto(&with) {
        let probe = serde_yaml::to_string(&rank_auto::with_rank(&with, 8))?;
        let choice = rank_auto::measure(&TrainJob::from_yaml(&probe, Path::new("with"), root)?)?;
        eprintln!("rank: auto -> {}: {}", choice.rank, choice.reason);
        with = rank_auto::with_rank(&with, choice.rank);
        rank_choice = Some(choice);
    }
    let yaml = serde_yaml::to_string(&with)?;
    let job = TrainJob::from_yaml(&yaml, Path::new("with"), root)?;
    let total = job.config.iters;
    let report = run_job(&job, false, &mut |r| {
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
    eprintln!(
        "trained {} steps: loss {:.4}, valid {:?}, {:.1} trained tok/s",
        report.summary.steps,
        report.summary.final_train_loss,
        report.summary.final_valid_loss,
        report.summary.trained_tokens_per_second
    );
    Ok(())
}
