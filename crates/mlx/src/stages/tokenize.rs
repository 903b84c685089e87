//! The `tokenize` kind: apply a model's chat template and tokenizer to an ingest stage's
//! splits once, write the token ids and loss masks compactly (see [`super::tokens`]), and
//! report token statistics, so every training of the same data skips tokenizing and
//! long examples are counted before a training truncates them.
//!
//! ```yaml
//! with:
//!   model: smollm2-135m-instruct   # whose tokenizer and chat template
//!   data: runs/q/data              # an ingest stage's out (train/valid/test.jsonl)
//!   splits: [train, valid]         # default: every split file present in `data`
//!   max_seq_len: 2048              # for the truncation count (train's default)
//!   out: runs/q/tokens
//! ```
//!
//! `out` gets `<split>.tokens` per split, `manifest.json` (the model, tokenizer facts and
//! each split's file and counts) and `metrics.json` (per split: examples, tokens,
//! loss-carrying tokens, min/mean/p95/max length, examples longer than `max_seq_len`).
//!
//! Examples go through [`crate::train::job::tokenize_file`], the very function
//! training uses, so `train` with `tokens: <out>` trains on exactly the tokens it would
//! have made itself.

use super::tokens;
use crate::load::{self, LoadOptions};
use crate::train::batch::TokenizedExample;
use crate::train::job::{Pretokenized, tokenize_file};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use pipe_schema::tokenize::{SPLITS, SplitStats, TokenizeConfig};

/// Statistics of `examples` against `max_seq_len`.
pub fn split_stats(examples: &[TokenizedExample], max_seq_len: usize) -> SplitStats {
    let mut lens: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    lens.sort_unstable();
    let tokens: u64 = lens.iter().map(|&l| l as u64).sum();
    let p95 = match lens.len() {
        0 => 0,
        n => lens[(n * 95).div_ceil(100).clamp(1, n) - 1],
    };
    SplitStats {
        examples: examples.len(),
        tokens,
        loss_tokens: examples.iter().map(|e| e.loss_tokens() as u64).sum(),
        min_len: lens.first().copied().unwrap_or(0),
        mean_len: if lens.is_empty() {
            0.0
        } else {
            tokens as f64 / lens.len() as f64
        },
        p95_len: p95,
        max_len: lens.last().copied().unwrap_or(0),
        // Training feeds `len - 1` inputs; it truncates when that exceeds max_seq_len.
        truncated: lens.iter().filter(|&&l| l > max_seq_len + 1).count(),
        max_seq_len,
    }
}

/// `manifest.json`: what made the `.tokens` files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The `.tokens` layout version.
    pub format_version: u32,
    /// The model as written in `with.model`.
    pub model: String,
    /// Vocabulary size of its tokenizer.
    pub vocab_size: usize,
    /// Its end-of-sequence ids.
    pub eos_ids: Vec<u32>,
    /// Whether a chat template was applied.
    pub chat_template: bool,
    /// Split name -> its file (relative to the manifest) and statistics.
    pub splits: BTreeMap<String, ManifestSplit>,
}

/// One split in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestSplit {
    /// The `.tokens` file name.
    pub file: String,
    /// Its statistics.
    #[serde(flatten)]
    pub stats: SplitStats,
}

/// Runs a tokenize stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: TokenizeConfig =
        serde_json::from_value(with.clone()).context("the tokenize stage's --config")?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("tokenize stage `with`: {e}"))?;
    let manifest = tokenize(&config, root)?;
    for (name, s) in &manifest.splits {
        eprintln!(
            "{name}: {} examples, {} tokens ({} carry loss), length {}..{} (mean {:.1}, p95 {}), {} longer than max_seq_len {}",
            s.stats.examples,
            s.stats.tokens,
            s.stats.loss_tokens,
            s.stats.min_len,
            s.stats.max_len,
            s.stats.mean_len,
            s.stats.p95_len,
            s.stats.truncated,
            s.stats.max_seq_len
        );
    }
    Ok(())
}

/// Tokenizes the splits and writes the `.tokens` files, `manifest.json` and
/// `metrics.json` into `out`.
pub fn tokenize(config: &TokenizeConfig, root: &Path) -> anyhow::Result<Manifest> {
    let data = root.join(&config.data);
    let splits: Vec<String> = match &config.splits {
        Some(s) => s.clone(),
        None => SPLITS
            .iter()
            .filter(|s| data.join(format!("{s}.jsonl")).is_file())
            .map(|s| (*s).to_owned())
            .collect(),
    };
    if splits.is_empty() {
        anyhow::bail!(
            "{}: no train.jsonl, valid.jsonl or test.jsonl (is `data` an ingest stage's out?)",
            data.display()
        );
    }
    for s in &splits {
        let file = data.join(format!("{s}.jsonl"));
        if !file.is_file() {
            anyhow::bail!(
                "{} does not exist; drop `{s}` from `splits` or give the ingest stage a {s} split",
                file.display()
            );
        }
    }
    // The tokenizer and template are all that is used; quantized weights load fastest.
    let loaded = load::load(
        &config.model,
        LoadOptions {
            keep_quantized: true,
            ..LoadOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot load the model `{}`: {e}", config.model))?;
    let template = loaded.chat_template.as_ref();
    let out = root.join(&config.out);
    fs_err::create_dir_all(&out)?;
    let mut manifest = Manifest {
        format_version: tokens::VERSION,
        model: config.model.clone(),
        vocab_size: loaded.tokenizer.vocab_size(),
        eos_ids: loaded.tokenizer.eos_ids.clone(),
        chat_template: template.is_some(),
        splits: BTreeMap::new(),
    };
    for s in &splits {
        let examples = tokenize_file(
            &data.join(format!("{s}.jsonl")),
            &loaded.tokenizer,
            template,
        )?;
        let file = format!("{s}.tokens");
        tokens::write(&out.join(&file), &examples)?;
        manifest.splits.insert(
            s.clone(),
            ManifestSplit {
                file,
                stats: split_stats(&examples, config.max_seq_len),
            },
        );
    }
    let metrics: BTreeMap<&String, &SplitStats> =
        manifest.splits.iter().map(|(k, v)| (k, &v.stats)).collect();
    pipe_engine::stages::write_json(&out.join("metrics.json"), &metrics)?;
    pipe_engine::stages::write_json(&out.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// Reads a tokenize stage's out for training: the `train` split (required) and `valid`
/// (when present). `model` is the training's model; tokens made with another model's
/// tokenizer are refused.
pub fn load_for_training(dir: &Path, model: &str) -> anyhow::Result<Pretokenized> {
    let manifest = read_manifest(dir)?;
    if manifest.model != model {
        anyhow::bail!(
            "{}: the tokens were made for model `{}`, but this stage trains `{model}`; give the tokenize stage `model: {model}`",
            dir.join("manifest.json").display(),
            manifest.model
        );
    }
    let split = |name: &str| -> anyhow::Result<Option<Vec<TokenizedExample>>> {
        match manifest.splits.get(name) {
            Some(s) => Ok(Some(tokens::read(&dir.join(&s.file))?)),
            None => Ok(None),
        }
    };
    let train = split("train")?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no `train` split; add train to the tokenize stage's `splits`",
            dir.join("manifest.json").display()
        )
    })?;
    Ok(Pretokenized {
        train,
        valid: split("valid")?.unwrap_or_default(),
    })
}

/// Reads `manifest.json` of a tokenize stage's out.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = fs_err::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{e} (is `tokens` a tokenize stage's out folder?)"))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if manifest.format_version != tokens::VERSION {
        anyhow::bail!(
            "{}: token format version {}, this pipe reads version {}; rerun the tokenize stage",
            path.display(),
            manifest.format_version,
            tokens::VERSION
        );
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(len: usize, prompt: usize) -> TokenizedExample {
        TokenizedExample {
            ids: (0..len as u32).collect(),
            loss_mask: (0..len).map(|j| j >= prompt).collect(),
        }
    }

    #[test]
    fn statistics_count_lengths_loss_and_truncation() {
        let examples: Vec<TokenizedExample> = (1..=20).map(|n| example(n, n / 2)).collect();
        let s = split_stats(&examples, 15);
        assert_eq!((s.examples, s.tokens), (20, 210));
        assert_eq!((s.min_len, s.max_len, s.p95_len), (1, 20, 19));
        assert!((s.mean_len - 10.5).abs() < 1e-12);
        assert_eq!(s.truncated, 4, "lengths 17..=20 exceed 15 inputs + 1");
        let loss: u64 = examples.iter().map(|e| e.loss_tokens() as u64).sum();
        assert_eq!(s.loss_tokens, loss);
        let empty = split_stats(&[], 8);
        assert_eq!((empty.examples, empty.p95_len, empty.mean_len), (0, 0, 0.0));
    }

    #[test]
    fn bad_options_are_named() {
        let config = |splits: serde_json::Value| -> TokenizeConfig {
            serde_json::from_value(serde_json::json!({
                "model": "m", "data": "d", "out": "o", "splits": splits
            }))
            .unwrap()
        };
        assert!(config(serde_json::json!(["train"])).validate().is_ok());
        let err = config(serde_json::json!(["trian"])).validate().unwrap_err();
        assert!(err.to_string().contains("`trian`"), "{err}");
        assert!(config(serde_json::json!([])).validate().is_err());
    }

    #[test]
    fn tokens_for_another_model_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let examples = vec![example(4, 2)];
        tokens::write(&dir.path().join("train.tokens"), &examples).unwrap();
        let manifest = Manifest {
            format_version: tokens::VERSION,
            model: "model-a".into(),
            vocab_size: 10,
            eos_ids: vec![2],
            chat_template: false,
            splits: BTreeMap::from([(
                "train".to_owned(),
                ManifestSplit {
                    file: "train.tokens".into(),
                    stats: split_stats(&examples, 8),
                },
            )]),
        };
        pipe_engine::stages::write_json(&dir.path().join("manifest.json"), &manifest).unwrap();
        let got = load_for_training(dir.path(), "model-a").unwrap();
        assert_eq!(got.train, examples);
        assert!(got.valid.is_empty());
        let err = load_for_training(dir.path(), "model-b")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model-a") && err.contains("model: model-b"),
            "{err}"
        );
    }
}
