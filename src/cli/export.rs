//! `pipe export`: write a model or an adapter in another tool's format. `pipe export gguf`
//! writes GGUF for llama.cpp (and the tools built on it, e.g. Ollama): the base model with
//! an adapter fused in, or the adapter alone as a GGUF LoRA. `pipe export airflow` writes
//! a pipeline as an Airflow DAG file (no MLX: `pipe` runs it itself, see
//! `export_airflow.rs`).

use std::path::PathBuf;

/// Subcommands of `pipe export`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a model (an adapter fused in) or a LoRA adapter as a GGUF file for llama.cpp.
    #[command(
        after_help = "The model file is GGUF v3 with llama.cpp's tensor names, its Q/K row order and the tokenizer and chat template in the metadata. Norms stay float32; with --type q8_0 a tensor whose rows are not whole 32-value blocks is written as f16, as llama.cpp's converter does.\nWith --lora-only the adapter alone is written (general.type=adapter), for llama.cpp's --lora FILE on the base model.\n\nExamples:\n  pipe export gguf --out smollm2.f16.gguf\n  pipe export gguf --adapter runs/quickstart/lora --type q8_0 --out past-tense.q8_0.gguf\n  pipe export gguf --adapter runs/quickstart/lora --lora-only --out past-tense-lora.gguf\n  llama-cli -m smollm2.f16.gguf --lora past-tense-lora.gguf -p 'walk'"
    )]
    Gguf(GgufArgs),
    /// Write a pipeline as an Airflow DAG file: one task per stage, the stage graph, the schedule.
    #[command(
        after_help = "Each task runs `pipe run PIPELINE -s STAGE` in the workspace, with this pipe binary's absolute path and the environment captured now (as `pipe schedule add` captures it; never credentials). pipe's cache makes a retried task that already finished a no-op, so Airflow's retries are safe. The schedule is --cron/--daily if given, else the one `pipe schedule add` set up for this pipeline (same file and --set values), else none (the DAG runs when triggered). Cron times are read in --timezone (default: this machine's zone, as cron reads them).\n\nExamples:\n  pipe export airflow pipelines/quickstart.yaml --out ~/airflow/dags/\n  pipe export airflow pipe.yaml --daily 02:30 --out dags/ --dag-id nightly_train\n  pipe export airflow pipe.yaml --set train.steps=200 --no-schedule --out dags/nightly.py"
    )]
    Airflow(super::export_airflow::Args),
}

/// The tensor type of a GGUF export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufType {
    /// float16 weights (lossless for float16 models; 2 bytes per weight).
    F16,
    /// 8-bit blocks of 32 with a float16 scale (about 1.06 bytes per weight).
    #[value(name = "q8_0")]
    Q8_0,
}

/// Arguments of `pipe export gguf`.
#[derive(Debug, clap::Args)]
pub struct GgufArgs {
    /// The base model (known id, GGUF file, Hugging Face or MLX directory).
    #[arg(long, short, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// An adapter folder (mlx-lm layout, as a train stage writes it), fused into the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The tensor type of the weights.
    #[arg(long = "type", value_enum, default_value_t = GgufType::F16)]
    pub ty: GgufType,
    /// The GGUF file to write (written atomically; its folder is created).
    #[arg(long)]
    pub out: PathBuf,
    /// Write only the adapter, as a GGUF LoRA adapter (LoRA only; not DoRA or full).
    #[arg(long, requires = "adapter")]
    pub lora_only: bool,
    /// `general.name` (default: the model's and adapter's names).
    #[arg(long)]
    pub name: Option<String>,
    /// The context length to declare, when the model source does not say.
    #[arg(long)]
    pub context_length: Option<u32>,
    /// Print one JSON object describing what was written.
    #[arg(long)]
    pub json: bool,
}
