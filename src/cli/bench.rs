//! `pipe bench`: throughput measurements.

use super::output::Printer;
use crate::mlx::train::bench::{self as train_bench, TrainBenchOptions};

/// Subcommands of `pipe bench`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Time the reference fine-tuning workload (SmolLM2, BIG-bench past tense, LoRA).
    #[command(after_help = "Examples:\n  pipe bench train\n  pipe bench train --iters 20 --json")]
    Train(TrainArgs),
}

/// Arguments of `pipe bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model (known id, GGUF file or directory).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Optimizer steps (throughput is averaged from step 11 on).
    #[arg(long, default_value_t = 40)]
    iters: u64,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: i32,
    /// Adapted blocks, counted from the top.
    #[arg(long, default_value_t = 16)]
    num_layers: i32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    let Command::Train(args) = command;
    printer.status("running the reference training workload (this takes a minute or two)");
    let report = train_bench::run(&TrainBenchOptions {
        model: args.model,
        iters: args.iters,
        batch_size: args.batch_size,
        rank: args.rank,
        num_layers: args.num_layers,
    })?;
    if args.json {
        return printer.json(&report);
    }
    let rows = [
        (
            "trained tokens/s",
            format!("{:.1}", report.trained_tokens_per_second),
        ),
        (
            "processed tokens/s",
            format!("{:.1}", report.processed_tokens_per_second),
        ),
        (
            "seconds per step",
            format!("{:.2}", report.seconds_per_step),
        ),
        (
            "peak memory",
            format!(
                "{:.0} MiB",
                report.peak_memory_bytes as f64 / (1u64 << 20) as f64
            ),
        ),
        (
            "achieved GFLOP/s",
            format!(
                "{:.1} ({:.0}% of the {:.0} GFLOP/s matmul peak)",
                report.achieved_gflops,
                report.efficiency * 100.0,
                report.matmul_peak_gflops
            ),
        ),
        (
            "final valid loss",
            format!("{:.3}", report.final_valid_loss),
        ),
    ];
    for (k, v) in rows {
        printer.result(&format!("{k:>20}  {v}"));
    }
    Ok(())
}
