//! `pipe bench`: throughput measurements. `pipe bench generate` times prompt processing and
//! token generation on a model and reports tokens/s and MLX's peak memory; `pipe bench
//! train` times the reference fine-tuning workload.

use super::generate::ModelArgs;
use pipe_schema::train::{Method, MicroBatch};
use std::path::PathBuf;

/// Subcommands of `pipe bench`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prompt and generation tokens/s and peak memory of a model.
    #[command(
        after_help = "Examples:\n  pipe bench generate\n  pipe bench generate --weights quantized --json"
    )]
    Generate(GenerateArgs),
    /// Time the reference fine-tuning workload (SmolLM2, past tense of English verbs, LoRA).
    #[command(
        after_help = "Examples:\n  pipe bench train\n  pipe bench train --iters 20 --json\n  pipe bench train --epochs 3 --examples 512 --activation-cache"
    )]
    Train(TrainArgs),
    /// Load-test an OpenAI-compatible server (`pipe serve`, `mlx_lm.server`, ...): tokens/s,
    /// time to first token and inter-token latency at several concurrency levels.
    #[command(
        after_help = "Examples:\n  pipe serve --port 8080 &\n  pipe bench serve --url http://127.0.0.1:8080\n  pipe bench serve --concurrency 1,4,16 --max-tokens 128 --json"
    )]
    Serve(super::bench_serve::ServeArgs),
    /// All-reduce bandwidth of MLX distributed between local ranks (the gradient exchange
    /// of data-parallel training).
    #[command(
        name = "allreduce",
        after_help = "Examples:\n  pipe bench allreduce\n  pipe bench allreduce --ranks 2 --mib 64 --rounds 20 --json\n  mlx.launch --hostfile hosts.json -- pipe bench allreduce"
    )]
    AllReduce(AllReduceArgs),
}

/// Arguments of `pipe bench allreduce`.
#[derive(Debug, clap::Args)]
pub struct AllReduceArgs {
    /// Local ranks to start on loopback (ignored under mlx.launch, mpirun or srun).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Size of the float32 array each rank contributes, in MiB.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub mib: u32,
    /// Timed all-reduces (after two untimed ones).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe bench generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The model and how to hold its weights.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length in tokens (a repeated English passage, cut to length).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens to generate (greedy; eos is ignored so every run generates this many).
    #[arg(long, default_value_t = 128)]
    pub generation_tokens: usize,
    /// Timed repetitions after one warm-up; the best of each figure is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model (known id, GGUF file or directory).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// Optimizer steps (throughput is averaged from step 11 on).
    #[arg(long, default_value_t = 40)]
    pub iters: u64,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: i32,
    /// Adapted blocks, counted from the top.
    #[arg(long, default_value_t = 16)]
    pub num_layers: i32,
    /// Compute the shared prompt prefix once per row instead of once per batch (to measure
    /// what prefix sharing contributes; the loss is the same either way).
    #[arg(long)]
    pub no_share_prefix: bool,
    /// Cache the hidden states entering the first adapted block in memory, so repeated
    /// examples (later epochs, validation) skip the frozen blocks; exact.
    #[arg(long)]
    pub activation_cache: bool,
    /// Also keep the cached states on disk in DIR (implies --activation-cache): run twice
    /// with the same DIR, and the second run measures a sweep's later trial, which reads
    /// the first run's states (the report's `disk_hits`).
    #[arg(long, value_name = "DIR")]
    pub activation_cache_dir: Option<PathBuf>,
    /// Multi-epoch mode: train this many epochs over `--examples` examples (sets the
    /// number of steps; `--iters` is ignored).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Training examples in multi-epoch mode.
    #[arg(long, default_value_t = 512, requires = "epochs")]
    pub examples: usize,
    /// `lora` (float32 base) or `qlora` (the GGUF's 4-bit weights as the base).
    #[arg(long, default_value = "lora", value_parser = parse_method)]
    pub method: Method,
    /// Recompute each block's activations in the backward pass (less memory).
    #[arg(long)]
    pub grad_checkpoint: bool,
    /// Rows per forward/backward pass: a number dividing the batch, or `auto` (the largest
    /// that fits `--memory-budget-mb`).
    #[arg(long, value_parser = parse_micro_batch)]
    pub micro_batch: Option<MicroBatch>,
    /// Memory budget for `--micro-batch auto`, in MiB (default: from the machine's memory).
    #[arg(long)]
    pub memory_budget_mb: Option<u64>,
    /// Data-parallel ranks started on this machine (each step's rows are split across
    /// them; tokens/s is then the whole group's).
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--method`.
pub fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "lora" => Ok(Method::Lora),
        "qlora" => Ok(Method::Qlora),
        other => Err(format!("expected lora or qlora, not `{other}`")),
    }
}

/// Parses `--micro-batch`: `auto` or a number of rows.
pub fn parse_micro_batch(s: &str) -> Result<MicroBatch, String> {
    match s {
        "auto" => Ok(MicroBatch::Auto),
        n => match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(MicroBatch::Value(n)),
            _ => Err(format!("expected a number of rows or `auto`, not `{n}`")),
        },
    }
}
