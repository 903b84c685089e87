//! The trainer options and their parts, generic over whether `batch_size` and
//! `lora.rank` may still be `auto`.

use crate::Auto;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// Data-parallel training over MLX distributed, as written under `distributed:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedOptions {
    /// Processes to start on this machine (joined over loopback by MLX's ring backend);
    /// each step's `batch_size` rows are split across them. 1: a single process. Under
    /// `mlx.launch`, `mpirun` or `srun` the launcher's ranks are used instead.
    pub ranks: u32,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        Self { ranks: 1 }
    }
}

impl DistributedOptions {
    /// A single process (the default; left out of a spec's JSON so that fingerprints of
    /// jobs written before this option existed do not change).
    pub fn is_single(&self) -> bool {
        self.ranks == 1
    }
}

/// The LoRA options; `Rank` is `Auto<i32>` as written and `i32` once chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    default,
    bound(deserialize = "Rank: Deserialize<'de> + From<i32>")
)]
#[schemars(bound = "Rank: JsonSchema + From<i32> + Serialize")]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    default,
    bound(
        deserialize = "Batch: Deserialize<'de> + From<usize>, Rank: Deserialize<'de> + From<i32>"
    )
)]
#[schemars(
    bound = "Batch: JsonSchema + From<usize> + Serialize, Rank: JsonSchema + From<i32> + Serialize"
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
    /// Validation batches per evaluation (unset: the whole validation set). Their rows are
    /// spread over the set's length order, not its shortest rows.
    pub valid_batches: Option<usize>,
    /// Stop after this many validations without improvement.
    pub patience: Option<u32>,
    /// Save a checkpoint every N steps (0: at validations and at the end).
    pub save_every: u64,
    /// Stop when the smoothed loss exceeds this multiple of its best.
    pub divergence_factor: f64,
    /// Cache the hidden states entering the first trainable block.
    pub activation_cache: ActivationCacheConfig,
    /// Data-parallel ranks.
    #[serde(skip_serializing_if = "DistributedOptions::is_single")]
    pub distributed: DistributedOptions,
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
            distributed: DistributedOptions::default(),
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
            distributed,
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
            distributed,
        }
    }
}
