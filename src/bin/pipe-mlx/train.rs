//! `pipe train --config FILE`: fine-tune a model from a job file, the same type a train
//! stage's `with:` is ([`pipe_schema::train`]), so both accept the same options
//! (`tokens`, `params_file`, `batch_size: auto`, `lora: {rank: auto}` included). A live
//! progress bar on a terminal, one plain line per logged step otherwise.

use pipe::cli::UsageError;
use pipe::cli::output::Printer;
use pipe::cli::train::Args;
use pipe_engine::spec::{Diagnostic, Pos};
use pipe_mlx_core::stages::train::{Places, train, with_params_file};
use pipe_mlx_core::train::log::StepRecord;
use pipe_schema::train::TrainWith;
use std::path::{Path, PathBuf};

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let text = fs_err::read_to_string(&args.config)?;
    let base = match args.config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let spec = parse_job(&args.config, &text)?;
    let spec = with_params_file(&spec, &base).map_err(|e| UsageError(format!("{e:#}")))?;
    if !pipe_mlx_core::distributed::take_part(spec.options.distributed.ranks as usize)? {
        // Rank 0 printed the result.
        return Ok(());
    }
    let lead = pipe_mlx_core::distributed::is_lead();
    // The current directory is the workspace, as for `pipe run` and `pipe gc`.
    let workspace = std::env::current_dir()?;
    let total = spec.options.iters;
    let ranks = pipe_mlx_core::distributed::world()
        .map(|g| format!(" on {} ranks", g.size()))
        .unwrap_or_default();
    if lead {
        printer.status(&format!(
            "training {} with {} for {total} steps{ranks} -> {}",
            spec.model,
            spec.options.method,
            base.join(&spec.out_dir).display()
        ));
    }
    let bar = (lead && printer.is_interactive()).then(|| {
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
    let places = Places {
        base: &base,
        workspace: &workspace,
    };
    let trained = train(&spec, places, args.resume, &mut observe);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (job, report) = trained?;
    if !lead {
        return Ok(());
    }
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
        printer.status(&pipe_mlx_core::train::micro::describe(plan));
    }
    Ok(())
}

/// Reads a job file; a bad value is reported at its line, with a caret.
fn parse_job(file: &Path, text: &str) -> anyhow::Result<pipe_schema::train::TrainSpec> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map_or(Pos::default(), |l| Pos {
            line: l.line(),
            col: l.column(),
        });
        UsageError(Diagnostic::new(file, text, pos, format!("invalid YAML: {e}")).to_string())
    })?;
    let json = serde_json::to_value(yaml)?;
    TrainWith::parse(&json).map_err(|e| {
        let d = Diagnostic::at_field(file, text, &[], Pos { line: 1, col: 1 }, "", &e);
        UsageError(d.to_string()).into()
    })
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
