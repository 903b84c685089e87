//! The command line: argument definitions (clap derive; doc comments are the help text),
//! dispatch to one file per subcommand, and the mapping from outcomes to exit codes.
//!
//! Exit codes: 0 success (or nothing to do), 1 a failure while doing the work (a stage
//! failed, MLX could not start, a download failed), 2 a usage or validation error.

mod bench;
mod doctor;
mod eval;
mod exit;
mod generate;
mod model;
pub mod output;

use clap::{Parser, Subcommand};
pub use exit::{Failure, UsageError};
use output::Printer;

/// Fine-tune language models with MLX from declarative YAML pipelines.
#[derive(Debug, Parser)]
#[command(
    name = "pipe",
    version,
    propagate_version = true,
    after_help = "Examples:\n  pipe doctor                         # check the machine and MLX\n  pipe model fetch smollm2-135m-instruct\n  pipe doctor --json | jq .matmul_gflops"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Print only errors (for cron and scripts).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail; repeat for even more.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colors.
    #[arg(long, global = true, value_enum, default_value_t = output::ColorChoice::Auto)]
    pub color: output::ColorChoice,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check this machine: platform, chip, memory, MLX backend and a matmul benchmark.
    Doctor(doctor::Args),
    /// Fetch and locate models in the user's cache.
    #[command(subcommand)]
    Model(model::Command),
    /// Generate text with a model (streams tokens; reports tokens/s).
    Generate(generate::Args),
    /// Loss, perplexity and answer accuracy of a model on a text or a dataset.
    Eval(eval::Args),
    /// Throughput benchmarks.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(&cli.global);
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(&printer, args),
        Command::Model(cmd) => model::run(&printer, cmd),
        Command::Generate(args) => generate::run(&printer, args),
        Command::Eval(args) => eval::run(&printer, args),
        Command::Bench(cmd) => bench::run(&printer, cmd),
    };
    exit::report(&printer, result)
}
