//! The `train` kind's configuration, shared with `pipe train --config FILE`: one type, the
//! same options in both places.
//!
//! ```yaml
//! model: smollm2-135m-instruct      # known id, GGUF file, HF directory or hub repo id
//! train_data: data/train.jsonl      # JSONL/CSV/TSV: chat, completions or text
//! valid_data: data/valid.jsonl      # optional
//! # tokens: data/tokens             # instead: a tokenize stage's out folder
//! out_dir: runs/lora                # adapters, checkpoint, train_log.jsonl, metrics.json
//! method: lora                      # lora | qlora | dora | full
//! lora: {rank: 8, alpha: 16, num_layers: 16}   # rank: auto measures the data
//! iters: 200
//! batch_size: 8                     # or auto: from the training set's size
//! learning_rate: 1.0e-4
//! micro_batch: auto                 # optional: largest micro-batch that fits memory_budget_mb
//! ```
//!
//! [`TrainWith`] is what is written; [`TrainWith::resolve`] checks every value and gives a
//! [`TrainSpec`], which is what a stage's fingerprint hashes and its process receives.
//! Values that are `auto` stay [`Auto`] in the spec: they are measured when the stage
//! runs, and [`TrainSpec::config`] then yields the [`TrainConfig`] the trainer takes, in
//! which no `auto` can remain.

use crate::{Auto, FieldError, from_value};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The projections an adapter can target, by their checkpoint names.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Default disk budget of the shared activation cache directory, in MiB.
pub const DEFAULT_ACTIVATION_DISK_MB: u64 = 4096;

/// The training method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Low-rank adapters on a float base.
    #[default]
    Lora,
    /// Low-rank adapters on a quantized base.
    Qlora,
    /// Weight-decomposed low-rank adapters.
    Dora,
    /// Every parameter trains.
    Full,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Lora => "lora",
            Method::Qlora => "qlora",
            Method::Dora => "dora",
            Method::Full => "full",
        })
    }
}

/// The decay of the learning rate after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Stay at the peak.
    #[default]
    Constant,
    /// Straight line from the peak to `min_lr` at the last step.
    Linear,
    /// Half a cosine from the peak to `min_lr` at the last step.
    Cosine,
}

/// AdamW hyperparameters (the learning rate comes per step from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Decay rates of the first and second moment estimates.
    pub betas: (f32, f32),
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// `micro_batch:` as written: `auto` or a number of rows.
pub type MicroBatch = Auto<usize>;

/// The activation cache options, as written under `activation_cache:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationCacheConfig {
    /// Cache the hidden states entering the first trainable block.
    pub enabled: bool,
    /// Memory budget for cached states, in MiB.
    pub memory_mb: u64,
    /// Disk budget of the cache directory, in MiB (0: no disk layer).
    pub disk_mb: u64,
    /// Cache directory (relative: like the job's other paths). Unset: the workspace's
    /// `cache/activations/v1`, filled in by the train stage, tune trials and `pipe train`
    /// ([`Self::or_dir`]); still unset there, there is no disk layer.
    pub dir: Option<PathBuf>,
}

impl Default for ActivationCacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            memory_mb: 1024,
            disk_mb: DEFAULT_ACTIVATION_DISK_MB,
            dir: None,
        }
    }
}

impl ActivationCacheConfig {
    /// The options with an unset `dir` set to `dir` (the workspace's shared directory,
    /// where every run and trial of the workspace finds the files of the others).
    pub fn or_dir(mut self, dir: PathBuf) -> Self {
        self.dir.get_or_insert(dir);
        self
    }
}

/// The LoRA options; `Rank` is `Auto<i32>` as written and `i32` once chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    bound(deserialize = "Rank: Deserialize<'de> + From<i32>")
)]
pub struct LoraOptions<Rank> {
    /// Rank (`auto`: chosen from the data when the stage runs).
    pub rank: Rank,
    /// `scale = alpha / rank`.
    pub alpha: Option<f32>,
    /// mlx-lm's name for the scale itself; wins over `alpha`.
    pub scale: Option<f32>,
    /// Dropout probability.
    pub dropout: f32,
    /// Adapt only the last N blocks.
    pub num_layers: Option<i32>,
    /// Projections to adapt; default all of attention and MLP.
    pub targets: Vec<String>,
}

/// The LoRA options with a chosen rank, as the trainer takes them.
pub type LoraConfig = LoraOptions<i32>;

impl<Rank: From<i32>> Default for LoraOptions<Rank> {
    fn default() -> Self {
        Self {
            rank: Rank::from(8),
            alpha: None,
            scale: None,
            dropout: 0.0,
            num_layers: None,
            targets: ALL_TARGETS.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

impl From<i32> for Auto<i32> {
    fn from(v: i32) -> Self {
        Auto::Value(v)
    }
}

impl From<usize> for Auto<usize> {
    fn from(v: usize) -> Self {
        Auto::Value(v)
    }
}

impl LoraConfig {
    /// `alpha / rank`, or `scale`; without either 20, mlx-lm's default, so recipes carry
    /// over.
    pub fn scale(&self) -> f32 {
        match (self.scale, self.alpha) {
            (Some(s), _) => s,
            (None, Some(a)) => a / self.rank as f32,
            (None, None) => 20.0,
        }
    }
}

/// Every trainer option; `Batch` and `Rank` are `Auto` as written (see [`TrainOptionsAuto`])
/// and numbers in the [`TrainConfig`] the trainer takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    bound(
        deserialize = "Batch: Deserialize<'de> + From<usize>, Rank: Deserialize<'de> + From<i32>"
    )
)]
pub struct TrainOptions<Batch, Rank> {
    /// lora, qlora, dora or full.
    pub method: Method,
    /// Adapter shape (ignored by full fine-tuning).
    pub lora: LoraOptions<Rank>,
    /// QLoRA on a float base: quantize it to this many bits (4 or 8).
    pub quantize_bits: i32,
    /// QLoRA on a float base: quantization group size (32 or 64).
    pub quantize_group_size: i32,
    /// Optimizer steps.
    pub iters: u64,
    /// Rows per step (`auto`: from the training set's size).
    pub batch_size: Batch,
    /// Micro-batches per optimizer step.
    pub grad_accum: u32,
    /// Rows per forward/backward pass, out of the `batch_size × grad_accum` rows of a step:
    /// `auto` picks the largest that fits `memory_budget_mb`, a number must divide the
    /// effective batch; unset runs `batch_size` rows `grad_accum` times.
    pub micro_batch: Option<MicroBatch>,
    /// Memory budget in MiB for `micro_batch: auto` (unset: from the machine's memory).
    pub memory_budget_mb: Option<u64>,
    /// Recompute each block's activations in the backward pass instead of keeping them.
    pub grad_checkpoint: bool,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Floor of the decay.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Decay after warmup.
    pub schedule: Decay,
    /// Clip the global gradient norm to this (`null`: no clipping).
    pub max_grad_norm: Option<f32>,
    /// AdamW's betas, eps and weight decay.
    pub optimizer: AdamWConfig,
    /// Longer examples are truncated.
    pub max_seq_len: usize,
    /// Batch lengths round up to a multiple of this (1 pads only to the longest row).
    pub pad_multiple: usize,
    /// Run the prompt prefix the rows of a batch share once (exact).
    pub share_prefix: bool,
    /// Seed for adapters, batch order and dropout.
    pub seed: u64,
    /// Validate every N steps (0: only at the end).
    pub valid_every: u64,
    /// Validation batches per evaluation (unset: the whole validation set).
    pub valid_batches: Option<usize>,
    /// Stop after this many validations without improvement.
    pub patience: Option<u32>,
    /// Save a checkpoint every N steps (0: at validations and at the end).
    pub save_every: u64,
    /// Stop when the smoothed loss exceeds this multiple of its best.
    pub divergence_factor: f64,
    /// Cache the hidden states entering the first trainable block.
    pub activation_cache: ActivationCacheConfig,
}

/// The options as written: `batch_size` and `lora.rank` may be `auto`.
pub type TrainOptionsAuto = TrainOptions<Auto<usize>, Auto<i32>>;

/// The options the trainer takes: every value chosen.
pub type TrainConfig = TrainOptions<usize, i32>;

impl<Batch: From<usize>, Rank: From<i32>> Default for TrainOptions<Batch, Rank> {
    fn default() -> Self {
        Self {
            method: Method::Lora,
            lora: LoraOptions::default(),
            quantize_bits: 4,
            quantize_group_size: 64,
            iters: 100,
            batch_size: Batch::from(8),
            grad_accum: 1,
            micro_batch: None,
            memory_budget_mb: None,
            grad_checkpoint: false,
            learning_rate: 1e-4,
            min_lr: 0.0,
            warmup_steps: 0,
            schedule: Decay::Constant,
            max_grad_norm: Some(1.0),
            optimizer: AdamWConfig::default(),
            max_seq_len: 2048,
            pad_multiple: 1,
            share_prefix: true,
            seed: 0,
            valid_every: 0,
            valid_batches: None,
            patience: None,
            save_every: 0,
            divergence_factor: 4.0,
            activation_cache: ActivationCacheConfig::default(),
        }
    }
}

impl<Batch, Rank> TrainOptions<Batch, Rank> {
    /// The same options with `batch_size` and `lora.rank` replaced.
    pub fn with_sizes<B2, R2>(self, batch_size: B2, rank: R2) -> TrainOptions<B2, R2> {
        let Self {
            method,
            lora,
            quantize_bits,
            quantize_group_size,
            iters,
            batch_size: _,
            grad_accum,
            micro_batch,
            memory_budget_mb,
            grad_checkpoint,
            learning_rate,
            min_lr,
            warmup_steps,
            schedule,
            max_grad_norm,
            optimizer,
            max_seq_len,
            pad_multiple,
            share_prefix,
            seed,
            valid_every,
            valid_batches,
            patience,
            save_every,
            divergence_factor,
            activation_cache,
        } = self;
        let LoraOptions {
            rank: _,
            alpha,
            scale,
            dropout,
            num_layers,
            targets,
        } = lora;
        TrainOptions {
            method,
            lora: LoraOptions {
                rank,
                alpha,
                scale,
                dropout,
                num_layers,
                targets,
            },
            quantize_bits,
            quantize_group_size,
            iters,
            batch_size,
            grad_accum,
            micro_batch,
            memory_budget_mb,
            grad_checkpoint,
            learning_rate,
            min_lr,
            warmup_steps,
            schedule,
            max_grad_norm,
            optimizer,
            max_seq_len,
            pad_multiple,
            share_prefix,
            seed,
            valid_every,
            valid_batches,
            patience,
            save_every,
            divergence_factor,
            activation_cache,
        }
    }
}

impl TrainConfig {
    /// The checks of [`TrainOptionsAuto::validate`], for options built in code.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.clone()
            .with_sizes(Auto::Value(self.batch_size), Auto::Value(self.lora.rank))
            .validate()
    }
}

impl TrainOptionsAuto {
    /// Checks every value that can be checked before anything runs. The first problem is
    /// returned with the path of its key.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(x > 0.0)` also rejects NaN"
    )]
    pub fn validate(&self) -> Result<(), FieldError> {
        let lora = &self.lora;
        if let Auto::Value(rank) = lora.rank
            && rank < 1
        {
            return Err(FieldError::at(
                "lora.rank",
                format!("must be at least 1 (or `auto`), got {rank}"),
            ));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(FieldError::at(
                "lora.dropout",
                format!("must be in [0, 1), got {}", lora.dropout),
            ));
        }
        if let Some(alpha) = lora.alpha
            && !(alpha > 0.0)
        {
            return Err(FieldError::at(
                "lora.alpha",
                format!("must be positive, got {alpha}"),
            ));
        }
        if let Some(n) = lora.num_layers
            && n < 1
        {
            return Err(FieldError::at(
                "lora.num_layers",
                format!("must be at least 1, got {n}"),
            ));
        }
        if let Some(t) = lora
            .targets
            .iter()
            .find(|t| !ALL_TARGETS.contains(&t.as_str()))
        {
            return Err(FieldError::at(
                "lora.targets",
                format!(
                    "unknown target `{t}`; expected some of {}",
                    ALL_TARGETS.join(", ")
                ),
            ));
        }
        if lora.targets.is_empty() {
            return Err(FieldError::at(
                "lora.targets",
                format!("is empty; name some of {}", ALL_TARGETS.join(", ")),
            ));
        }
        if ![4, 8].contains(&self.quantize_bits) {
            return Err(FieldError::at(
                "quantize_bits",
                format!("must be 4 or 8, got {}", self.quantize_bits),
            ));
        }
        if ![32, 64].contains(&self.quantize_group_size) {
            return Err(FieldError::at(
                "quantize_group_size",
                format!("must be 32 or 64, got {}", self.quantize_group_size),
            ));
        }
        if self.iters < 1 {
            return Err(FieldError::at("iters", "must be at least 1"));
        }
        if self.batch_size == Auto::Value(0) {
            return Err(FieldError::at(
                "batch_size",
                "must be at least 1 (or `auto`)",
            ));
        }
        if self.grad_accum < 1 {
            return Err(FieldError::at("grad_accum", "must be at least 1"));
        }
        if self.batch_size.is_auto() {
            if self.grad_accum != 1 {
                return Err(FieldError::at(
                    "grad_accum",
                    "`batch_size: auto` chooses the rows per step and splits them into micro-batches and accumulation itself; remove `grad_accum`",
                ));
            }
            if let Some(Auto::Value(n)) = self.micro_batch {
                return Err(FieldError::at(
                    "micro_batch",
                    format!(
                        "`batch_size: auto` takes the micro-batch from the memory probe; remove `micro_batch: {n}` (`memory_budget_mb` sets the budget)"
                    ),
                ));
            }
        }
        match (self.micro_batch, self.batch_size) {
            (Some(Auto::Value(0)), _) => {
                return Err(FieldError::at(
                    "micro_batch",
                    "must be at least 1 (or `auto`)",
                ));
            }
            (Some(Auto::Value(n)), Auto::Value(b)) => {
                let effective = b * self.grad_accum as usize;
                if !effective.is_multiple_of(n) {
                    return Err(FieldError::at(
                        "micro_batch",
                        format!(
                            "{n} does not divide the effective batch of {effective} rows (batch_size × grad_accum); use a divisor or `auto`"
                        ),
                    ));
                }
            }
            _ => {}
        }
        if self.memory_budget_mb == Some(0) {
            return Err(FieldError::at("memory_budget_mb", "must be positive"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(FieldError::at(
                "learning_rate",
                format!("must be positive, got {}", self.learning_rate),
            ));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.learning_rate) {
            return Err(FieldError::at(
                "min_lr",
                format!(
                    "must be between 0 and learning_rate ({}), got {}",
                    self.learning_rate, self.min_lr
                ),
            ));
        }
        if self.warmup_steps > self.iters {
            return Err(FieldError::at(
                "warmup_steps",
                format!(
                    "{} is more than iters ({}); the learning rate would never reach its peak",
                    self.warmup_steps, self.iters
                ),
            ));
        }
        if let Some(norm) = self.max_grad_norm
            && !(norm > 0.0)
        {
            return Err(FieldError::at(
                "max_grad_norm",
                format!("must be positive (or null for no clipping), got {norm}"),
            ));
        }
        let (b1, b2) = self.optimizer.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(FieldError::at(
                "optimizer.betas",
                format!("both must be in [0, 1), got ({b1}, {b2})"),
            ));
        }
        if !(self.optimizer.eps > 0.0) {
            return Err(FieldError::at("optimizer.eps", "must be positive"));
        }
        if self.optimizer.weight_decay < 0.0 {
            return Err(FieldError::at(
                "optimizer.weight_decay",
                "must not be negative",
            ));
        }
        if self.max_seq_len < 1 {
            return Err(FieldError::at("max_seq_len", "must be at least 1"));
        }
        if self.pad_multiple < 1 {
            return Err(FieldError::at("pad_multiple", "must be at least 1"));
        }
        if self.valid_batches == Some(0) {
            return Err(FieldError::at(
                "valid_batches",
                "must be at least 1 (or unset: all)",
            ));
        }
        if self.patience == Some(0) {
            return Err(FieldError::at(
                "patience",
                "must be at least 1 (or unset: no early stopping)",
            ));
        }
        if !(self.divergence_factor > 1.0) {
            return Err(FieldError::at(
                "divergence_factor",
                format!("must be greater than 1, got {}", self.divergence_factor),
            ));
        }
        if self.grad_checkpoint && self.method != Method::Full && lora.dropout > 0.0 {
            return Err(FieldError::at(
                "grad_checkpoint",
                "recomputes each block in the backward pass, which would draw new dropout masks; set lora.dropout to 0 or turn grad_checkpoint off",
            ));
        }
        Ok(())
    }
}

/// Where a run's examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainInputs {
    /// Data files, tokenized when the run starts.
    Files {
        /// Training data.
        train_data: String,
        /// Validation data.
        valid_data: Option<String>,
    },
    /// A tokenize stage's out folder (`train.tokens`, `valid.tokens`).
    Tokens(String),
}

/// The job keys of a train stage's `with:` (everything else is a [`TrainOptions`] key).
pub const JOB_KEYS: [&str; 6] = [
    "model",
    "train_data",
    "valid_data",
    "tokens",
    "out_dir",
    "params_file",
];

/// A train stage's `with:` (or a `pipe train --config` file), as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainWith {
    /// Known model id, GGUF file, Hugging Face directory or hub repo id.
    pub model: Option<String>,
    /// Training data file.
    pub train_data: Option<String>,
    /// Validation data file.
    pub valid_data: Option<String>,
    /// A tokenize stage's out folder, instead of the data files.
    pub tokens: Option<String>,
    /// Where the adapters, checkpoint, step log and metrics go.
    pub out_dir: Option<String>,
    /// A YAML file of options merged over these when the stage runs (e.g. a tune stage's
    /// `best.yaml`).
    pub params_file: Option<String>,
    /// Every trainer option.
    pub options: TrainOptionsAuto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobKeys {
    model: Option<String>,
    train_data: Option<String>,
    valid_data: Option<String>,
    tokens: Option<String>,
    out_dir: Option<String>,
    params_file: Option<String>,
}

impl TrainWith {
    /// Reads `with:` (a JSON value; YAML is converted first). Unknown keys are errors at
    /// their own path, with the job keys and the options both counted as known.
    pub fn from_value(with: &Value) -> Result<Self, FieldError> {
        let empty = serde_json::Map::new();
        let map = match with {
            Value::Null => &empty,
            Value::Object(m) => m,
            _ => {
                return Err(FieldError::at("", "must be a mapping of training options"));
            }
        };
        let (job, options): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
            .clone()
            .into_iter()
            .partition(|(k, _)| JOB_KEYS.contains(&k.as_str()));
        let job: JobKeys = from_value(&Value::Object(job))?;
        let options: TrainOptionsAuto = from_value(&Value::Object(options)).map_err(|mut e| {
            if e.message.starts_with("unknown field") {
                e.message = format!("{}; the job keys are {}", e.message, JOB_KEYS.join(", "));
            }
            e
        })?;
        Ok(Self {
            model: job.model,
            train_data: job.train_data,
            valid_data: job.valid_data,
            tokens: job.tokens,
            out_dir: job.out_dir,
            params_file: job.params_file,
            options,
        })
    }

    /// Checks every value and gives the spec. With a `params_file`, the file is read when
    /// the stage runs, so keys it may supply are not required yet.
    pub fn resolve(self) -> Result<TrainSpec, FieldError> {
        let deferred = self.params_file.is_some();
        self.options.validate()?;
        let model = match self.model {
            Some(m) if !m.trim().is_empty() => m,
            _ => {
                return Err(FieldError::at(
                    "model",
                    "is missing: name a model id, a GGUF file or a model directory",
                ));
            }
        };
        let inputs = match (self.tokens, self.train_data, self.valid_data) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(FieldError::at(
                    "tokens",
                    "give either `tokens` (a tokenize stage's out) or `train_data`/`valid_data`, not both",
                ));
            }
            (Some(dir), None, None) => TrainInputs::Tokens(dir),
            (None, Some(train_data), valid_data) => TrainInputs::Files {
                train_data,
                valid_data,
            },
            (None, None, _) if deferred => TrainInputs::Files {
                train_data: String::new(),
                valid_data: None,
            },
            (None, None, _) => {
                return Err(FieldError::at(
                    "train_data",
                    "is missing: give `train_data` (a JSONL/CSV/TSV file) or `tokens` (a tokenize stage's out)",
                ));
            }
        };
        let out_dir = match self.out_dir {
            Some(o) if !o.trim().is_empty() => o,
            _ => {
                return Err(FieldError::at(
                    "out_dir",
                    "is missing: where should the adapter go?",
                ));
            }
        };
        Ok(TrainSpec {
            model,
            inputs,
            out_dir,
            params_file: self.params_file,
            options: self.options,
        })
    }

    /// [`Self::from_value`] then [`Self::resolve`].
    pub fn parse(with: &Value) -> Result<TrainSpec, FieldError> {
        Self::from_value(with)?.resolve()
    }
}

/// A checked training job: what a train stage's fingerprint hashes and its process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The base model.
    pub model: String,
    /// The examples.
    pub inputs: TrainInputs,
    /// The out folder, relative to the workspace.
    pub out_dir: String,
    /// Options merged over these when the stage runs.
    pub params_file: Option<String>,
    /// The options; `auto` values are chosen when the stage runs.
    pub options: TrainOptionsAuto,
}

impl TrainSpec {
    /// The trainer's options once `auto` values are chosen: `rank` and `batch_size` are
    /// used where the spec says `auto` and ignored otherwise.
    /// A chosen batch is split by the memory probe (`micro_batch: auto`).
    pub fn config(&self, rank: i32, batch_size: usize) -> TrainConfig {
        let rank = self.options.lora.rank.value().unwrap_or(rank);
        let mut config = match self.options.batch_size {
            Auto::Value(batch) => self.options.clone().with_sizes(batch, rank),
            Auto::Auto => {
                let mut config = self.options.clone().with_sizes(batch_size, rank);
                config.micro_batch = Some(Auto::Auto);
                config
            }
        };
        config.lora.rank = rank;
        config
    }

    /// The spec with a params file's options merged over its own (the file wins, mapping
    /// by mapping), checked again: `file` is the file's content as JSON.
    pub fn with_params(&self, file: &Value) -> Result<TrainSpec, FieldError> {
        let mut with = serde_json::to_value(&self.options).expect("options serialize");
        let map = with.as_object_mut().expect("options are a mapping");
        map.insert("model".into(), self.model.clone().into());
        map.insert("out_dir".into(), self.out_dir.clone().into());
        match &self.inputs {
            TrainInputs::Tokens(dir) => {
                map.insert("tokens".into(), dir.clone().into());
            }
            TrainInputs::Files {
                train_data,
                valid_data,
            } => {
                if !train_data.is_empty() {
                    map.insert("train_data".into(), train_data.clone().into());
                }
                if let Some(v) = valid_data {
                    map.insert("valid_data".into(), v.clone().into());
                }
            }
        }
        if file.get("tokens").is_some() {
            map.remove("train_data");
            map.remove("valid_data");
        }
        overlay(&mut with, file.clone());
        TrainWith::parse(&with)
    }

    /// The trainer's options when nothing is `auto`.
    pub fn fixed_config(&self) -> Option<TrainConfig> {
        let batch = self.options.batch_size.value()?;
        let rank = self.options.lora.rank.value()?;
        Some(self.options.clone().with_sizes(batch, rank))
    }

    /// The paths the stage reads (data, tokens, params file).
    pub fn deps(&self) -> Vec<String> {
        let mut deps = match &self.inputs {
            TrainInputs::Files {
                train_data,
                valid_data,
            } => std::iter::once(train_data.clone())
                .filter(|p| !p.is_empty())
                .chain(valid_data.clone())
                .collect(),
            TrainInputs::Tokens(dir) => vec![dir.clone()],
        };
        deps.extend(self.params_file.clone());
        deps
    }
}

/// Merges `over` into `base`, mapping by mapping; `over` wins elsewhere.
fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

/// One optimizer step, a line of `train_log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Mean loss over the loss-carrying tokens of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the step (validation excluded).
    pub seconds: f64,
    /// Loss-carrying tokens in the step.
    pub trained_tokens: u64,
    /// Positions computed in the step (prompt and padding included).
    pub processed_tokens: u64,
    /// Loss-carrying tokens per second.
    pub trained_tokens_per_second: f64,
    /// All computed positions per second (including prompt and padding).
    pub processed_tokens_per_second: f64,
    /// MLX peak memory so far, in bytes.
    pub peak_memory_bytes: u64,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Validation loss, on steps that evaluated.
    pub valid_loss: Option<f64>,
    /// Positions whose frozen blocks were skipped thanks to the activation cache.
    #[serde(default)]
    pub cached_positions: u64,
}

#[cfg(test)]
mod tests;
