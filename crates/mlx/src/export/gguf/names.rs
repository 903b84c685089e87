//! Which tensors a Llama-family model becomes in GGUF: llama.cpp's names, and the Q/K row
//! permutation its converter applies.
//!
//! Names (gguf-py `tensor_mapping.py`, the inverse of [`crate::load::gguf`]'s renaming):
//! `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//! ffn_gate, ffn_up, ffn_down}`, `output_norm`, and `output` unless the head is tied to the
//! embedding (llama.cpp then reuses `token_embd`).
//!
//! `convert_hf_to_gguf.py` (`LlamaModel.modify_tensors`) permutes the rows of Q (with the
//! query head count) and K (with the KV head count), weights and biases, for `llama`
//! models, so that llama.cpp's RoPE can rotate adjacent pairs; Qwen2 files are written as
//! they are. The permutation is [`crate::load::gguf::permute`], the inverse of what the
//! loader undoes.

use crate::linear::Linear;
use crate::load::gguf::permute;
use crate::models::llama::{DecoderLayer, Family, Llama};
use mlx_rs::Array;
use mlx_rs::error::Exception;

/// The `general.architecture` of a model family.
pub fn architecture(family: Family) -> &'static str {
    match family {
        // llama.cpp's converter maps MistralForCausalLM to its Llama model too.
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
    }
}

/// The GGUF role of a block projection (`q_proj` → `attn_q`).
pub fn block_role(proj: &str) -> Option<&'static str> {
    Some(match proj {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        _ => return None,
    })
}

/// How many heads to permute the rows of a block projection's output by, if at all.
pub fn permute_heads(model: &Llama, proj: &str) -> Option<i32> {
    let c = &model.config;
    if architecture(c.family) != "llama" {
        return None;
    }
    match proj {
        "q_proj" => Some(c.num_heads),
        "k_proj" => Some(c.num_kv_heads),
        _ => None,
    }
}

/// A block's seven projections with their Hugging Face names, in llama.cpp's order.
pub fn block_projections(layer: &DecoderLayer) -> [(&'static str, &Linear); 7] {
    let a = &layer.self_attn;
    let m = &layer.mlp;
    [
        ("q_proj", &a.q_proj),
        ("k_proj", &a.k_proj),
        ("v_proj", &a.v_proj),
        ("o_proj", &a.o_proj),
        ("gate_proj", &m.gate_proj),
        ("up_proj", &m.up_proj),
        ("down_proj", &m.down_proj),
    ]
}

#[derive(Debug)]
/// One tensor to write: its GGUF name and its float32 value in GGUF row order.
pub struct NamedTensor {
    /// `blk.0.attn_q.weight`.
    pub name: String,
    /// Row-major, float32, permuted when llama.cpp expects it.
    pub value: Array,
}

/// Every tensor of `model` (adapters fused already) under its GGUF name, block by block
/// (llama.cpp looks tensors up by name; the order is free). The arrays are lazy: each is
/// computed when it is written.
pub fn model_tensors(model: &Llama) -> Result<Vec<NamedTensor>, Exception> {
    let f32 = |a: &Array| a.as_dtype(mlx_rs::Dtype::Float32);
    let mut out = vec![NamedTensor {
        name: "token_embd.weight".into(),
        value: f32(&model.model.embed_tokens.dense_weight()?)?,
    }];
    for (i, layer) in model.model.layers.iter().enumerate() {
        let blk = |role: &str, part: &str| format!("blk.{i}.{role}.{part}");
        out.push(NamedTensor {
            name: blk("attn_norm", "weight"),
            value: f32(&layer.input_layernorm.weight)?,
        });
        for (proj, linear) in block_projections(layer) {
            let role = block_role(proj).unwrap_or(proj);
            let heads = permute_heads(model, proj);
            let arrange = |t: Array| match heads {
                Some(h) => permute(&t, h),
                None => Ok(t),
            };
            out.push(NamedTensor {
                name: blk(role, "weight"),
                value: arrange(f32(&linear.dense_weight()?)?)?,
            });
            if let Some(bias) = &linear.bias.value {
                out.push(NamedTensor {
                    name: blk(role, "bias"),
                    value: arrange(f32(bias)?)?,
                });
            }
            if proj == "o_proj" {
                out.push(NamedTensor {
                    name: blk("ffn_norm", "weight"),
                    value: f32(&layer.post_attention_layernorm.weight)?,
                });
            }
        }
    }
    out.push(NamedTensor {
        name: "output_norm.weight".into(),
        value: f32(&model.model.norm.weight)?,
    });
    if let Some(head) = &model.lm_head {
        out.push(NamedTensor {
            name: "output.weight".into(),
            value: f32(&head.dense_weight()?)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;

    #[test]
    fn names_and_shapes_of_a_tiny_llama() {
        let model = tiny_random(3, 40, 2, false).unwrap();
        let tensors = model_tensors(&model).unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 1 + 2 * 9 + 1, "tied head: no output.weight");
        assert_eq!(
            &names[..3],
            &[
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight"
            ]
        );
        assert!(names.contains(&"blk.1.ffn_down.weight"));
        assert_eq!(names.last(), Some(&"output_norm.weight"));
        let k = tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_k.weight")
            .unwrap();
        // 2 KV heads of 16 dims, hidden 64.
        assert_eq!(k.value.shape(), &[32, 64]);
        let original = model.model.layers[0]
            .self_attn
            .k_proj
            .dense_weight()
            .unwrap();
        let back = crate::load::gguf::unpermute(&k.value, 2).unwrap();
        assert_eq!(back.as_slice::<f32>(), original.as_slice::<f32>());
        assert_ne!(k.value.as_slice::<f32>(), original.as_slice::<f32>());
    }

    #[test]
    fn qwen2_keeps_row_order_and_writes_biases() {
        let model = tiny_random(3, 40, 1, true).unwrap();
        let tensors = model_tensors(&model).unwrap();
        let q = tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_q.weight")
            .unwrap();
        let original = model.model.layers[0]
            .self_attn
            .q_proj
            .dense_weight()
            .unwrap();
        assert_eq!(q.value.as_slice::<f32>(), original.as_slice::<f32>());
        assert!(tensors.iter().any(|t| t.name == "blk.0.attn_v.bias"));
    }
}
