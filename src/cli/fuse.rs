//! `pipe fuse`: merge an adapter into its base model and save a Hugging Face directory,
//! float32 by default, with the drift that fusing (and optional re-quantization) causes.

use super::output::Printer;
use crate::mlx::linear::QuantSpec;
use crate::mlx::load::{self, LoadOptions, hf};
use crate::mlx::train::{adapters, fuse};
use clap::builder::TypedValueParser as _;
use mlx_rs::Array;
use std::path::PathBuf;

/// Arguments of `pipe fuse`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe fuse --adapter runs/quickstart/lora --out models/smollm2-past-tense\n  pipe fuse --adapter runs/lora --out models/q4 --quantize-bits 4   # prints the drift"
)]
pub struct Args {
    /// The base model (known id, GGUF file, Hugging Face or MLX directory).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// The adapter folder (mlx-lm layout, as a train stage writes it).
    #[arg(long)]
    adapter: PathBuf,
    /// Where to write the fused Hugging Face directory.
    #[arg(long)]
    out: PathBuf,
    /// Re-quantize the fused projections to 4 or 8 bits (lossy: the drift is printed).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "8"]).map(|s| s.parse::<i32>().unwrap_or(4)))]
    quantize_bits: Option<i32>,
    /// Group size for --quantize-bits.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::PossibleValuesParser::new(["32", "64"]).map(|s| s.parse::<i32>().unwrap_or(64)))]
    group_size: i32,
    /// Print the drift as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let mut loaded = load::load(
        &args.model,
        LoadOptions {
            keep_quantized: false,
            ..LoadOptions::default()
        },
    )?;
    let ids: Vec<i32> = loaded
        .tokenizer
        .encode(fuse::PROBE, true)?
        .into_iter()
        .map(|i| i as i32)
        .collect();
    let probe = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let base_logits = loaded.model.forward_tokens(&probe, None, None)?;
    adapters::load_mlx_lm(&mut loaded.model, &args.adapter)?;
    let requantize = args.quantize_bits.map(|bits| QuantSpec {
        group_size: args.group_size,
        bits,
    });
    let drift = fuse::fuse_and_measure(&mut loaded.model, &probe, &base_logits, requantize)?;
    hf::save_dir(
        &loaded.model,
        &loaded.tokenizer,
        loaded.chat_template.as_ref(),
        &args.out,
    )?;
    if args.json {
        return printer.json(&serde_json::json!({
            "out": args.out,
            "drift": drift,
            "quantize_drift_ratio": drift.quantize_drift_ratio(),
        }));
    }
    printer.result(&format!(
        "fused model written to {} (mean |logit change| on a probe: adapter effect {:.4}, fusing {:.2e})",
        args.out.display(),
        drift.adapter_effect,
        drift.fuse_drift
    ));
    if let (Some(d), Some(ratio)) = (drift.quantize_drift, drift.quantize_drift_ratio()) {
        printer.result(&format!(
            "re-quantized to {} bits: drift {d:.4}, {:.0}% of the adapter's effect",
            args.quantize_bits.unwrap_or(0),
            ratio * 100.0
        ));
        if ratio > 0.5 {
            printer.warn("re-quantization changes the outputs by more than half of what the adapter does; keep the float32 model");
        }
    }
    Ok(())
}
