//! Loading a model and its tokenizer from what users have on disk: a GGUF file, a Hugging
//! Face directory (plain or mlx-community quantized), or a repo id in the Hugging Face hub
//! cache; a known model id is fetched first.
//!
//! Loading is strict. Every source is turned into a map of tensors under Hugging Face
//! names, and the model is assembled by taking tensors out of that map with the shapes the
//! config implies ([`TensorStore`]). Missing tensors, tensors left over and shape mismatches
//! are collected and reported by name in one error, never skipped (mlx-rs's
//! `load_safetensors` silently ignores both kinds).

pub mod gguf;
pub mod gguf_header;
pub mod hf;
pub mod identity;
pub mod safetensors_header;

use crate::chat::ChatTemplate;
use crate::linear::{Linear, QuantSpec};
use crate::models::llama::{LayerWeights, Llama, ModelConfig};
use crate::tokenizer::Tokenizer;
use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Why a model could not be loaded. Every variant names the file or tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model's architecture is not one pipe implements.
    #[error("{path}: unsupported architecture `{found}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// What is supported.
        supported: &'static str,
    },
    /// The tokenizer's pre-tokenizer is not one pipe implements.
    #[error(
        "{path}: unsupported pre-tokenizer `{found}` (supported: smollm, llama-bpe, qwen2, default, gpt2)"
    )]
    UnsupportedPreTokenizer {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// A tensor type (quantization) is not supported.
    #[error("{path}: tensor `{tensor}` has unsupported type {found}")]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its type.
        found: String,
    },
    /// Tensors are missing, unexpected or of the wrong shape.
    #[error(
        "{path}: the weights do not match the model config:{}",
        tensor_report(missing, unexpected, mismatched)
    )]
    Tensors {
        /// The model file or directory.
        path: PathBuf,
        /// Tensors the config requires but the file lacks.
        missing: Vec<String>,
        /// Tensors in the file the model does not use.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]`.
        mismatched: Vec<String>,
    },
    /// The model could not be found.
    #[error("{0}")]
    NotFound(String),
    /// An MLX operation failed while loading.
    #[error("{path}: {context}: {source}")]
    Mlx {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The cause.
        source: Exception,
    },
    /// Building the tokenizer failed.
    #[error("{path}: cannot build the tokenizer: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn tensor_report(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut out = String::new();
    for (label, names) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", mismatched),
    ] {
        if !names.is_empty() {
            out.push_str(&format!(
                "\n  {label} ({}): {}",
                names.len(),
                names.join(", ")
            ));
        }
    }
    out
}

/// How to keep the weights once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The float dtype of everything that is not packed integers (norms, plain weights,
    /// scales). On the CPU backend float32 is the only fast choice.
    pub dtype: Dtype,
    /// Keep quantized layers quantized (true) or dequantize them to `dtype` at load.
    pub keep_quantized: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: Dtype::Float32,
            keep_quantized: true,
        }
    }
}

/// A model ready to use: weights, tokenizer, chat template and where it came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template, when the model ships one.
    pub chat_template: Option<ChatTemplate>,
    /// The file or directory it was loaded from.
    pub path: PathBuf,
}

/// Loads a model from a known id (fetched on demand), a GGUF file, a Hugging Face
/// directory, or a repo id in the Hugging Face hub cache.
pub fn load(spec: &str, options: LoadOptions) -> Result<LoadedModel, LoadError> {
    crate::exit_guard::install();
    let path = resolve(spec)?;
    let mut loaded = if path.is_dir() {
        hf::load_dir(&path, options)
    } else {
        gguf::load_file(&path, options)
    }?;
    let base = identity::BaseModel::of(&path, spec).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    loaded.model.base = Some(base);
    Ok(loaded)
}

/// Turns a model argument into a path: an existing path, a known id (fetched), or an
/// `org/name` repo id found offline in the Hugging Face hub cache.
pub fn resolve(spec: &str) -> Result<PathBuf, LoadError> {
    let as_path = Path::new(spec);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    if let Some(known) = pipe_engine::fetch::find(spec) {
        let cache = pipe_engine::dirs::user_cache_dir()
            .map_err(|e| LoadError::NotFound(format!("cannot locate the user cache: {e:#}")))?;
        let outcome = pipe_engine::fetch::fetch(&cache, known)
            .map_err(|e| LoadError::NotFound(format!("cannot fetch `{spec}`: {e:#}")))?;
        return Ok(outcome.path().to_path_buf());
    }
    if let Some(dir) = hf::find_in_hub_cache(spec) {
        return Ok(dir);
    }
    Err(LoadError::NotFound(format!(
        "model `{spec}` is neither a file, a directory, a known model id ({}) nor a repo id in the Hugging Face cache ({})",
        pipe_engine::fetch::KNOWN_MODELS
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
            .join(", "),
        hf::hub_cache_dir().display()
    )))
}

/// Tensors under Hugging Face names, taken out one by one with their expected shapes;
/// problems are collected, not returned one at a time.
pub struct TensorStore {
    path: PathBuf,
    tensors: HashMap<String, Array>,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

impl TensorStore {
    /// A store over `tensors` read from `path`.
    pub fn new(path: &Path, tensors: HashMap<String, Array>) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
            missing: Vec::new(),
            mismatched: Vec::new(),
        }
    }

    /// Whether a tensor is present (not taken yet).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes a tensor without checking it (for tensors deliberately ignored).
    pub fn discard(&mut self, name: &str) -> Option<Array> {
        self.tensors.remove(name)
    }

    /// Takes a tensor of the given shape. A missing or mis-shaped tensor is recorded and a
    /// lazy placeholder returned, so assembly can go on and report every problem at once.
    pub fn take(&mut self, name: &str, shape: &[i32]) -> Array {
        match self.tensors.remove(name) {
            Some(t) if t.shape() == shape => t,
            Some(t) => {
                self.mismatched
                    .push(format!("{name}: expected {shape:?}, found {:?}", t.shape()));
                placeholder(shape)
            }
            None => {
                self.missing.push(name.to_owned());
                placeholder(shape)
            }
        }
    }

    /// Takes a linear layer `prefix.{weight,bias}` of `[out, in]`, quantized when
    /// `prefix.scales` is present. Bits and group size are read off the shapes (packed
    /// width `in·bits/32`, `in/group_size` groups), which also covers per-layer overrides.
    pub fn take_linear(&mut self, prefix: &str, out: i32, inp: i32, bias: bool) -> Linear {
        let bias = bias.then(|| self.take(&format!("{prefix}.bias"), &[out]));
        let scales_name = format!("{prefix}.scales");
        let Some(scales) = self.tensors.remove(&scales_name) else {
            let w = self.take(&format!("{prefix}.weight"), &[out, inp]);
            return Linear::plain(w, bias);
        };
        let wname = format!("{prefix}.weight");
        let spec = match (self.tensors.get(&wname), scales.shape()) {
            (Some(w), &[so, groups]) if so == out && groups > 0 && inp % groups == 0 => {
                let packed = w.shape().get(1).copied().unwrap_or(0);
                let bits = packed * 32 / inp;
                (packed * 32 % inp == 0 && [2, 3, 4, 5, 6, 8].contains(&bits)).then_some(
                    QuantSpec {
                        group_size: inp / groups,
                        bits,
                    },
                )
            }
            _ => None,
        };
        let Some(spec) = spec else {
            self.mismatched.push(format!(
                "{scales_name}: {:?} does not fit a quantized [{out}, {inp}] layer",
                scales.shape()
            ));
            self.tensors.remove(&wname);
            self.tensors.remove(&format!("{prefix}.biases"));
            return Linear::plain(placeholder(&[out, inp]), bias);
        };
        let packed = [out, inp * spec.bits / 32];
        let groups = [out, inp / spec.group_size];
        let w = self.take(&wname, &packed);
        let b = self.take(&format!("{prefix}.biases"), &groups);
        Linear::quantized(w, scales, b, bias, spec)
    }

    /// Fails with every missing, unexpected and mis-shaped tensor, or succeeds.
    pub fn finish(self) -> Result<(), LoadError> {
        let mut unexpected: Vec<String> = self.tensors.into_keys().collect();
        unexpected.sort();
        if self.missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            return Ok(());
        }
        Err(LoadError::Tensors {
            path: self.path,
            missing: self.missing,
            unexpected,
            mismatched: self.mismatched,
        })
    }
}

fn placeholder(shape: &[i32]) -> Array {
    // Never evaluated: the load fails before the model is used.
    mlx_rs::ops::broadcast_to(Array::from_f32(0.0), shape).unwrap_or_else(|_| Array::from_f32(0.0))
}

/// Assembles a Llama-family model from Hugging Face-named tensors, strictly, then applies
/// the load options.
pub fn build_llama(
    config: ModelConfig,
    mut store: TensorStore,
    options: LoadOptions,
) -> Result<Llama, LoadError> {
    let c = &config;
    let (h, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (nq, nkv) = (c.num_heads * hd, c.num_kv_heads * hd);
    let embed = store.take_linear("model.embed_tokens", c.vocab_size, h, false);
    let mut layers = Vec::with_capacity(c.num_layers as usize);
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        // Some exported checkpoints carry RoPE's inverse frequencies; they are derived data.
        store.discard(&format!("{p}.self_attn.rotary_emb.inv_freq"));
        let attn = [
            store.take_linear(&format!("{p}.self_attn.q_proj"), nq, h, c.qkv_bias),
            store.take_linear(&format!("{p}.self_attn.k_proj"), nkv, h, c.qkv_bias),
            store.take_linear(&format!("{p}.self_attn.v_proj"), nkv, h, c.qkv_bias),
            store.take_linear(&format!("{p}.self_attn.o_proj"), h, nq, c.o_bias),
        ];
        let mlp = [
            store.take_linear(&format!("{p}.mlp.gate_proj"), f, h, c.mlp_bias),
            store.take_linear(&format!("{p}.mlp.up_proj"), f, h, c.mlp_bias),
            store.take_linear(&format!("{p}.mlp.down_proj"), h, f, c.mlp_bias),
        ];
        let norms = [
            store.take(&format!("{p}.input_layernorm.weight"), &[h]),
            store.take(&format!("{p}.post_attention_layernorm.weight"), &[h]),
        ];
        layers.push(LayerWeights { attn, mlp, norms });
    }
    let norm = store.take("model.norm.weight", &[h]);
    let lm_head = if c.tie_word_embeddings {
        // Tied checkpoints sometimes store the head anyway; it equals the embedding.
        store.discard("lm_head.weight");
        None
    } else {
        Some(store.take_linear("lm_head", c.vocab_size, h, false))
    };
    let path = store.path.clone();
    store.finish()?;
    let mut model = Llama::new(config, embed, layers, norm, lm_head);
    apply_options(&mut model, options).map_err(|source| LoadError::Mlx {
        path: path.clone(),
        context: "converting the weights".into(),
        source,
    })?;
    Ok(model)
}

/// Casts floats to the requested dtype and dequantizes when asked, then materialises the
/// weights so that load errors surface here rather than at the first forward pass.
fn apply_options(model: &mut Llama, options: LoadOptions) -> Result<(), Exception> {
    let mut linears: Vec<&mut Linear> = vec![&mut model.model.embed_tokens];
    if let Some(head) = model.lm_head.as_mut() {
        linears.push(head);
    }
    for layer in &mut model.model.layers {
        let a = &mut layer.self_attn;
        linears.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj]);
        let m = &mut layer.mlp;
        linears.extend([&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj]);
        for norm in [
            &mut layer.input_layernorm,
            &mut layer.post_attention_layernorm,
        ] {
            norm.weight.value = norm.weight.as_dtype(options.dtype)?;
        }
    }
    for linear in linears {
        if linear.is_quantized() && !options.keep_quantized {
            *linear = linear.to_plain(options.dtype)?;
        } else {
            linear.cast(options.dtype)?;
        }
    }
    model.model.norm.weight.value = model.model.norm.weight.as_dtype(options.dtype)?;
    let params = model.parameters().flatten();
    mlx_rs::transforms::eval(params.values().copied())?;
    Ok(())
}

/// Parameter names and shapes, sorted (for `-v` output and tests).
pub fn parameter_shapes(model: &Llama) -> BTreeMap<String, Vec<i32>> {
    model
        .parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.shape().to_vec()))
        .collect()
}
