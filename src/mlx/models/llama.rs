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
//! what it would alone.

pub use super::cache::{KvCache, attention_mask};
use crate::mlx::linear::Linear;
use mlx_rs::error::Exception;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::nn::RmsNorm;
use mlx_rs::ops::ones;
use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};

/// `config.json` of a Llama-family checkpoint, as Hugging Face writes it. Unknown fields are
/// ignored; what the model needs is checked in [`LlamaConfig::resolve`].
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: i32,
    /// Number of decoder blocks.
    pub num_hidden_layers: i32,
    /// Width of the MLP.
    pub intermediate_size: i32,
    /// Query heads.
    pub num_attention_heads: i32,
    /// Key/value heads (defaults to the query heads: plain multi-head attention).
    pub num_key_value_heads: Option<i32>,
    /// Per-head width (defaults to hidden / heads).
    pub head_dim: Option<i32>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: i32,
    /// RoPE base (default 10000).
    pub rope_theta: Option<f32>,
    /// RoPE scaling (`llama3` or `linear`).
    pub rope_scaling: Option<RopeScaling>,
    /// Whether the LM head is the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o carry biases (Llama: no; Qwen2's q/k/v always do).
    pub attention_bias: Option<bool>,
    /// Whether the MLP projections carry biases.
    pub mlp_bias: Option<bool>,
    /// Context length the model was trained for.
    pub max_position_embeddings: Option<i32>,
    /// MLX affine quantization of an mlx-community checkpoint.
    pub quantization: Option<crate::mlx::linear::QuantSpec>,
}

/// `rope_scaling` of config.json.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RopeScaling {
    /// `llama3`, `linear` or `default` (older files call it `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Scaling factor.
    pub factor: Option<f32>,
    /// Llama 3: low-frequency factor.
    pub low_freq_factor: Option<f32>,
    /// Llama 3: high-frequency factor.
    pub high_freq_factor: Option<f32>,
    /// Llama 3: the original training context.
    pub original_max_position_embeddings: Option<i32>,
}

/// Which variant of the family: decides biases and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2/3, SmolLM, TinyLlama.
    Llama,
    /// Mistral (a Llama block).
    Mistral,
    /// Qwen2/2.5 (q/k/v biases).
    Qwen2,
}

/// A config with every default filled and every constraint checked.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// The variant.
    pub family: Family,
    /// Width of the residual stream.
    pub hidden_size: i32,
    /// Number of decoder blocks.
    pub num_layers: i32,
    /// Width of the MLP.
    pub intermediate_size: i32,
    /// Query heads.
    pub num_heads: i32,
    /// Key/value heads.
    pub num_kv_heads: i32,
    /// Per-head width.
    pub head_dim: i32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: i32,
    /// RoPE base.
    pub rope_theta: f32,
    /// Linear position scale (1 / factor for `linear` scaling).
    pub rope_scale: f32,
    /// Per-frequency periods for Llama 3 scaling (None: computed from the base).
    #[serde(skip)]
    pub rope_freqs: Option<Vec<f32>>,
    /// Whether the LM head is the token embedding.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v carry biases.
    pub qkv_bias: bool,
    /// Whether o_proj carries a bias.
    pub o_bias: bool,
    /// Whether the MLP carries biases.
    pub mlp_bias: bool,
}

/// A config that cannot be used, with the field and the reason.
#[derive(Debug, thiserror::Error)]
#[error("unsupported model config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl LlamaConfig {
    /// Fills defaults and checks the config.
    pub fn resolve(&self) -> Result<ModelConfig, ConfigError> {
        let family = match self.model_type.as_str() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            other => {
                return Err(ConfigError {
                    field: "model_type",
                    reason: format!(
                        "`{other}` is not a supported architecture (supported: llama, mistral, qwen2)"
                    ),
                });
            }
        };
        let bad = |field, reason: &str| ConfigError {
            field,
            reason: reason.to_owned(),
        };
        if self.num_attention_heads <= 0 || self.hidden_size <= 0 || self.num_hidden_layers <= 0 {
            return Err(bad("hidden_size", "sizes must be positive"));
        }
        let num_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if num_kv_heads <= 0 || self.num_attention_heads % num_kv_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                "must divide num_attention_heads",
            ));
        }
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        let rope_theta = self.rope_theta.unwrap_or(10_000.0);
        let (rope_scale, rope_freqs) = match &self.rope_scaling {
            None => (1.0, None),
            Some(s) => match s.rope_type.as_str() {
                "default" => (1.0, None),
                "linear" => (1.0 / s.factor.unwrap_or(1.0), None),
                "llama3" => (1.0, Some(llama3_rope_periods(rope_theta, head_dim, s))),
                other => {
                    return Err(ConfigError {
                        field: "rope_scaling",
                        reason: format!(
                            "rope type `{other}` is not supported (supported: llama3, linear)"
                        ),
                    });
                }
            },
        };
        let attention_bias = self.attention_bias.unwrap_or(false);
        Ok(ModelConfig {
            family,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            intermediate_size: self.intermediate_size,
            num_heads: self.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            vocab_size: self.vocab_size,
            rope_theta,
            rope_scale,
            rope_freqs,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: attention_bias,
            mlp_bias: self.mlp_bias.unwrap_or(false),
        })
    }
}

/// Llama 3's frequency-dependent RoPE scaling, as periods for `fast::rope`'s `freqs`
/// (mlx-lm `Llama3RoPE`): long wavelengths are stretched by `factor`, short ones kept, and
/// the band between is interpolated smoothly.
pub fn llama3_rope_periods(base: f32, dims: i32, s: &RopeScaling) -> Vec<f32> {
    let factor = s.factor.unwrap_or(8.0);
    let low = s.low_freq_factor.unwrap_or(1.0);
    let high = s.high_freq_factor.unwrap_or(4.0);
    let old_ctx = s.original_max_position_embeddings.unwrap_or(8192) as f32;
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    (0..dims)
        .step_by(2)
        .map(|i| {
            let period = base.powf(i as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI * period;
            if wavelen > low_wavelen {
                period * factor
            } else if wavelen > high_wavelen {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                period / ((1.0 - smooth) / factor + smooth)
            } else {
                period
            }
        })
        .collect()
}

/// Rotary embedding parameters (not trainable).
#[derive(Debug, Clone)]
struct Rope {
    dims: i32,
    base: f32,
    scale: f32,
    freqs: Option<Array>,
}

impl Rope {
    fn apply(&self, x: &Array, offset: i32) -> Result<Array, Exception> {
        match &self.freqs {
            Some(f) => fast::rope(x, self.dims, false, None, self.scale, offset, f),
            None => fast::rope(x, self.dims, false, self.base, self.scale, offset, None),
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
    offset: i32,
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
        mut cache: Option<&mut KvCache>,
        key_mask: Option<&Array>,
    ) -> Result<Array, Exception> {
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let l = tokens.shape()[1];
        let mut h = self.model.embed_tokens.embed(tokens)?;
        let dtype = h.dtype();
        let mask = match key_mask {
            Some(km) => Some(attention_mask(km, offset, l, dtype)?),
            None => None,
        };
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            let normed = layer.input_layernorm.forward(&h)?;
            let a = layer.self_attn.forward(AttnInput {
                x: &normed,
                mask: mask.as_ref(),
                cache: cache.as_deref_mut().map(|c| (c, i)),
                offset,
            })?;
            h = h.add(a)?;
            let normed = layer.post_attention_layernorm.forward(&h)?;
            h = h.add(layer.mlp.forward(&normed)?)?;
        }
        if let Some(c) = cache {
            c.advance(l);
        }
        self.model.norm.forward(&h)
    }

    /// Logits from hidden states: the LM head, or the tied embedding.
    pub fn logits(&mut self, hidden: &Array) -> Result<Array, Exception> {
        match &mut self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.model.embed_tokens.forward(hidden),
        }
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
mod tests {
    use super::*;
    use mlx_rs::module::ModuleParameters;

    /// What training (the next issue) relies on: `nn::value_and_grad` over the model gives a
    /// gradient per trainable parameter under its checkpoint name, frozen quantized layers
    /// take none, and the head can be computed from hidden states at chosen positions.
    #[test]
    fn value_and_grad_sees_named_trainable_parameters() {
        let mut model = tiny_random(11, 32, 2, false).unwrap();
        let spec = crate::mlx::linear::QuantSpec {
            group_size: 32,
            bits: 4,
        };
        model.model.layers[1].mlp.up_proj =
            model.model.layers[1].mlp.up_proj.quantize(spec).unwrap();
        let x = Array::from_slice(&[1i32, 5, 7, 9], &[1, 4]);
        let y = Array::from_slice(&[5i32, 7, 9, 2], &[1, 4]);
        let loss = |m: &mut Llama, (x, y): (&Array, &Array)| -> Result<Array, Exception> {
            let h = m.hidden_states(x, None, None)?;
            let logits = m.logits(&h)?;
            let picked = logits
                .take_along_axis(y.expand_dims(-1)?, -1)?
                .squeeze_axes(&[-1])?;
            logits
                .logsumexp_axis(-1, None)?
                .subtract(picked)?
                .mean(None)
        };
        let mut vg = mlx_rs::nn::value_and_grad(loss);
        let (value, grads) = vg(&mut model, (&x, &y)).unwrap();
        assert!(value.item_exact::<f32>() > 0.0);
        assert!(grads.contains_key("model.layers.0.self_attn.q_proj.weight"));
        assert!(grads.contains_key("model.embed_tokens.weight"));
        assert!(grads.contains_key("model.norm.weight"));
        assert!(!grads.contains_key("model.layers.1.mlp.up_proj.weight"));
        assert!(!grads.contains_key("model.layers.1.mlp.up_proj.scales"));
        let trainable = model.trainable_parameters().flatten().len();
        assert_eq!(grads.len(), trainable);
    }

    #[test]
    fn llama3_rope_scaling_keeps_high_and_stretches_low_frequencies() {
        let s = RopeScaling {
            rope_type: "llama3".into(),
            factor: Some(8.0),
            low_freq_factor: Some(1.0),
            high_freq_factor: Some(4.0),
            original_max_position_embeddings: Some(8192),
        };
        let p = llama3_rope_periods(500_000.0, 128, &s);
        assert_eq!(p.len(), 64);
        assert_eq!(p[0], 1.0, "the fastest frequency is untouched");
        let plain = 500_000f32.powf(126.0 / 128.0);
        assert!(
            (p[63] / plain - 8.0).abs() < 1e-4,
            "the slowest is stretched by the factor"
        );
        assert!(p.windows(2).all(|w| w[1] > w[0]), "periods stay increasing");
    }
}
