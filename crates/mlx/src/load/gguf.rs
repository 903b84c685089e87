//! GGUF files (llama.cpp's format), read through MLX's own GGUF reader (`mlx-rs`
//! `io::GgufFile`). MLX returns Q4_0, Q4_1 and Q8_0 tensors as MLX affine-quantized
//! triples (`name.weight` packed uint32, `name.scales`, `name.biases`, group size 32) and
//! F16/F32 tensors as plain arrays; other types (k-quants) fail in MLX's reader, and that
//! error is reported with the path.
//!
//! GGUF names (`blk.3.attn_q.weight`) are renamed to Hugging Face names
//! (`model.layers.3.self_attn.q_proj.weight`), the config comes from `<arch>.*` metadata,
//! the tokenizer and chat template from `tokenizer.*` metadata.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows
//! of Q and K of `llama` models so that its RoPE can rotate adjacent pairs. We undo that
//! (rows only, so it applies to packed weights, scales and biases alike) and keep the
//! Hugging Face layout. Qwen2 files are not permuted. Getting this wrong does not crash; it
//! only ruins quality (perplexity 56 instead of 11 on SmolLM2), which the tests check.

use super::{LoadError, LoadOptions, LoadedModel, TensorStore, build_llama};
use crate::chat::ChatTemplate;
use crate::models::llama::{Family, ModelConfig};
use crate::tokenizer::{GgufVocab, Tokenizer};
use mlx_rs::io::GgufFile;
use mlx_rs::{Array, Dtype};
use std::collections::HashMap;
use std::path::Path;

/// Loads a GGUF model file with its tokenizer and chat template.
pub fn load_file(path: &Path, options: LoadOptions) -> Result<LoadedModel, LoadError> {
    if !path.is_file() {
        return Err(LoadError::NotFound(format!(
            "{} is not a file",
            path.display()
        )));
    }
    // MLX's parser trusts the header's counts and lengths (a lying one crashes it), so the
    // header is walked in Rust first.
    super::gguf_header::check(path).map_err(|message| LoadError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    let gguf = GgufFile::load(path).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        // MLX's reader fails here both on non-GGUF files and on tensor types it does not
        // convert (k-quants such as Q4_K/Q6_K); its message names the type.
        message: format!(
            "MLX cannot read this GGUF file (supported tensor types: F32, F16, Q4_0, Q4_1, Q8_0): {e}"
        ),
    })?;
    let meta = Meta { gguf: &gguf, path };
    let arch = meta.string("general.architecture")?;
    let family = match arch.as_str() {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        _ => {
            return Err(LoadError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: arch,
                supported: "llama, qwen2",
            });
        }
    };
    let vocab = read_vocab(&meta)?;
    let tokenizer = Tokenizer::from_gguf(&vocab).map_err(|e| match e {
        crate::tokenizer::TokenizerError::UnsupportedPre(found) => {
            LoadError::UnsupportedPreTokenizer {
                path: path.to_path_buf(),
                found,
            }
        }
        other => LoadError::Tokenizer {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })?;
    let arrays = gguf.arrays().map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot read the tensors: {e}"),
    })?;
    let mut config = read_config(&meta, &arch, family, vocab.tokens.len() as i32)?;
    config.tie_word_embeddings = !arrays.contains_key("output.weight");
    let mut tensors = rename(arrays, path)?;
    if let Some(factors) = tensors.remove("rope_freqs") {
        // Llama 3.1+ files store RoPE scaling as per-frequency divisors of the rate, i.e.
        // multipliers of the period that `fast::rope` takes.
        let factors = mlx_err(path, "reading rope_freqs", factors.as_dtype(Dtype::Float32))?;
        let d = config.head_dim;
        let periods = factors
            .as_slice::<f32>()
            .iter()
            .enumerate()
            .map(|(i, f)| config.rope_theta.powf(2.0 * i as f32 / d as f32) * f)
            .collect();
        config.rope_freqs = Some(periods);
    }
    if family == Family::Llama {
        for layer in 0..config.num_layers {
            for (proj, heads) in [
                ("q_proj", config.num_heads),
                ("k_proj", config.num_kv_heads),
            ] {
                let prefix = format!("model.layers.{layer}.self_attn.{proj}");
                for part in ["weight", "scales", "biases", "bias"] {
                    let name = format!("{prefix}.{part}");
                    if let Some(t) = tensors.remove(&name) {
                        let t =
                            mlx_err(path, &format!("un-permuting {name}"), unpermute(&t, heads))?;
                        tensors.insert(name, t);
                    }
                }
            }
        }
    }
    let model = build_llama(config, TensorStore::new(path, tensors), options)?;
    let chat_template = match meta.opt_string("tokenizer.chat_template")? {
        Some(src) => Some(
            ChatTemplate::new(
                &src,
                tokenizer.bos_token.as_deref().unwrap_or(""),
                tokenizer.eos_token.as_deref().unwrap_or(""),
            )
            .map_err(|e| LoadError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        path: path.to_path_buf(),
    })
}

/// Undoes llama.cpp's Q/K row permutation: GGUF rows are `[heads, head_dim/2, 2]`
/// interleaved; Hugging Face rows are `[heads, 2, head_dim/2]` (first halves, then second).
pub fn unpermute(t: &Array, heads: i32) -> Result<Array, mlx_rs::error::Exception> {
    let shape = t.shape().to_vec();
    let rows = shape[0];
    let rest: Vec<i32> = shape[1..].to_vec();
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend(&rest);
    t.reshape(&split)?.swap_axes(1, 2)?.reshape(&shape)
}

/// The inverse of [`unpermute`] (what llama.cpp's converter does), for tests.
pub fn permute(t: &Array, heads: i32) -> Result<Array, mlx_rs::error::Exception> {
    let shape = t.shape().to_vec();
    let rows = shape[0];
    let mut split = vec![heads, 2, rows / heads / 2];
    split.extend(&shape[1..]);
    t.reshape(&split)?.swap_axes(1, 2)?.reshape(&shape)
}

fn mlx_err<T>(
    path: &Path,
    context: &str,
    r: Result<T, mlx_rs::error::Exception>,
) -> Result<T, LoadError> {
    r.map_err(|source| LoadError::Mlx {
        path: path.to_path_buf(),
        context: context.to_owned(),
        source,
    })
}

/// GGUF tensor name to Hugging Face name; `None` for names no Llama-family model has.
fn hf_name(gguf: &str) -> Option<String> {
    let (base, suffix) = gguf.rsplit_once('.')?;
    let mapped = match base {
        "token_embd" => "model.embed_tokens".to_owned(),
        "output_norm" => "model.norm".to_owned(),
        "output" => "lm_head".to_owned(),
        "rope_freqs" => return Some("rope_freqs".to_owned()),
        _ => {
            let rest = base.strip_prefix("blk.")?;
            let (layer, role) = rest.split_once('.')?;
            let role = match role {
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{role}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

fn rename(
    arrays: HashMap<String, Array>,
    path: &Path,
) -> Result<HashMap<String, Array>, LoadError> {
    let mut out = HashMap::with_capacity(arrays.len());
    let mut unknown = Vec::new();
    for (name, t) in arrays {
        match hf_name(&name) {
            Some(n) => {
                out.insert(n, t);
            }
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        return Ok(out);
    }
    unknown.sort();
    Err(LoadError::Tensors {
        path: path.to_path_buf(),
        missing: Vec::new(),
        unexpected: unknown,
        mismatched: Vec::new(),
    })
}

struct Meta<'a> {
    gguf: &'a GgufFile,
    path: &'a Path,
}

impl Meta<'_> {
    fn err(&self, key: &str, what: String) -> LoadError {
        LoadError::Parse {
            path: self.path.to_path_buf(),
            message: format!("metadata `{key}`: {what}"),
        }
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, LoadError> {
        self.gguf
            .get_metadata_string(key)
            .map_err(|e| self.err(key, e.to_string()))
    }

    fn string(&self, key: &str) -> Result<String, LoadError> {
        self.opt_string(key)?
            .ok_or_else(|| self.err(key, "missing".into()))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, LoadError> {
        self.gguf
            .get_metadata_strings(key)
            .map_err(|e| self.err(key, e.to_string()))?
            .ok_or_else(|| self.err(key, "missing".into()))
    }

    fn opt_array(&self, key: &str, dtype: Dtype) -> Result<Option<Array>, LoadError> {
        let a = self
            .gguf
            .get_metadata_array(key)
            .map_err(|e| self.err(key, e.to_string()))?;
        a.map(|a| a.as_dtype(dtype))
            .transpose()
            .map_err(|e| self.err(key, e.to_string()))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        Ok(self
            .opt_array(key, Dtype::Float32)?
            .and_then(|a| a.as_slice::<f32>().first().copied()))
    }

    fn opt_i64(&self, key: &str) -> Result<Option<i64>, LoadError> {
        Ok(self
            .opt_array(key, Dtype::Int64)?
            .and_then(|a| a.as_slice::<i64>().first().copied()))
    }

    fn i32(&self, key: &str) -> Result<i32, LoadError> {
        let v = self
            .opt_i64(key)?
            .ok_or_else(|| self.err(key, "missing".into()))?;
        i32::try_from(v).map_err(|_| self.err(key, format!("{v} is out of range")))
    }
}

fn read_config(
    meta: &Meta<'_>,
    arch: &str,
    family: Family,
    vocab_size: i32,
) -> Result<ModelConfig, LoadError> {
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = meta.i32(&k("embedding_length"))?;
    let num_heads = meta.i32(&k("attention.head_count"))?;
    let num_kv_heads = meta
        .opt_i64(&k("attention.head_count_kv"))?
        .map_or(num_heads, |v| v as i32);
    let head_dim = meta
        .opt_i64(&k("rope.dimension_count"))?
        .map_or(hidden_size / num_heads.max(1), |v| v as i32);
    let rope_scale = match meta.opt_string(&k("rope.scaling.type"))?.as_deref() {
        Some("linear") => 1.0 / meta.opt_f32(&k("rope.scaling.factor"))?.unwrap_or(1.0),
        None | Some("none") => 1.0,
        Some(other) => {
            return Err(meta.err(
                &k("rope.scaling.type"),
                format!("rope scaling `{other}` is not supported"),
            ));
        }
    };
    if num_heads <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0 {
        return Err(meta.err(
            &k("attention.head_count_kv"),
            format!("{num_kv_heads} does not divide {num_heads} heads"),
        ));
    }
    Ok(ModelConfig {
        family,
        hidden_size,
        num_layers: meta.i32(&k("block_count"))?,
        intermediate_size: meta.i32(&k("feed_forward_length"))?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: meta
            .opt_f32(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        vocab_size,
        rope_theta: meta.opt_f32(&k("rope.freq_base"))?.unwrap_or(10_000.0),
        rope_scale,
        rope_freqs: None,
        tie_word_embeddings: false,
        qkv_bias: family == Family::Qwen2,
        o_bias: false,
        mlp_bias: false,
    })
}

fn read_vocab(meta: &Meta<'_>) -> Result<GgufVocab, LoadError> {
    let id = |key: &str| -> Result<Option<u32>, LoadError> {
        Ok(meta.opt_i64(key)?.and_then(|v| u32::try_from(v).ok()))
    };
    let token_types = match meta.opt_array("tokenizer.ggml.token_type", Dtype::Int32)? {
        Some(a) => a.as_slice::<i32>().to_vec(),
        None => Vec::new(),
    };
    let model = meta.string("tokenizer.ggml.model")?;
    let merges = if model == "gpt2" {
        meta.strings("tokenizer.ggml.merges")?
    } else {
        Vec::new()
    };
    let add_bos = meta
        .opt_i64("tokenizer.ggml.add_bos_token")?
        .is_some_and(|v| v != 0);
    Ok(GgufVocab {
        model,
        pre: meta
            .opt_string("tokenizer.ggml.pre")?
            .unwrap_or_else(|| "default".into()),
        tokens: meta.strings("tokenizer.ggml.tokens")?,
        token_types,
        merges,
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        eot: id("tokenizer.ggml.eot_token_id")?,
        add_bos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face_keys() {
        assert_eq!(
            hf_name("blk.12.attn_q.scales").as_deref(),
            Some("model.layers.12.self_attn.q_proj.scales")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.biases").as_deref(),
            Some("model.layers.0.mlp.down_proj.biases")
        );
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let t = mlx_rs::ops::arange::<_, f32>(0, 8 * 2 * 3, None)
            .unwrap()
            .reshape(&[16, 3])
            .unwrap();
        let p = permute(&t, 2).unwrap();
        assert_ne!(p.as_slice::<f32>(), t.as_slice::<f32>());
        // Head 0 rows in GGUF order: 0,4,1,5,2,6,3,7 (pairs from the two halves).
        let first_col: Vec<f32> = p.as_slice::<f32>().iter().step_by(3).copied().collect();
        assert_eq!(&first_col[..8], &[0., 12., 3., 15., 6., 18., 9., 21.]);
        let back = unpermute(&p, 2).unwrap();
        assert_eq!(back.as_slice::<f32>(), t.as_slice::<f32>());
    }
}
