//! `pipe generate`: load a model, render the prompt through its chat template (when it has
//! one, unless `--raw`), stream the completion to stdout and report prompt and generation
//! tokens/s. A prompt that gets no text back is an error (exit 1), not silence.

use std::path::PathBuf;

/// How to hold the base weights in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weights {
    /// The fastest for this device: on the CPU backend dequantize to float32 at load (MLX's
    /// CPU quantized and half-precision kernels are slower: SmolLM2 decodes at 12–15 tok/s
    /// in float32 against 7 kept quantized); on Metal keep quantized.
    Auto,
    /// Keep quantized layers quantized (least memory).
    Quantized,
    /// Dequantize everything to float32.
    Float32,
    /// Dequantize everything to float16.
    Float16,
    /// Dequantize everything to bfloat16.
    Bfloat16,
}

/// The model commands use when `--model` is not given.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Model selection shared by generate, eval and bench.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A known model id (fetched on demand), a GGUF file, a Hugging Face or mlx-community
    /// directory, or an `org/name` repo id in the Hugging Face cache.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// How to hold the weights (see `--help`).
    #[arg(long, value_enum, default_value_t = Weights::Auto)]
    pub weights: Weights,
}

/// Arguments of `pipe generate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The prompt goes through the model's chat template as a user message when the model has one (as mlx_lm.generate does); --raw sends it as plain text. A prompt that gets no text back (the model ended at once) is reported on stderr and exits 1.\n\nExamples:\n  pipe generate --prompt 'What is the capital of France?'\n  pipe generate -m model.gguf --raw --prompt 'Once upon a time' --temp 0.8 --top-p 0.95 --seed 1\n  pipe generate --prompt 'Hi' --system 'Answer in French.' --json | jq .generation_tps"
)]
pub struct Args {
    /// The model and how to hold its weights.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text. Repeat it to generate for several prompts as one padded batch
    /// (results are printed one per line, or as JSON lines, when all are done).
    #[arg(long, short, required_unless_present = "batch")]
    pub prompt: Vec<String>,
    /// Send the prompt as plain text (with the model's bos), not through its chat template.
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// Require the chat template: fail if the model has none (by default it is used when
    /// present).
    #[arg(long)]
    pub chat: bool,
    /// A system message for the chat template.
    #[arg(long, conflicts_with = "raw")]
    pub system: Option<String>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Nucleus sampling mass (1 disables it).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this string appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print one JSON object (text and statistics) instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Answer every request of a file in the OpenAI Batch format (JSON Lines of
    /// `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`),
    /// decoding many at once as `pipe serve` does; results go to --out.
    #[arg(long, value_name = "FILE", requires = "out", conflicts_with_all = ["prompt", "system"])]
    pub batch: Option<PathBuf>,
    /// Where --batch results go (JSON Lines in the OpenAI Batch output format). Requests
    /// already answered there are skipped, so an interrupted run resumes.
    #[arg(long, value_name = "FILE", requires = "batch")]
    pub out: Option<PathBuf>,
    /// With --batch: an adapter requests can name as their `model`, as NAME=DIR
    /// (repeatable; `base` names the model itself).
    #[arg(long, value_name = "NAME=DIR", requires = "batch", value_parser = super::serve::parse_adapter)]
    pub adapter: Vec<(String, PathBuf)>,
    /// With --batch: requests decoded together at most.
    #[arg(long, default_value_t = 16, requires = "batch", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch_size: u32,
}
