//! The `train` kind: fine-tune a model. `with:` is a training job (see
//! [`crate::mlx::train::job`]): `model`, `train_data`, `valid_data`, `out_dir` and every
//! trainer option. The out folder gets the adapter (mlx-lm and PEFT layouts), the step log
//! and `metrics.json`.

use crate::mlx::train::job::{TrainJob, run_job};
use std::path::Path;

/// Implementation version (part of every train stage's fingerprint).
/// 2: the base trains in bfloat16 on Metal (float32 adapters); micro-batches are evaluated
/// one by one.
pub const IMPL_VERSION: u32 = 2;

/// Runs a train stage; progress goes to stderr (the stage log), one line per 10 steps.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(with)?;
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
