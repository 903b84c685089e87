//! A training job: which model, which data, where to write, and the trainer options. It is
//! what `pipe train --config FILE` reads and what the `train` stage kind runs.
//!
//! ```yaml
//! model: smollm2-135m-instruct      # known id, GGUF file, HF directory or hub repo id
//! train_data: data/train.jsonl      # JSONL/CSV/TSV: chat, completions or text
//! valid_data: data/valid.jsonl      # optional
//! out_dir: runs/lora                # adapters, checkpoint, train_log.jsonl, metrics.json
//! method: lora                      # lora | qlora | dora | full
//! lora: {rank: 8, alpha: 16, num_layers: 16}
//! iters: 200
//! batch_size: 8
//! learning_rate: 1.0e-4
//! micro_batch: auto                 # optional: largest micro-batch that fits memory_budget_mb
//! grad_checkpoint: false            # optional: recompute block activations in the backward
//! ```
//!
//! Every other key is a [`TrainConfig`] option; unknown keys are errors.

use super::batch::TokenizedExample;
use super::lora::Method;
use super::tokenize::tokenize_example;
use super::trainer::{self, TrainConfig, TrainData, TrainSummary};
use crate::data::{ReadOptions, read_examples};
use crate::mlx::load::{self, LoadOptions};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A parsed job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainJob {
    /// The base model argument.
    pub model: String,
    /// Training data file.
    pub train_data: PathBuf,
    /// Validation data file.
    pub valid_data: Option<PathBuf>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Trainer options.
    pub config: TrainConfig,
}

const JOB_KEYS: [&str; 4] = ["model", "train_data", "valid_data", "out_dir"];

impl TrainJob {
    /// Parses a job from YAML text; `source` names the file in errors, and relative paths
    /// are taken relative to `base`.
    pub fn from_yaml(text: &str, source: &Path, base: &Path) -> anyhow::Result<Self> {
        let located = |e: serde_yaml::Error| match e.location() {
            Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", source.display(), l.line(), l.column()),
            None => anyhow::anyhow!("{}: {e}", source.display()),
        };
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(located)?;
        let serde_yaml::Value::Mapping(mut map) = value else {
            bail!(
                "{}: a training job must be a mapping of options",
                source.display()
            );
        };
        let mut take = |key: &str| map.remove(key);
        let string = |v: Option<serde_yaml::Value>, key: &str| -> anyhow::Result<Option<String>> {
            match v {
                None => Ok(None),
                Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
                Some(_) => bail!("{}: `{key}` must be a string", source.display()),
            }
        };
        let model = string(take("model"), "model")?.with_context(|| {
            format!(
                "{}: missing `model` (a model id, GGUF file or directory)",
                source.display()
            )
        })?;
        let train_data = string(take("train_data"), "train_data")?
            .with_context(|| format!("{}: missing `train_data`", source.display()))?;
        let valid_data = string(take("valid_data"), "valid_data")?;
        let out_dir = string(take("out_dir"), "out_dir")?
            .with_context(|| format!("{}: missing `out_dir`", source.display()))?;
        let mut config: TrainConfig = serde_yaml::from_value(serde_yaml::Value::Mapping(map))
            .map_err(|e| {
                let mut msg = format!("{}: {e}", source.display());
                if e.to_string().contains("unknown field") {
                    msg.push_str(&format!(
                        "\nhint: job keys are {} plus the trainer options",
                        JOB_KEYS.join(", ")
                    ));
                }
                anyhow::anyhow!(msg)
            })?;
        if let Some(dir) = &mut config.activation_cache.dir {
            *dir = base.join(&*dir);
        }
        Ok(Self {
            model,
            train_data: base.join(train_data),
            valid_data: valid_data.map(|v| base.join(v)),
            out_dir: base.join(out_dir),
            config,
        })
    }
}

/// What a finished job reports (also written to `out_dir/metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The trainer's summary.
    #[serde(flatten)]
    pub summary: TrainSummary,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub valid_examples: usize,
    /// Examples longer than `max_seq_len` (truncated).
    pub truncated_examples: usize,
    /// Tokens in the training examples (the data, not the steps: see `trained_tokens`).
    pub train_tokens: u64,
    /// Of those, tokens that carry loss.
    pub train_loss_tokens: u64,
    /// Tokens in the validation examples.
    pub valid_tokens: u64,
    /// Of those, tokens that carry loss.
    pub valid_loss_tokens: u64,
}

/// Reads a data file and tokenizes every example through the model's chat template: the
/// one path from dataset rows to training tokens, shared by training and the `tokenize`
/// stage kind (so tokens made ahead of time are exactly those training would make).
pub fn tokenize_file(
    path: &Path,
    tokenizer: &crate::mlx::tokenizer::Tokenizer,
    template: Option<&crate::mlx::chat::ChatTemplate>,
) -> anyhow::Result<Vec<TokenizedExample>> {
    let (rows, _) = read_examples(path, &ReadOptions::default())?;
    rows.iter()
        .map(|(line, e)| {
            tokenize_example(e, tokenizer, template)
                .with_context(|| format!("{}:{line}: cannot tokenize", path.display()))
        })
        .collect()
}

/// Examples tokenized ahead of time (a `tokenize` stage's out), used instead of reading
/// and tokenizing `train_data` and `valid_data`.
#[derive(Debug, Clone, Default)]
pub struct Pretokenized {
    /// Training examples.
    pub train: Vec<TokenizedExample>,
    /// Validation examples (may be empty).
    pub valid: Vec<TokenizedExample>,
}

/// Loads the model and data, trains, and writes `metrics.json` beside the adapters.
pub fn run_job(
    job: &TrainJob,
    resume: bool,
    observer: &mut trainer::StepObserver<'_>,
) -> anyhow::Result<JobReport> {
    run_job_on(job, None, resume, observer)
}

/// [`run_job`], on pre-tokenized examples when `tokens` is given.
pub fn run_job_on(
    job: &TrainJob,
    tokens: Option<Pretokenized>,
    resume: bool,
    observer: &mut trainer::StepObserver<'_>,
) -> anyhow::Result<JobReport> {
    // QLoRA trains on the quantized base; every other method wants float weights.
    let keep_quantized = job.config.method == Method::Qlora;
    let mut loaded = load::load(
        &job.model,
        LoadOptions {
            keep_quantized,
            dtype: trainer::base_dtype(job.config.method),
        },
    )
    .with_context(|| format!("cannot load the model `{}`", job.model))?;
    let (train_set, valid_set) = match tokens {
        Some(t) => (t.train, t.valid),
        None => {
            let template = loaded.chat_template.as_ref();
            let train = tokenize_file(&job.train_data, &loaded.tokenizer, template)?;
            let valid = match &job.valid_data {
                Some(p) => tokenize_file(p, &loaded.tokenizer, template)?,
                None => Vec::new(),
            };
            (train, valid)
        }
    };
    let truncated = train_set
        .iter()
        .filter(|e| e.len() > job.config.max_seq_len + 1)
        .count();
    let spec = trainer::prepare(&mut loaded.model, &job.config)?;
    if let Some(hint) = cache_hint(&loaded.model, &job.config, train_set.len()) {
        eprintln!("hint: {hint}");
    }
    let pad_id = loaded.tokenizer.pad_id();
    let summary = trainer::train(
        &mut loaded.model,
        spec.as_ref(),
        TrainData {
            train: &train_set,
            valid: &valid_set,
            pad_id,
        },
        &job.config,
        &job.out_dir,
        resume,
        observer,
    )?;
    let report = JobReport {
        summary,
        train_examples: train_set.len(),
        valid_examples: valid_set.len(),
        truncated_examples: truncated,
        train_tokens: train_set.iter().map(|e| e.len() as u64).sum(),
        train_loss_tokens: train_set.iter().map(|e| e.loss_tokens() as u64).sum(),
        valid_tokens: valid_set.iter().map(|e| e.len() as u64).sum(),
        valid_loss_tokens: valid_set.iter().map(|e| e.loss_tokens() as u64).sum(),
    };
    let metrics = job.out_dir.join("metrics.json");
    let tmp = job.out_dir.join(".metrics.json.tmp");
    fs_err::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    fs_err::rename(&tmp, &metrics)?;
    Ok(report)
}

/// Suggests the activation cache (off by default; see [`super::activations`] for why) when
/// this run would gain from it: frozen blocks at the bottom and examples seen more than once.
fn cache_hint(
    model: &crate::mlx::models::llama::Llama,
    config: &TrainConfig,
    examples: usize,
) -> Option<String> {
    let block = super::activations::first_trainable_block(model);
    let rows = config.iters as f64 * (config.batch_size * config.grad_accum.max(1) as usize) as f64;
    let passes = rows / examples.max(1) as f64;
    (!config.activation_cache.enabled && block > 0 && passes > 1.0).then(|| {
        format!(
            "this run sees each of its {examples} training examples about {passes:.1} times and blocks 0-{} are frozen; \
             `activation_cache: {{enabled: true}}` computes their outputs once and reuses them (exact up to float rounding)",
            block - 1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activation_cache_dir_is_relative_to_the_job_and_defaults_to_the_workspace() {
        let parse = |extra: &str| {
            TrainJob::from_yaml(
                &format!("model: m\ntrain_data: t\nout_dir: o\n{extra}"),
                Path::new("job.yaml"),
                Path::new("/w"),
            )
            .unwrap()
            .config
            .activation_cache
        };
        let named = parse("activation_cache: {enabled: true, dir: acts}\n");
        assert_eq!(named.dir, Some(PathBuf::from("/w/acts")));
        assert_eq!(
            named.or_workspace_dir(Path::new("/root")).dir,
            Some(PathBuf::from("/w/acts"))
        );
        let unset = parse("activation_cache: {enabled: true}\n");
        assert_eq!(unset.dir, None);
        assert_eq!(
            unset.or_workspace_dir(Path::new("/root")).dir,
            Some(PathBuf::from("/root/cache/activations/v1"))
        );
    }

    #[test]
    fn the_cache_hint_needs_frozen_blocks_and_repeated_examples() {
        let config = |num_layers: i32, enabled: bool| TrainConfig {
            lora: super::super::lora::LoraConfig {
                num_layers: Some(num_layers),
                ..Default::default()
            },
            iters: 10,
            batch_size: 4,
            activation_cache: super::super::activations::ActivationCacheConfig {
                enabled,
                ..Default::default()
            },
            ..TrainConfig::default()
        };
        let model = |c: &TrainConfig| {
            let mut m = crate::mlx::models::llama::tiny_random(0, 50, 3, false).unwrap();
            trainer::prepare(&mut m, c).unwrap();
            m
        };
        let frozen = config(1, false);
        let hint = cache_hint(&model(&frozen), &frozen, 20).unwrap();
        assert!(
            hint.contains("2.0 times") && hint.contains("blocks 0-1"),
            "{hint}"
        );
        assert_eq!(cache_hint(&model(&frozen), &frozen, 40), None, "one pass");
        let on = config(1, true);
        assert_eq!(cache_hint(&model(&on), &on, 20), None, "already on");
        let all = config(3, false);
        assert_eq!(cache_hint(&model(&all), &all, 20), None, "nothing frozen");
    }

    #[test]
    fn parses_job_keys_and_trainer_options() {
        let job = TrainJob::from_yaml(
            "model: smollm2\ntrain_data: d/train.jsonl\nout_dir: runs/a\nmethod: qlora\niters: 7\nlora: {rank: 4}\n",
            Path::new("job.yaml"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(job.train_data, PathBuf::from("/w/d/train.jsonl"));
        assert_eq!(job.config.method, Method::Qlora);
        assert_eq!(job.config.iters, 7);
        assert_eq!(job.config.lora.rank, 4);
        assert_eq!(job.valid_data, None);
    }

    #[test]
    fn memory_options_parse() {
        let job = TrainJob::from_yaml(
            "model: m\ntrain_data: t\nout_dir: o\nbatch_size: 16\nmicro_batch: auto\nmemory_budget_mb: 4096\ngrad_checkpoint: true\n",
            Path::new("job.yaml"),
            Path::new("."),
        )
        .unwrap();
        use crate::mlx::train::micro::MicroBatch;
        assert_eq!(job.config.micro_batch, Some(MicroBatch::Auto));
        assert_eq!(job.config.memory_budget_mb, Some(4096));
        assert!(job.config.grad_checkpoint);
        let err = TrainJob::from_yaml(
            "model: m\ntrain_data: t\nout_dir: o\nmicro_batch: most\n",
            Path::new("job.yaml"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("micro_batch") || err.contains("auto"), "{err}");
    }

    #[test]
    fn typos_and_missing_keys_are_named() {
        let err = TrainJob::from_yaml(
            "model: m\ntrain_data: t\nout_dir: o\nlearning_rte: 1\n",
            Path::new("job.yaml"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("job.yaml") && err.contains("learning_rte"),
            "{err}"
        );
        let err = TrainJob::from_yaml(
            "train_data: t\nout_dir: o\n",
            Path::new("job.yaml"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing `model`"), "{err}");
        let err = TrainJob::from_yaml("model: [1\n", Path::new("job.yaml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("job.yaml:"), "{err}");
    }
}
