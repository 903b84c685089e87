//! `pipe fuse`: merge an adapter into its base model and save a Hugging Face directory,
//! float32 by default, with the drift that fusing (and optional re-quantization) causes.

use clap::builder::TypedValueParser as _;
use std::path::PathBuf;

/// Arguments of `pipe fuse`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe fuse --adapter runs/quickstart/lora --out models/smollm2-past-tense\n  pipe fuse --adapter runs/lora --out models/q4 --quantize-bits 4   # prints the drift"
)]
pub struct Args {
    /// The base model (known id, GGUF file, Hugging Face or MLX directory).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// The adapter folder (mlx-lm layout, as a train stage writes it).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Where to write the fused Hugging Face directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Re-quantize the fused projections to 4 or 8 bits (lossy: the drift is printed).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "8"]).map(|s| s.parse::<i32>().unwrap_or(4)))]
    pub quantize_bits: Option<i32>,
    /// Group size for --quantize-bits.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::PossibleValuesParser::new(["32", "64"]).map(|s| s.parse::<i32>().unwrap_or(64)))]
    pub group_size: i32,
    /// Print the drift as JSON.
    #[arg(long)]
    pub json: bool,
}
