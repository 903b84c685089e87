//! Fusing an adapter into its base model, with the drift it causes measured.
//!
//! Fusing replaces `W` by `W + ΔW` in float32: the fused model equals base plus adapter up
//! to rounding. Re-quantizing the fused weights is optional and lossy: a small adapter's
//! `ΔW` can be smaller than a quantization step and vanish. So the drift is measured on a
//! probe text and reported next to the adapter's own effect; when the drift is a large
//! fraction of the effect, the quantized model has lost the fine-tune.

use super::adapters;
use super::lora::block_linears;
use crate::linear::QuantSpec;
use crate::models::llama::Llama;
use mlx_rs::Array;
use serde::Serialize;

/// Text the drift is measured on.
pub const PROBE: &str = "The quick brown fox jumps over the lazy dog. What is the past tense of the verb 'go'? Paris is the capital of France.";

/// What fusing did to the model's outputs on the probe text (mean absolute logit change).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FuseDrift {
    /// The adapter's own effect: adapted model vs base model.
    pub adapter_effect: f64,
    /// Fused float32 model vs adapted model (rounding only).
    pub fuse_drift: f64,
    /// Re-quantized fused model vs adapted model, when re-quantized.
    pub quantize_drift: Option<f64>,
}

impl FuseDrift {
    /// `quantize_drift / adapter_effect`: near 0 keeps the fine-tune, near 1 or above loses it.
    pub fn quantize_drift_ratio(&self) -> Option<f64> {
        self.quantize_drift
            .map(|d| d / self.adapter_effect.max(f64::MIN_POSITIVE))
    }
}

fn mean_abs_diff(a: &Array, b: &Array) -> Result<f64, mlx_rs::error::Exception> {
    Ok(f64::from(
        a.subtract(b)?.abs()?.mean(None)?.item_exact::<f32>(),
    ))
}

/// Fuses the adapter `model` carries (loaded with [`adapters::load_mlx_lm`]) into its base,
/// optionally re-quantizes the projections, and measures the drift on `probe` token ids.
/// `base_logits` are the base model's logits on the same ids, taken before the adapter was
/// loaded.
pub fn fuse_and_measure(
    model: &mut Llama,
    probe: &Array,
    base_logits: &Array,
    requantize: Option<QuantSpec>,
) -> anyhow::Result<FuseDrift> {
    let adapted = model.forward_tokens(probe, None, None)?;
    adapters::fuse(model)?;
    let fused = model.forward_tokens(probe, None, None)?;
    let mut drift = FuseDrift {
        adapter_effect: mean_abs_diff(&adapted, base_logits)?,
        fuse_drift: mean_abs_diff(&fused, &adapted)?,
        quantize_drift: None,
    };
    if let Some(q) = requantize {
        for layer in 0..model.model.layers.len() {
            for (_, linear) in block_linears(model, layer) {
                *linear = linear.quantize(q)?;
            }
        }
        let quantized = model.forward_tokens(probe, None, None)?;
        drift.quantize_drift = Some(mean_abs_diff(&quantized, &adapted)?);
    }
    Ok(drift)
}
