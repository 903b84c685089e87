//! A training job as the trainer runs it: the model, the data files, the out folder and a
//! [`TrainConfig`] in which every value is chosen. It is built from a checked
//! [`pipe_schema::train::TrainSpec`] (what `pipe train --config FILE` and a train stage
//! both read; see [`crate::stages::train`]) once any `auto` value has been measured.

use super::batch::TokenizedExample;
use super::lora::Method;
use super::tokenize::tokenize_example;
use super::trainer::{self, TrainConfig, TrainData, TrainSummary};
use crate::load::{self, LoadOptions};
use anyhow::Context;
use pipe_engine::data::{ReadOptions, read_examples};
use pipe_schema::train::{TrainInputs, TrainSpec};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A job ready to train.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainJob {
    /// The base model argument.
    pub model: String,
    /// Training data file (with tokens: the tokens folder's `train.tokens`, never read as
    /// text).
    pub train_data: PathBuf,
    /// Validation data file.
    pub valid_data: Option<PathBuf>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Trainer options.
    pub config: TrainConfig,
}

impl TrainJob {
    /// The job `spec` describes with `config` (its `auto` values chosen); relative paths
    /// are taken from `base`.
    pub fn new(spec: &TrainSpec, mut config: TrainConfig, base: &Path) -> Self {
        let (train_data, valid_data) = match &spec.inputs {
            TrainInputs::Files {
                train_data,
                valid_data,
            } => (
                base.join(train_data),
                valid_data.as_ref().map(|v| base.join(v)),
            ),
            TrainInputs::Tokens(dir) => (base.join(dir).join("train.tokens"), None),
        };
        if let Some(dir) = &mut config.activation_cache.dir {
            *dir = base.join(&*dir);
        }
        Self {
            model: spec.model.clone(),
            train_data,
            valid_data,
            out_dir: base.join(&spec.out_dir),
            config,
        }
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
    tokenizer: &crate::tokenizer::Tokenizer,
    template: Option<&crate::chat::ChatTemplate>,
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
    if let Some(hint) = cache_hint(&loaded.model, &job.config, train_set.len())
        && crate::distributed::world().is_none()
    {
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
    if crate::distributed::is_lead() {
        pipe_engine::atomic_write::write_json(&job.out_dir.join("metrics.json"), &report)?;
    }
    Ok(report)
}

/// Suggests the activation cache (off by default; see [`super::activations`] for why) when
/// this run would gain from it: frozen blocks at the bottom and examples seen more than once.
fn cache_hint(
    model: &crate::models::llama::Llama,
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
    fn paths_are_relative_to_the_base_and_tokens_stand_in_for_the_data() {
        let spec = pipe_schema::train::TrainWith::parse(&serde_json::json!({
            "model": "m", "train_data": "d/train.jsonl", "out_dir": "o",
            "activation_cache": {"enabled": true, "dir": "acts"}
        }))
        .unwrap();
        let job = TrainJob::new(&spec, spec.fixed_config().unwrap(), Path::new("/w"));
        assert_eq!(job.train_data, PathBuf::from("/w/d/train.jsonl"));
        assert_eq!(job.out_dir, PathBuf::from("/w/o"));
        assert_eq!(
            job.config.activation_cache.dir,
            Some(PathBuf::from("/w/acts"))
        );
        let spec = pipe_schema::train::TrainWith::parse(&serde_json::json!({
            "model": "m", "tokens": "t", "out_dir": "o"
        }))
        .unwrap();
        let job = TrainJob::new(&spec, spec.fixed_config().unwrap(), Path::new("/w"));
        assert_eq!(job.train_data, PathBuf::from("/w/t/train.tokens"));
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
            let mut m = crate::models::llama::tiny_random(0, 50, 3, false).unwrap();
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
}
