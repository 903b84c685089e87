//! The Llama family of decoder-only transformers: Llama 2/3.x, SmolLM/SmolLM2, Mistral,
//! TinyLlama and Qwen2/2.5 (the same block with q/k/v biases).
//!
//! Architecture: pre-norm blocks of RMSNorm → grouped-query attention with rotary position
//! embeddings → residual, RMSNorm → SwiGLU MLP → residual; a final RMSNorm and an LM head
//! that is either its own matrix or the token embedding (tied).
//! - Llama: Touvron et al. 2023, <https://arxiv.org/abs/2302.13971>; Llama 3 rope scaling as
//!   in Meta's reference code and mlx-lm `models/rope_utils.py` (`Llama3RoPE`).
//! - RoPE: Su et al. 2021, <https://arxiv.org/abs/2104.09864>; GQA: Ainslie et al. 2023,
//!   <https://arxiv.org/abs/2305.13245>; SwiGLU: Shazeer 2020, <https://arxiv.org/abs/2002.05202>.
//! - Reference implementation: mlx-lm `mlx_lm/models/llama.py` and `qwen2.py`.
//!
//! Field names are the Hugging Face checkpoint keys, so parameters flatten to
//! `model.layers.0.self_attn.q_proj.weight` exactly as in `model.safetensors`. Rotary
//! embeddings use the Hugging Face ("non-traditional", half-split) layout; the GGUF loader
//! undoes llama.cpp's Q/K row permutation so one layout serves every source.
//!
//! Padded batches: prompts are left-padded and a key mask hides the padding. Every row uses
//! the same absolute positions; because RoPE attention scores depend only on the distance
//! between positions, a constant shift per row changes nothing, so a padded row computes
//! what it would alone. A continuous batch (`serve`), whose rows joined at different steps,
//! instead gives every row its own rotary position ([`RopeOffset::PerRow`],
//! [`Llama::forward_rows`]): a row's cached keys were rotated at its own positions, which
//! no shared offset can match once rows of different lengths share the cache's columns.

pub use super::cache::{KvCache, attention_mask};
pub use config::{ConfigError, Family, LlamaConfig, ModelConfig, RopeScaling, llama3_rope_periods};

mod checkpoint;
mod config;
use crate::linear::Linear;
use mlx_rs::error::Exception;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::nn::RmsNorm;
use mlx_rs::ops::ones;
use mlx_rs::{Array, Dtype};

/// Rotary embedding parameters (not trainable).
#[derive(Debug, Clone)]
struct Rope {
    dims: i32,
    base: f32,
    scale: f32,
    freqs: Option<Array>,
}

/// Where the rotary positions of a call's first token lie.
#[derive(Debug, Clone, Copy)]
pub enum RopeOffset<'a> {
    /// The same position for every row (a cache's offset).
    Shared(i32),
    /// One position per row, `[B]` int32: rows of a continuous batch, each at its own
    /// length.
    PerRow(&'a Array),
}

impl Rope {
    fn apply(&self, x: &Array, offset: RopeOffset<'_>) -> Result<Array, Exception> {
        match (offset, &self.freqs) {
            (RopeOffset::Shared(o), Some(f)) => {
                fast::rope(x, self.dims, false, None, self.scale, o, f)
            }
            (RopeOffset::Shared(o), None) => {
                fast::rope(x, self.dims, false, self.base, self.scale, o, None)
            }
            (RopeOffset::PerRow(o), Some(f)) => {
                fast::rope_dynamic(x, self.dims, false, None, self.scale, o, f)
            }
            (RopeOffset::PerRow(o), None) => {
                fast::rope_dynamic(x, self.dims, false, self.base, self.scale, o, None)
            }
        }
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Attention {
    /// Query projection.
    #[param]
    pub q_proj: Linear,
    /// Key projection.
    #[param]
    pub k_proj: Linear,
    /// Value projection.
    #[param]
    pub v_proj: Linear,
    /// Output projection.
    #[param]
    pub o_proj: Linear,
    num_heads: i32,
    num_kv_heads: i32,
    head_dim: i32,
    rope: Rope,
}

/// The per-call inputs of an attention block.
struct AttnInput<'a> {
    x: &'a Array,
    mask: Option<&'a Array>,
    cache: Option<(&'a mut KvCache, usize)>,
    offset: RopeOffset<'a>,
}

impl Attention {
    fn forward(&mut self, input: AttnInput<'_>) -> Result<Array, Exception> {
        let AttnInput {
            x,
            mask,
            cache,
            offset,
        } = input;
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let split = |t: Array, heads: i32| -> Result<Array, Exception> {
            t.reshape(&[b, l, heads, self.head_dim])?
                .transpose_axes(&[0, 2, 1, 3])
        };
        let q = split(self.q_proj.forward(x)?, self.num_heads)?;
        let k = split(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let q = self.rope.apply(&q, offset)?;
        let k = self.rope.apply(&k, offset)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.update(layer, k, v)?,
            None => (k, v),
        };
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let out = match mask {
            Some(m) => fast::scaled_dot_product_attention(&q, &k, &v, scale, m, None)?,
            None if l > 1 => fast::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                scale,
                ScaledDotProductAttentionMask::Causal,
                None,
            )?,
            None => fast::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                scale,
                None::<ScaledDotProductAttentionMask>,
                None,
            )?,
        };
        let out =
            out.transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[b, l, self.num_heads * self.head_dim])?;
        self.o_proj.forward(&out)
    }
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Mlp {
    /// Gate projection.
    #[param]
    pub gate_proj: Linear,
    /// Up projection.
    #[param]
    pub up_proj: Linear,
    /// Down projection.
    #[param]
    pub down_proj: Linear,
}

impl Module<&Array> for Mlp {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        let gate = mlx_rs::nn::silu(self.gate_proj.forward(x)?)?;
        let h = gate.multiply(self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }

    fn training_mode(&mut self, _mode: bool) {}
}

/// One pre-norm transformer block.
#[derive(Debug, Clone, ModuleParameters)]
pub struct DecoderLayer {
    /// Attention.
    #[param]
    pub self_attn: Attention,
    /// Feed-forward.
    #[param]
    pub mlp: Mlp,
    /// Norm before attention.
    #[param]
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    #[param]
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// `h + attn(norm(h))`, then `+ mlp(norm(·))`.
    fn forward_block(
        &mut self,
        h: &Array,
        mask: Option<&Array>,
        cache: Option<(&mut KvCache, usize)>,
        offset: i32,
    ) -> Result<Array, Exception> {
        self.forward_block_at(h, mask, cache, RopeOffset::Shared(offset))
    }

    /// [`DecoderLayer::forward_block`] with rotary positions given per row or shared.
    fn forward_block_at(
        &mut self,
        h: &Array,
        mask: Option<&Array>,
        cache: Option<(&mut KvCache, usize)>,
        offset: RopeOffset<'_>,
    ) -> Result<Array, Exception> {
        let normed = self.input_layernorm.forward(h)?;
        let a = self.self_attn.forward(AttnInput {
            x: &normed,
            mask,
            cache,
            offset,
        })?;
        let h = h.add(a)?;
        let normed = self.post_attention_layernorm.forward(&h)?;
        h.add(self.mlp.forward(&normed)?)
    }
}

/// The decoder stack without the LM head (`model.*` keys).
#[derive(Debug, Clone, ModuleParameters)]
pub struct LlamaModel {
    /// Token embedding `[vocab, hidden]`, plain or quantized.
    #[param]
    pub embed_tokens: Linear,
    /// The blocks.
    #[param]
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    #[param]
    pub norm: RmsNorm,
}

/// A Llama-family causal language model.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Llama {
    /// The decoder stack.
    #[param]
    pub model: LlamaModel,
    /// The LM head, absent when tied to the embedding.
    #[param]
    pub lm_head: Option<Linear>,
    /// The resolved configuration.
    pub config: ModelConfig,
    /// Gradient checkpointing: each block's activations are recomputed in the backward
    /// pass instead of being kept from the forward (training sets this; see `checkpoint`).
    pub grad_checkpoint: bool,
    /// The base weights this model was loaded from, which adapters trained on it record
    /// and are checked against ([`crate::load::identity`]); `None` for models built in
    /// memory or changed by fusing.
    pub base: Option<crate::load::identity::BaseModel>,
}

/// The weights of one block, by role, for [`Llama::new`].
#[derive(Debug)]
pub struct LayerWeights {
    /// q, k, v, o projections.
    pub attn: [Linear; 4],
    /// gate, up, down projections.
    pub mlp: [Linear; 3],
    /// input_layernorm and post_attention_layernorm weights.
    pub norms: [Array; 2],
}

fn rms_norm(weight: Array, eps: f32) -> RmsNorm {
    RmsNorm {
        weight: Param::new(weight),
        eps,
    }
}

impl Llama {
    /// Assembles a model from loaded weights (shapes already checked by the loader).
    pub fn new(
        config: ModelConfig,
        embed_tokens: Linear,
        layers: Vec<LayerWeights>,
        norm: Array,
        lm_head: Option<Linear>,
    ) -> Self {
        let eps = config.rms_norm_eps;
        let rope = Rope {
            dims: config.head_dim,
            base: config.rope_theta,
            scale: config.rope_scale,
            freqs: config
                .rope_freqs
                .as_ref()
                .map(|f| Array::from_slice(f, &[f.len() as i32])),
        };
        let layers = layers
            .into_iter()
            .map(|w| {
                let [q_proj, k_proj, v_proj, o_proj] = w.attn;
                let [gate_proj, up_proj, down_proj] = w.mlp;
                let [n1, n2] = w.norms;
                DecoderLayer {
                    self_attn: Attention {
                        q_proj,
                        k_proj,
                        v_proj,
                        o_proj,
                        num_heads: config.num_heads,
                        num_kv_heads: config.num_kv_heads,
                        head_dim: config.head_dim,
                        rope: rope.clone(),
                    },
                    mlp: Mlp {
                        gate_proj,
                        up_proj,
                        down_proj,
                    },
                    input_layernorm: rms_norm(n1, eps),
                    post_attention_layernorm: rms_norm(n2, eps),
                }
            })
            .collect();
        Self {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm: rms_norm(norm, eps),
            },
            lm_head,
            config,
            grad_checkpoint: false,
            base: None,
        }
    }

    /// A fresh KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }

    /// The dtype activations are computed in (that of the final norm's weight).
    pub fn dtype(&self) -> Dtype {
        self.model.norm.weight.dtype()
    }

    /// Final hidden states `[B, L, hidden]` (after the final norm, before the LM head).
    ///
    /// `tokens` is `[B, L]` (int32). With a `cache`, positions continue from its offset and
    /// it is extended. `key_mask` is `[B, offset + L]`, nonzero for real tokens and zero for
    /// padding; without it every position is real and attention is plainly causal.
    pub fn hidden_states(
        &mut self,
        tokens: &Array,
        cache: Option<&mut KvCache>,
        key_mask: Option<&Array>,
    ) -> Result<Array, Exception> {
        let h = self.model.embed_tokens.embed(tokens)?;
        let h = self.run_blocks(h, 0..self.model.layers.len(), cache, key_mask)?;
        self.model.norm.forward(&h)
    }

    /// Runs the blocks `blocks` on `h` `[B, L, hidden]`, the hidden states entering block
    /// `blocks.start`, and returns those leaving block `blocks.end - 1` (no final norm).
    /// [`Llama::hidden_states`] is the embedding, every block, then the final norm; the
    /// frozen-block activation cache (`train::activations`) runs the two parts apart.
    /// `cache` and `key_mask` are as in [`Llama::hidden_states`]; the cache is advanced.
    pub fn run_blocks(
        &mut self,
        mut h: Array,
        blocks: std::ops::Range<usize>,
        mut cache: Option<&mut KvCache>,
        key_mask: Option<&Array>,
    ) -> Result<Array, Exception> {
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let l = h.shape()[1];
        let dtype = h.dtype();
        let mask = match key_mask {
            Some(km) => Some(attention_mask(km, offset, l, dtype)?),
            None => None,
        };
        let checkpointed = self.grad_checkpoint;
        let (first, end) = (blocks.start, blocks.end);
        for (i, layer) in self
            .model
            .layers
            .iter_mut()
            .enumerate()
            .take(end)
            .skip(first)
        {
            let cache = cache.as_deref_mut().map(|c| (c, i));
            h = if checkpointed {
                checkpoint::block(layer, &h, mask.as_ref(), cache, offset)?
            } else {
                layer.forward_block(&h, mask.as_ref(), cache, offset)?
            };
        }
        if let Some(c) = cache {
            c.advance(l);
        }
        Ok(h)
    }

    /// The final norm (what [`Llama::hidden_states`] applies after the last block).
    pub fn final_norm(&mut self, h: &Array) -> Result<Array, Exception> {
        self.model.norm.forward(h)
    }

    /// Logits from hidden states: the LM head, or the tied embedding.
    pub fn logits(&mut self, hidden: &Array) -> Result<Array, Exception> {
        match &mut self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.model.embed_tokens.forward(hidden),
        }
    }

    /// Logits `[B, L, vocab]` of a continuous batch: row `b`'s first token sits at rotary
    /// position `positions[b]` (`[B]` int32), whatever the cache's column count. `key_mask`
    /// `[B, offset + L]` hides each row's padding columns, as in [`Llama::hidden_states`].
    pub fn forward_rows(
        &mut self,
        tokens: &Array,
        cache: &mut KvCache,
        key_mask: &Array,
        positions: &Array,
    ) -> Result<Array, Exception> {
        let h = self.model.embed_tokens.embed(tokens)?;
        let l = h.shape()[1];
        let mask = attention_mask(key_mask, cache.offset(), l, h.dtype())?;
        let mut h = h;
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            h = layer.forward_block_at(
                &h,
                Some(&mask),
                Some((&mut *cache, i)),
                RopeOffset::PerRow(positions),
            )?;
        }
        cache.advance(l);
        let h = self.model.norm.forward(&h)?;
        self.logits(&h)
    }

    /// Logits `[B, L, vocab]`; see [`Llama::hidden_states`] for the arguments.
    pub fn forward_tokens(
        &mut self,
        tokens: &Array,
        cache: Option<&mut KvCache>,
        key_mask: Option<&Array>,
    ) -> Result<Array, Exception> {
        let h = self.hidden_states(tokens, cache, key_mask)?;
        self.logits(&h)
    }
}

/// Logits of a whole unpadded batch `[B, L]` with no cache (what training calls).
impl Module<&Array> for Llama {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, tokens: &Array) -> Result<Array, Exception> {
        self.forward_tokens(tokens, None, None)
    }

    fn training_mode(&mut self, _mode: bool) {}
}

/// A tiny random-weight model for tests: `vocab` tokens, `layers` blocks, GQA 4/2 heads.
pub fn tiny_random(seed: u64, vocab: i32, layers: i32, qkv_bias: bool) -> Result<Llama, Exception> {
    crate::exit_guard::install();
    let cfg = LlamaConfig {
        model_type: if qkv_bias { "qwen2" } else { "llama" }.into(),
        hidden_size: 64,
        num_hidden_layers: layers,
        intermediate_size: 128,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-5,
        vocab_size: vocab,
        rope_theta: Some(10_000.0),
        rope_scaling: None,
        tie_word_embeddings: true,
        attention_bias: None,
        mlp_bias: None,
        max_position_embeddings: Some(512),
        quantization: None,
    }
    .resolve()
    .map_err(|e| Exception::custom(e.to_string()))?;
    let mut key = mlx_rs::random::key(seed)?;
    let mut next = |shape: &[i32], std: f32| -> Result<Array, Exception> {
        let (k, rest) = mlx_rs::random::split(&key, 2)?;
        key = rest;
        mlx_rs::random::normal::<f32>(shape, None, std, &k)
    };
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (nq, nkv) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut lin = |o: i32, i: i32, bias: bool| -> Result<Linear, Exception> {
        let w = next(&[o, i], 0.1)?;
        let b = if bias { Some(next(&[o], 0.1)?) } else { None };
        Ok(Linear::plain(w, b))
    };
    let mut layer_weights = Vec::new();
    for _ in 0..layers {
        layer_weights.push(LayerWeights {
            attn: [
                lin(nq, h, qkv_bias)?,
                lin(nkv, h, qkv_bias)?,
                lin(nkv, h, qkv_bias)?,
                lin(h, nq, false)?,
            ],
            mlp: [lin(f, h, false)?, lin(f, h, false)?, lin(h, f, false)?],
            norms: [ones::<f32>(&[h])?, ones::<f32>(&[h])?],
        });
    }
    let embed = lin(vocab, h, false)?;
    Ok(Llama::new(
        cfg,
        embed,
        layer_weights,
        ones::<f32>(&[h])?,
        None,
    ))
}

#[cfg(test)]
mod tests;
