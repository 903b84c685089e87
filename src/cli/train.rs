//! `pipe train --config FILE`: fine-tune a model from a job file (see
//! [`crate::mlx::train::job`] for the format), with a live progress bar on a terminal and
//! one plain line per logged step otherwise.

use super::output::Printer;
use crate::mlx::train::job::{TrainJob, run_job};
use crate::mlx::train::log::StepRecord;
use std::path::PathBuf;

/// Arguments of `pipe train`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe train --config runs/lora.yaml\n  pipe train --config runs/lora.yaml --resume\n  pipe train --config runs/lora.yaml --json | jq .final_valid_loss"
)]
pub struct Args {
    /// The job file (YAML): model, train_data, valid_data, out_dir and trainer options.
    #[arg(long, short)]
    config: PathBuf,
    /// Continue from the checkpoint in out_dir instead of starting over.
    #[arg(long)]
    resume: bool,
    /// Print the final metrics as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let text = fs_err::read_to_string(&args.config)?;
    let base = args
        .config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut job = TrainJob::from_yaml(&text, &args.config, &base)
        .map_err(|e| super::UsageError(format!("{e:#}")))?;
    // The current directory is the workspace, as for `pipe run` and `pipe gc`.
    job.config.activation_cache = job
        .config
        .activation_cache
        .or_workspace_dir(&std::env::current_dir()?);
    let total = job.config.iters;
    printer.status(&format!(
        "training {} with {} for {total} steps -> {}",
        job.model,
        job.config.method,
        job.out_dir.display()
    ));
    let bar = printer.is_interactive().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
            )
            .expect("valid template"),
        );
        bar
    });
    let mut observe = |r: &StepRecord| match &bar {
        Some(bar) => {
            bar.set_position(r.step);
            bar.set_message(step_message(r));
        }
        None if r.step.is_multiple_of(10) || r.valid_loss.is_some() || r.step == total => {
            printer.status(&format!("step {}/{total}  {}", r.step, step_message(r)));
        }
        None => {}
    };
    let report = run_job(&job, args.resume, &mut observe);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if args.json {
        return printer.json(&report);
    }
    let s = &report.summary;
    printer.result(&format!(
        "done: {} steps, train loss {:.3}{}, {:.1} trained tok/s, peak memory {:.0} MiB; adapter in {}",
        s.steps,
        s.final_train_loss,
        s.final_valid_loss
            .map(|v| format!(", valid loss {v:.3}"))
            .unwrap_or_default(),
        s.trained_tokens_per_second,
        s.peak_memory_bytes as f64 / (1u64 << 20) as f64,
        job.out_dir.display()
    ));
    if let Some(plan) = &s.batch {
        printer.status(&crate::mlx::train::micro::describe(plan));
    }
    Ok(())
}

fn step_message(r: &StepRecord) -> String {
    let mut msg = format!(
        "loss {:.3}  lr {:.1e}  {:.0} tok/s",
        r.loss, r.lr, r.trained_tokens_per_second
    );
    if let Some(v) = r.valid_loss {
        msg.push_str(&format!("  valid {v:.3}"));
    }
    msg
}
