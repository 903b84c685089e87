//! Hugging Face model directories: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), `tokenizer.json` and `tokenizer_config.json`. The same
//! code loads mlx-community quantized directories: their linear layers carry
//! `.scales`/`.biases` beside a packed `.weight`, and [`super::TensorStore::take_linear`]
//! turns those into quantized layers.
//!
//! A repo id (`HuggingFaceTB/SmolLM2-135M-Instruct`) resolves offline in the hub cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) to
//! `models--org--name/snapshots/<refs/main>`, the layout `huggingface_hub` writes.

use super::{LoadError, LoadOptions, LoadedModel, TensorStore, build_llama};
use crate::chat::ChatTemplate;
use crate::models::llama::LlamaConfig;
use crate::tokenizer::Tokenizer;
use mlx_rs::Array;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn read_json(path: &Path) -> Result<Value, LoadError> {
    let text = fs_err::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The safetensors files of a directory: the shards of the index, else
/// `model.safetensors`, else every `*.safetensors` (mlx-community's `model-00001-of-…`).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let files: BTreeSet<String> = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| LoadError::Parse {
                path: index.clone(),
                message: "no `weight_map` object".into(),
            })?
            .values()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir)
        .map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::NotFound(format!(
            "{}: no model.safetensors, index or *.safetensors files",
            dir.display()
        )));
    }
    Ok(files)
}

/// Loads a Hugging Face (or mlx-community quantized) model directory.
pub fn load_dir(dir: &Path, options: LoadOptions) -> Result<LoadedModel, LoadError> {
    let config_path = dir.join("config.json");
    let raw = read_json(&config_path)?;
    let cfg: LlamaConfig = serde_json::from_value(raw.clone()).map_err(|e| LoadError::Parse {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let config = cfg.resolve().map_err(|e| {
        if e.field == "model_type" {
            LoadError::UnsupportedArchitecture {
                path: config_path.clone(),
                found: cfg.model_type.clone(),
                supported: "llama, mistral, qwen2",
            }
        } else {
            LoadError::Parse {
                path: config_path.clone(),
                message: e.to_string(),
            }
        }
    })?;
    let mut tensors: HashMap<String, Array> = HashMap::new();
    for file in weight_files(dir)? {
        let part = super::safetensors_header::load(&file).map_err(|e| LoadError::Parse {
            path: file.clone(),
            message: format!("cannot read safetensors: {e}"),
        })?;
        tensors.extend(part);
    }
    let model = build_llama(config, TensorStore::new(dir, tensors), options)?;
    let (tokenizer, chat_template) = load_tokenizer(dir, &raw)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        path: dir.to_path_buf(),
    })
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `eos_token_id` as an int or a list of ints.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|n| n.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn load_tokenizer(
    dir: &Path,
    config: &Value,
) -> Result<(Tokenizer, Option<ChatTemplate>), LoadError> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(LoadError::NotFound(format!(
            "{}: no tokenizer.json",
            dir.display()
        )));
    }
    let inner = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| LoadError::Tokenizer {
        path: tok_path.clone(),
        message: e.to_string(),
    })?;
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.is_file() {
        read_json(&tc_path)?
    } else {
        Value::Null
    };
    let bos = token_text(tc.get("bos_token"));
    let eos = token_text(tc.get("eos_token"));
    let mut eos_ids = ids(config.get("eos_token_id"));
    let gen_path = dir.join("generation_config.json");
    if gen_path.is_file() {
        eos_ids.extend(ids(read_json(&gen_path)?.get("eos_token_id")));
    }
    // `add_bos_token` matters only when tokenizer.json has no post-processor of its own
    // (a post-processor, e.g. Llama 3's, already inserts bos).
    let add_bos = tc.get("add_bos_token").and_then(Value::as_bool) == Some(true)
        && inner.get_post_processor().is_none();
    let mut tokenizer = Tokenizer::from_hf(inner, bos.clone(), eos.clone(), &eos_ids);
    if add_bos {
        tokenizer.set_add_bos(true);
    }
    let jinja = dir.join("chat_template.jinja");
    let source = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        // A list of named templates: use "default".
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ if jinja.is_file() => {
            Some(
                fs_err::read_to_string(&jinja).map_err(|source| LoadError::Io {
                    path: jinja.clone(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    let template = source
        .map(|s| {
            ChatTemplate::new(
                &s,
                bos.as_deref().unwrap_or(""),
                eos.as_deref().unwrap_or(""),
            )
            .map_err(|e| LoadError::Parse {
                path: tc_path.clone(),
                message: e.to_string(),
            })
        })
        .transpose()?;
    Ok((tokenizer, template))
}

/// Writes a model as a Hugging Face directory: `config.json`, `model.safetensors` (the
/// parameters under their checkpoint names: quantized layers keep their
/// `weight`/`scales`/`biases`, i.e. the mlx-community layout, with a `quantization` entry),
/// `tokenizer.json` and `tokenizer_config.json`.
pub fn save_dir(
    model: &crate::models::llama::Llama,
    tokenizer: &Tokenizer,
    chat_template: Option<&ChatTemplate>,
    dir: &Path,
) -> Result<(), LoadError> {
    use mlx_rs::module::ModuleParameters;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    fs_err::create_dir_all(dir).map_err(io(dir))?;
    let c = &model.config;
    if c.rope_freqs.is_some() {
        return Err(LoadError::Parse {
            path: dir.to_path_buf(),
            message: "saving models with llama3 RoPE scaling is not implemented".into(),
        });
    }
    let quant = [&model.model.embed_tokens]
        .into_iter()
        .chain(model.model.layers.iter().map(|l| &l.self_attn.q_proj))
        .find_map(|l| l.quant);
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": match c.family {
            crate::models::llama::Family::Llama => "llama",
            crate::models::llama::Family::Mistral => "mistral",
            crate::models::llama::Family::Qwen2 => "qwen2",
        },
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "vocab_size": c.vocab_size,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.o_bias,
        "mlp_bias": c.mlp_bias,
        "eos_token_id": tokenizer.eos_ids,
    });
    if c.rope_scale != 1.0 {
        config["rope_scaling"] =
            serde_json::json!({"rope_type": "linear", "factor": 1.0 / c.rope_scale});
    }
    if let Some(q) = quant {
        config["quantization"] = serde_json::json!({"group_size": q.group_size, "bits": q.bits});
    }
    let write = |name: &str, text: String| -> Result<(), LoadError> {
        let path = dir.join(name);
        pipe_engine::atomic_write::write_atomic(&path, text.as_bytes()).map_err(io(&path))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    let params = model.parameters().flatten();
    let weights = dir.join("model.safetensors");
    // MLX writes to a path: it gets the atomic writer's temporary file.
    let file = pipe_engine::atomic_write::AtomicFile::create(&weights).map_err(io(&weights))?;
    Array::save_safetensors(
        params.iter().map(|(k, v)| (k.to_string(), *v)),
        None,
        file.path(),
    )
    .map_err(|e| LoadError::Parse {
        path: weights.clone(),
        message: format!("cannot write safetensors: {e}"),
    })?;
    file.commit().map_err(io(&weights))?;
    let tok_json = tokenizer.to_json().map_err(|e| LoadError::Tokenizer {
        path: dir.join("tokenizer.json"),
        message: e.to_string(),
    })?;
    write("tokenizer.json", tok_json)?;
    let mut tc = serde_json::json!({
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "add_bos_token": tokenizer.adds_bos(),
    });
    if let Some(t) = chat_template {
        tc["chat_template"] = Value::String(t.source().to_owned());
    }
    write(
        "tokenizer_config.json",
        serde_json::to_string_pretty(&tc).unwrap_or_default(),
    )
}

/// The Hugging Face hub cache directory.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("huggingface").join("hub")
}

/// Resolves `org/name` to a snapshot directory in the hub cache, offline.
pub fn find_in_hub_cache(repo_id: &str) -> Option<PathBuf> {
    find_in(&hub_cache_dir(), repo_id)
}

/// [`find_in_hub_cache`] under an explicit cache root.
pub fn find_in(cache: &Path, repo_id: &str) -> Option<PathBuf> {
    let (org, name) = repo_id.split_once('/')?;
    let repo = cache.join(format!("models--{org}--{name}"));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = fs_err::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    // No refs/main: take the most recently modified snapshot.
    fs_err::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_resolves_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--tiny");
        fs_err::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        fs_err::create_dir_all(repo.join("snapshots/old")).unwrap();
        fs_err::create_dir_all(repo.join("refs")).unwrap();
        fs_err::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            find_in(tmp.path(), "org/tiny").unwrap(),
            repo.join("snapshots/abc123")
        );
        assert!(find_in(tmp.path(), "org/other").is_none());
        assert!(find_in(tmp.path(), "no-slash").is_none());
    }

    /// A tiny Qwen2-style model (q/k/v biases) written as a sharded Hugging Face directory
    /// (two safetensors files and an index) loads back to the same logits.
    #[test]
    fn sharded_directory_round_trips_a_tiny_qwen2() {
        use crate::models::llama::tiny_random;
        use crate::tokenizer::toy;
        use mlx_rs::module::ModuleParameters;
        let vocab = toy("qwen2");
        let tok = Tokenizer::from_gguf(&vocab).unwrap();
        let mut model = tiny_random(9, vocab.tokens.len() as i32, 2, true).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        save_dir(&model, &tok, None, dir).unwrap();
        // Re-shard: layer 0 in one file, everything else in another, plus the index.
        let all = Array::load_safetensors(dir.join("model.safetensors")).unwrap();
        fs_err::remove_file(dir.join("model.safetensors")).unwrap();
        let (a, b): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(k, _)| k.starts_with("model.layers.0."));
        let mut map = serde_json::Map::new();
        for (name, part) in [
            ("model-00001-of-00002.safetensors", &a),
            ("model-00002-of-00002.safetensors", &b),
        ] {
            Array::save_safetensors(
                part.iter().map(|(k, v)| (k.as_str(), v)),
                None,
                dir.join(name),
            )
            .unwrap();
            for (k, _) in part {
                map.insert(k.clone(), Value::String(name.into()));
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        fs_err::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let mut loaded = load_dir(dir, LoadOptions::default()).unwrap();
        assert_eq!(
            loaded.model.config.family,
            crate::models::llama::Family::Qwen2
        );
        assert!(
            loaded.model.model.layers[1]
                .self_attn
                .k_proj
                .bias
                .value
                .is_some()
        );
        assert_eq!(
            loaded.model.parameters().flatten().len(),
            model.parameters().flatten().len()
        );
        let ids = Array::from_slice(&[5i32, 70, 80, 90], &[1, 4]);
        let want = model.forward_tokens(&ids, None, None).unwrap();
        let got = loaded.model.forward_tokens(&ids, None, None).unwrap();
        let d = want
            .subtract(&got)
            .unwrap()
            .abs()
            .unwrap()
            .max(None)
            .unwrap()
            .item_exact::<f32>();
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({"model_type": "gpt_neox", "hidden_size": 64,
            "num_hidden_layers": 1, "intermediate_size": 128, "num_attention_heads": 4,
            "rms_norm_eps": 1e-5, "vocab_size": 10});
        fs_err::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let err = load_dir(tmp.path(), LoadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, LoadError::UnsupportedArchitecture { found, .. } if found == "gpt_neox"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("unsupported architecture `gpt_neox`")
        );
    }

    #[test]
    fn special_tokens_parse_in_both_forms() {
        let v: Value = serde_json::json!({"a": "<s>", "b": {"content": "</s>", "lstrip": false}});
        assert_eq!(token_text(v.get("a")).as_deref(), Some("<s>"));
        assert_eq!(token_text(v.get("b")).as_deref(), Some("</s>"));
        assert_eq!(ids(Some(&serde_json::json!([1, 2]))), vec![1, 2]);
        assert_eq!(ids(Some(&serde_json::json!(7))), vec![7]);
    }
}
