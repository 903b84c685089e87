//! A LoRA adapter as a GGUF adapter file, the layout llama.cpp's `convert_lora_to_gguf.py`
//! writes and `llama_adapter_lora_init` reads (`--lora FILE` in llama.cpp's tools).
//!
//! - Metadata: `general.architecture` of the base, `general.type = "adapter"`,
//!   `adapter.type = "lora"`, `adapter.lora.alpha` (float32). llama.cpp scales each
//!   product by `alpha / rank`, the rank read off the tensors, so `alpha = scale · rank`.
//! - Tensors: `<base tensor name>.lora_a` of shape `[rank, in]` and `.lora_b` of shape
//!   `[out, rank]` (PEFT's `lora_A.weight`/`lora_B.weight`; mlx-lm stores both
//!   transposed). llama.cpp checks `a.ne[0] == base.ne[0]`, `b.ne[1] == base.ne[1]` and
//!   `a.ne[1] == b.ne[0]`.
//! - The Q/K row permutation of the base applies to the adapter's output rows, i.e. to
//!   `lora_b` (the converter runs the base model's `modify_tensors` on a LoRA tensor pair,
//!   and a row permutation of `B·A` is a row permutation of `B`).
//!
//! DoRA has no GGUF adapter form (its magnitude rescales whole rows), and a full fine-tune
//! is no adapter at all: both are refused with the fused export as the way out.

use super::names::{NamedTensor, block_projections, block_role, permute_heads};
use crate::load::gguf::permute;
use crate::models::llama::Llama;
use crate::train::lora::Adapter;
use mlx_rs::error::Exception;
use std::any::Any;

/// Why an adapter cannot be written as a GGUF LoRA.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The model carries no LoRA adapter.
    #[error(
        "the model carries no LoRA adapter (a full fine-tune has none): export the fused model without --lora-only"
    )]
    NoAdapter,
    /// DoRA adapters have no GGUF form.
    #[error(
        "`{layer}` is a DoRA adapter, which llama.cpp cannot load as a LoRA: export the fused model without --lora-only"
    )]
    Dora {
        /// The first DoRA layer.
        layer: String,
    },
    /// GGUF has one alpha per file.
    #[error(
        "adapters differ in scale (`{first}`: {first_scale}, `{other}`: {other_scale}); a GGUF adapter has one alpha"
    )]
    MixedScale {
        /// One layer.
        first: String,
        /// Its scale.
        first_scale: f32,
        /// Another.
        other: String,
        /// Its scale.
        other_scale: f32,
    },
    /// MLX failed.
    #[error(transparent)]
    Mlx(#[from] Exception),
}

/// The adapter tensors under GGUF names and the file's `adapter.lora.alpha`.
pub fn lora_tensors(model: &Llama) -> Result<(Vec<NamedTensor>, f32), LoraError> {
    let mut out = Vec::new();
    let mut scale: Option<(String, f32)> = None;
    let mut alpha = 0.0;
    for (i, layer) in model.model.layers.iter().enumerate() {
        for (proj, linear) in block_projections(layer) {
            let Some(boxed) = linear.adapter.as_deref() else {
                continue;
            };
            let here = format!("model.layers.{i}.{proj}");
            let any: &dyn Any = boxed;
            let Some(adapter) = any.downcast_ref::<Adapter>() else {
                return Err(LoraError::NoAdapter);
            };
            if adapter.m.value.is_some() {
                return Err(LoraError::Dora { layer: here });
            }
            match &scale {
                Some((first, s)) if *s != adapter.scale => {
                    return Err(LoraError::MixedScale {
                        first: first.clone(),
                        first_scale: *s,
                        other: here,
                        other_scale: adapter.scale,
                    });
                }
                Some(_) => {}
                None => {
                    scale = Some((here.clone(), adapter.scale));
                    alpha = adapter.scale * adapter.rank() as f32;
                }
            }
            let base = format!("blk.{i}.{}.weight", block_role(proj).unwrap_or(proj));
            let f32 = |a: &mlx_rs::Array| a.as_dtype(mlx_rs::Dtype::Float32);
            let a = f32(&adapter.lora_a)?.t();
            let mut b = f32(&adapter.lora_b)?.t();
            if let Some(heads) = permute_heads(model, proj) {
                b = permute(&b, heads)?;
            }
            out.push(NamedTensor {
                name: format!("{base}.lora_a"),
                value: a,
            });
            out.push(NamedTensor {
                name: format!("{base}.lora_b"),
                value: b,
            });
        }
    }
    if out.is_empty() {
        return Err(LoraError::NoAdapter);
    }
    Ok((out, alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;
    use crate::train::lora::{AdapterSpec, attach};
    use mlx_rs::Array;

    fn spec(dora: bool) -> AdapterSpec {
        AdapterSpec {
            rank: 4,
            scale: 2.0,
            dropout: 0.0,
            num_layers: Some(1),
            targets: vec!["q_proj".into(), "k_proj".into(), "down_proj".into()],
            dora,
        }
    }

    /// What llama.cpp computes from the file, `alpha / rank · B·A`, equals the adapter's
    /// own weight change in GGUF row order.
    #[test]
    fn gguf_product_equals_the_permuted_delta() {
        let mut model = tiny_random(5, 40, 2, false).unwrap();
        attach(&mut model, &spec(false), 1).unwrap();
        // B starts at zero; give it values so the product is not trivially zero.
        for layer in &mut model.model.layers {
            for linear in [&mut layer.self_attn.q_proj, &mut layer.self_attn.k_proj] {
                if let Some(a) = Adapter::of_mut(linear) {
                    let shape = a.lora_b.shape().to_vec();
                    *a.lora_b = mlx_rs::random::normal::<f32>(&shape, None, None, None).unwrap();
                }
            }
        }
        let (tensors, alpha) = lora_tensors(&model).unwrap();
        assert_eq!(alpha, 8.0);
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.1.attn_q.weight.lora_a",
                "blk.1.attn_q.weight.lora_b",
                "blk.1.attn_k.weight.lora_a",
                "blk.1.attn_k.weight.lora_b",
                "blk.1.ffn_down.weight.lora_a",
                "blk.1.ffn_down.weight.lora_b",
            ]
        );
        let (config, layer) = (&model.config, &model.model.layers[1]);
        for (i, (linear, heads)) in [
            (&layer.self_attn.q_proj, config.num_heads),
            (&layer.self_attn.k_proj, config.num_kv_heads),
        ]
        .into_iter()
        .enumerate()
        {
            let (a, b) = (&tensors[2 * i].value, &tensors[2 * i + 1].value);
            assert_eq!(a.shape()[0], 4, "lora_a is [rank, in]");
            assert_eq!(b.shape()[1], 4, "lora_b is [out, rank]");
            let gguf = b
                .matmul(a)
                .unwrap()
                .multiply(Array::from_f32(alpha / 4.0))
                .unwrap();
            let w = linear.dense_weight().unwrap();
            let delta = linear.adapter.as_ref().unwrap().delta(&w).unwrap();
            let expected = permute(&delta, heads).unwrap();
            let diff = crate::test_support::max_abs_diff(&gguf, &expected);
            assert!(diff < 1e-5, "{diff}");
        }
    }

    #[test]
    fn dora_and_no_adapter_are_refused() {
        let model = tiny_random(5, 40, 1, false).unwrap();
        assert!(matches!(lora_tensors(&model), Err(LoraError::NoAdapter)));
        let mut model = tiny_random(5, 40, 1, false).unwrap();
        attach(&mut model, &spec(true), 1).unwrap();
        let err = lora_tensors(&model).unwrap_err().to_string();
        assert!(
            err.contains("DoRA") && err.contains("model.layers.0.q_proj"),
            "{err}"
        );
    }
}
