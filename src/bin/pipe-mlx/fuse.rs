//! `pipe fuse`: merge an adapter into its base model and save a Hugging Face directory,
//! float32 by default, with the drift that fusing (and optional re-quantization) causes.

use mlx_rs::Array;
use pipe::cli::fuse::Args;
use pipe::cli::output::Printer;
use pipe_mlx_core::linear::QuantSpec;
use pipe_mlx_core::load::{self, LoadOptions, hf};
use pipe_mlx_core::train::{adapters, fuse};

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
