//! The command line: argument definitions (clap derive; doc comments are the help text),
//! dispatch to one file per subcommand, and the mapping from outcomes to exit codes.
//!
//! Two binaries share this module. `pipe` runs the engine commands (run, status, dag, show,
//! gc, cache, model, data) and does not link MLX; commands that use MLX are handed,
//! arguments unchanged, to `pipe-mlx`, its sibling executable (see `handoff.rs`). A process
//! that links MLX pays for loading it (`pipe --version` took 8 ms of CPU time with MLX
//! linked, 2 ms without, mostly dynamic linking) and, on Linux, for OpenBLAS starting its
//! thread pool from a library constructor before `main`; that pool then spins in
//! `sched_yield` against the engine's threads for the two cores (issue #3).
//!
//! Exit codes: 0 success (or nothing to do), 1 a failure while doing the work (a stage
//! failed, MLX could not start, a download failed), 2 a usage or validation error,
//! 75 skipped because another run holds the workspace lock (`--skip-if-running`, scheduled
//! runs; sysexits.h's EX_TEMPFAIL), 130 interrupted (`pipe run` on SIGINT/SIGTERM, as shells
//! expect).

pub mod bench;
mod bench_serve;
mod cache;
mod dag;
mod data;
pub mod doctor;
pub mod eval;
mod exit;
pub mod export;
mod export_airflow;
pub mod fuse;
mod gc;
pub mod generate;
mod handoff;
mod model;
mod notify;
pub mod output;
pub mod progress;
mod remote;
mod run;
pub mod run_stage;
mod runs;
mod schedule;
mod schema;
pub mod serve;
mod show;
pub mod slurm_task;
mod status;
pub mod tokens;
mod tracking;
pub mod train;
mod ui;
pub(crate) mod workspace;

use clap::{Parser, Subcommand};
pub use exit::{Busy, Failure, Interrupted, UsageError};
pub use handoff::{BUILD_ID, BUILD_ID_ARG, RUNTIME_INFO_ARG};
use output::Printer;

/// Fine-tune language models with MLX from declarative YAML pipelines.
#[derive(Debug, Parser)]
#[command(
    name = "pipe",
    version,
    propagate_version = true,
    after_help = "Examples:\n  pipe doctor                         # check the machine and MLX\n  pipe model fetch smollm2-135m-instruct\n  pipe doctor --json | jq .matmul_gflops\n  pipe run pipelines/examples/cmd-basics.yaml\n  pipe status pipelines/examples/cmd-basics.yaml"
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

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this machine: platform, chip, memory, MLX backend and a matmul benchmark.
    Doctor(doctor::Args),
    /// Fetch known models into the user cache; list, promote and pull registered adapters (MLflow).
    #[command(subcommand)]
    Model(model::Command),
    /// Generate text with a model (streams tokens; reports tokens/s).
    Generate(generate::Args),
    /// Serve a model and its adapters over an OpenAI-compatible HTTP API.
    Serve(serve::Args),
    /// Measure throughput on reference workloads.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Run one built-in stage (used by `pipe run`; not for direct use).
    #[command(name = "__run-stage", hide = true)]
    RunStage(run_stage::Args),
    /// Run one task of a Slurm job array (used by `pipe run --executor slurm`).
    #[command(name = "__slurm-task", hide = true)]
    SlurmTask(slurm_task::Args),
    /// Merge an adapter into its base model and save a Hugging Face directory.
    Fuse(fuse::Args),
    /// Write a model or an adapter in another tool's format (GGUF for llama.cpp).
    #[command(subcommand)]
    Export(export::Command),
    /// Fine-tune a model (LoRA, QLoRA, DoRA or full) from a job file.
    Train(train::Args),
    /// Fetch datasets into the user cache; list and check out recorded dataset versions.
    #[command(subcommand)]
    Data(data::Command),
    /// Run a pipeline: bring its outs up to date, running only stages whose inputs changed.
    Run(run::Args),
    /// The run history: list, show, diff and compare past runs.
    #[command(subcommand)]
    Runs(runs::Command),
    /// Run pipelines unattended: cron (Linux) or launchd (macOS) entries, their logs and status.
    #[command(subcommand)]
    Schedule(schedule::Command),
    /// Show which stages are stale and why.
    Status(status::Args),
    /// Print the stage graph (text, --dot or --mermaid).
    Dag(dag::Args),
    /// Show one stage: definition, outs, metrics, last run, log file.
    Show(show::Args),
    /// Upload the pipeline's computed outs to the remote cache (S3 or a shared folder).
    #[command(after_help = remote::PUSH_HELP)]
    Push(remote::Args),
    /// Download the pipeline's outs from the remote cache, checked, instead of running it.
    #[command(after_help = remote::PULL_HELP)]
    Pull(remote::Args),
    /// Delete cache objects no lock file or recent run refers to.
    Gc(gc::Args),
    /// Maintain the workspace cache.
    #[command(subcommand)]
    Cache(cache::Command),
    /// Loss, perplexity and answer accuracy of a model on a text or a dataset.
    Eval(eval::Args),
    /// Print the JSON Schema of pipeline files (for editors and tools).
    Schema(schema::Args),
    /// Serve the web UI: watch, start, stop and compare runs, upload data, download adapters.
    Ui(ui::Args),
    /// Show a data file as a model sees it: token counts, lengths and templated examples.
    Tokens(tokens::Args),
}

/// The `pipe` binary: parses the process arguments, runs an engine command or hands an MLX
/// command to `pipe-mlx`, and returns the exit code.
///
/// Nothing reachable from here may call into MLX: the linker then leaves MLX out of `pipe`
/// (`tests/it/startup.rs` checks that).
pub fn main() -> u8 {
    let cli = Cli::parse();
    let printer = Printer::new(&cli.global);
    let result = run_engine(&printer, cli.command);
    exit::report(&printer, result)
}

/// Parses the process arguments (for `pipe-mlx`, which dispatches the MLX commands
/// itself): the printer their global flags ask for, and the command.
pub fn parse() -> (Printer, Command) {
    let cli = Cli::parse();
    (Printer::new(&cli.global), cli.command)
}

/// Prints the error, if any, and returns the process exit code.
pub fn report(printer: &Printer, result: anyhow::Result<()>) -> u8 {
    exit::report(printer, result)
}

/// Runs a command that does not use MLX; one that does is handed to `pipe-mlx`.
pub fn run_engine(printer: &Printer, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Model(cmd) => model::run(printer, cmd),
        Command::Data(cmd) => data::run(printer, cmd),
        Command::Runs(cmd) => runs::run(printer, cmd),
        Command::Schedule(cmd) => schedule::run(printer, cmd),
        Command::Run(args) => run::run(printer, args),
        Command::Status(args) => status::run(printer, args),
        Command::Dag(args) => dag::run(printer, args),
        Command::Show(args) => show::run(printer, args),
        Command::Gc(args) => gc::run(printer, args),
        Command::Push(args) => remote::push(printer, args),
        Command::Pull(args) => remote::pull(printer, args),
        Command::Cache(cmd) => cache::run(printer, cmd),
        Command::Schema(args) => schema::run(printer, args),
        Command::Ui(args) => ui::run(printer, args),
        Command::SlurmTask(args) => slurm_task::run(args),
        // An HTTP load generator: no MLX, so `pipe` runs it itself.
        Command::Bench(bench::Command::Serve(args)) => bench_serve::run(printer, &args),
        // Writes a text file from the pipeline: no MLX.
        Command::Export(export::Command::Airflow(args)) => export_airflow::run(printer, args),
        Command::Doctor(_)
        | Command::Generate(_)
        | Command::Serve(_)
        | Command::Bench(_)
        | Command::RunStage(_)
        | Command::Fuse(_)
        | Command::Export(_)
        | Command::Train(_)
        | Command::Eval(_)
        | Command::Tokens(_) => handoff::exec_mlx(),
    }
}
