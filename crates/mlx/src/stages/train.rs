//! Running the `train` kind, and `pipe train --config FILE`: both take a checked
//! [`TrainSpec`] (see [`pipe_schema::train`]) and go through [`train`].
//!
//! The out folder gets the adapter (mlx-lm and PEFT layouts), the step log and
//! `metrics.json`. `lora: {rank: auto}` picks the rank from the data
//! ([`super::rank_auto`]) and writes the choice and its reason to `rank.json`;
//! `params_file:` merges a YAML file of options over the spec when the stage runs;
//! `batch_size: auto` chooses the rows per step from the data and splits them by the
//! memory probe ([`super::batch_auto`]), recording both in `metrics.json`.

use super::{batch_auto, rank_auto};
use crate::train::job::{JobReport, TrainJob, run_job_on};
use crate::train::trainer::StepObserver;
use anyhow::Context;
use pipe_engine::data::{ReadOptions, read_examples};
use pipe_engine::exec::progress::Progress;
use pipe_schema::train::{TrainInputs, TrainSpec};
use std::path::Path;

/// Where a job's paths are taken from.
#[derive(Debug, Clone, Copy)]
pub struct Places<'a> {
    /// Relative paths in the spec are taken from here (the workspace for a stage, the
    /// job file's folder for `pipe train --config`).
    pub base: &'a Path,
    /// The workspace, whose shared activation cache directory the run uses.
    pub workspace: &'a Path,
}

/// Runs a train stage: `config` is the resolved [`TrainSpec`]. Progress goes to stderr
/// (the stage log), one line per 10 steps, and after every step to the run's display
/// ([`pipe_engine::exec::progress`]).
pub fn run(config: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let spec: TrainSpec =
        serde_json::from_value(config.clone()).context("the train stage's --config")?;
    let places = Places {
        base: root,
        workspace: root,
    };
    let spec = with_params_file(&spec, root)?;
    if !crate::distributed::take_part(spec.options.distributed.ranks as usize)? {
        return Ok(());
    }
    let total = spec.options.iters;
    let mut valid_loss = None;
    let (_, report) = train(&spec, places, false, &mut |r| {
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
    if !crate::distributed::is_lead() {
        return Ok(());
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
        eprintln!("{}", crate::train::micro::describe(plan));
    }
    Ok(())
}

/// `spec` with its params file (read now: an earlier stage usually writes it) merged over
/// its options, and checked again.
pub fn with_params_file(spec: &TrainSpec, base: &Path) -> anyhow::Result<TrainSpec> {
    let Some(rel) = &spec.params_file else {
        return Ok(spec.clone());
    };
    let file = pipe_engine::stages::params_file::read(&base.join(rel))?;
    spec.with_params(&file)
        .map_err(|e| anyhow::anyhow!("{rel} merged over the train options: {e}"))
}

/// Trains what `spec` describes: merges its params file, measures `auto` values, trains,
/// and writes the choices beside the adapter. Returns the job as run and its report.
pub fn train(
    spec: &TrainSpec,
    places: Places<'_>,
    resume: bool,
    observer: &mut StepObserver<'_>,
) -> anyhow::Result<(TrainJob, JobReport)> {
    let spec = with_params_file(spec, places.base)?;
    // Any value stands in for an `auto` one until the data is measured.
    let probe = TrainJob::new(&spec, spec.config(8, 8), places.base);
    let data = match &spec.inputs {
        TrainInputs::Tokens(dir) => Some(super::tokenize::load_for_training(
            &places.base.join(dir),
            &spec.model,
        )?),
        TrainInputs::Files { .. } => None,
    };
    let rank_choice = match spec.options.lora.rank.value() {
        Some(_) => None,
        None => {
            let choice = rank_auto::measure(&probe, data.as_ref().map(|d| d.train.as_slice()))?;
            if crate::distributed::is_lead() {
                eprintln!("rank: auto -> {}: {}", choice.rank, choice.reason);
            }
            Some(choice)
        }
    };
    let batch_choice = match spec.options.batch_size.value() {
        Some(_) => None,
        None => {
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
            if crate::distributed::is_lead() {
                eprintln!(
                    "batch_size: auto -> {}: {}",
                    choice.batch_size, choice.reason
                );
            }
            Some(choice)
        }
    };
    let rank = rank_choice.as_ref().map_or(8, |c| c.rank as i32);
    let batch_size = batch_choice.as_ref().map_or(8, |c| c.batch_size);
    let mut job = TrainJob::new(&spec, spec.config(rank, batch_size), places.base);
    // Runs and tune trials of the workspace share one activation cache directory.
    job.config.activation_cache = job
        .config
        .activation_cache
        .or_dir(pipe_engine::cache::activations::dir(places.workspace));
    let report = run_job_on(&job, data, resume, observer)?;
    if !crate::distributed::is_lead() {
        return Ok((job, report));
    }
    if let Some(choice) = &rank_choice {
        pipe_engine::atomic_write::write_json(&job.out_dir.join(rank_auto::FILE), choice)?;
    }
    if let Some(choice) = &batch_choice {
        let path = job.out_dir.join("metrics.json");
        let mut metrics: serde_json::Value = serde_json::to_value(&report)?;
        metrics[batch_auto::METRICS_KEY] = batch_auto::record(
            choice,
            report.summary.batch.as_ref(),
            report.summary.peak_memory_bytes,
        );
        pipe_engine::atomic_write::write_json(&path, &metrics)?;
    }
    Ok((job, report))
}
