//! The configuration of a Llama-family model: [`LlamaConfig`] mirrors `config.json` as
//! Hugging Face writes it; [`ModelConfig`] is the resolved form (defaults filled, variant
//! decided, RoPE scaling turned into numbers) that the model and the loaders use.

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
    pub quantization: Option<crate::linear::QuantSpec>,
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
