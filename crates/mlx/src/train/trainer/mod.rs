//! The fine-tuning loop: LoRA, QLoRA, DoRA or full fine-tuning of a [`Llama`] on tokenized
//! examples, with gradient accumulation, clipping, a schedule, periodic validation, early
//! stopping, a divergence guard, checkpoints that resume exactly, and a JSONL step log.
//!
//! Output directory:
//! - `adapters.safetensors`, `adapter_config.json`: the best adapter (lowest validation
//!   loss, or the last one without validation), in mlx-lm's layout;
//! - `peft/`: the same adapter in PEFT's layout;
//! - `checkpoint/`: the last checkpoint (adapter, optimizer state, `state.json`), for
//!   `--resume`;
//! - `train_log.jsonl`: one [`StepRecord`] per step.
//!
//! Reproducibility: the batch order depends only on the seed and the epoch, and the MLX
//! random state (adapter dropout) is reseeded from the seed and the step before every
//! step, so a resumed run replays exactly the steps an uninterrupted run would take.
//!
//! This module drives a run; `step` computes one optimizer step, `validate` the validation
//! loss, and `checkpoint` writes the adapter and the checkpoint.

use super::activations::{ActivationCache, ActivationCacheStats, CacheSetup};
use super::batch::{BatchSpec, TokenizedExample};
use super::guard::{DivergenceGuard, EarlyStopping, Verdict};
use super::log::{StepLog, StepRecord};
use super::lora::{self, AdapterSpec, Method};
use super::micro::BatchPlan;
use super::optim::AdamW;
use super::schedule::Schedule;
use crate::linear::QuantSpec;
use crate::models::llama::Llama;
use anyhow::bail;
use checkpoint::CheckpointState;
use mlx_rs::module::ModuleParameters;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use pipe_schema::train::TrainConfig;
pub use validate::{validation_loss, validation_loss_with};

mod checkpoint;
mod step;
mod validate;

/// Why training ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum StopReason {
    /// All steps ran.
    Completed,
    /// Validation loss stopped improving.
    EarlyStopped {
        /// The step it stopped at.
        step: u64,
    },
}

/// What a run achieved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The method.
    pub method: Method,
    /// Optimizer steps taken (including steps before a resume).
    pub steps: u64,
    /// Why it ended.
    pub stopped: StopReason,
    /// Mean training loss of the last step.
    pub final_train_loss: f64,
    /// Validation loss at the end.
    pub final_valid_loss: Option<f64>,
    /// The best validation loss and its step; its adapter is the one saved.
    pub best_valid: Option<(u64, f64)>,
    /// Loss-carrying tokens trained in this process.
    pub trained_tokens: u64,
    /// Positions computed in this process (prompt and padding included).
    pub processed_tokens: u64,
    /// Wall time of this process's steps.
    pub seconds: f64,
    /// `trained_tokens / seconds`.
    pub trained_tokens_per_second: f64,
    /// `processed_tokens / seconds`.
    pub processed_tokens_per_second: f64,
    /// MLX's peak memory.
    pub peak_memory_bytes: u64,
    /// Trainable parameters.
    pub trainable_parameters: usize,
    /// Bytes of the saved adapter file.
    pub adapter_bytes: u64,
    /// Activation cache counters (hits, misses, disk), when it was on.
    #[serde(default)]
    pub activation_cache: Option<ActivationCacheStats>,
    /// How each step's rows were split into micro-batches (and, for `micro_batch: auto`,
    /// the budget and the probes' measured peak memory).
    #[serde(default)]
    pub batch: Option<BatchPlan>,
    /// Whether blocks were gradient-checkpointed.
    #[serde(default)]
    pub grad_checkpoint: bool,
}

/// Called after every optimizer step (progress bars, live logs).
pub type StepObserver<'a> = dyn FnMut(&StepRecord) + 'a;

/// Prepares `model` for `config.method`: attaches adapters (quantizing a float base for
/// QLoRA) or unfreezes everything for full fine-tuning. Returns the adapter spec.
pub fn prepare(model: &mut Llama, config: &TrainConfig) -> anyhow::Result<Option<AdapterSpec>> {
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    match config.method {
        Method::Full => {
            let quantized = (0..model.model.layers.len()).any(|l| {
                lora::block_linears(model, l)
                    .iter()
                    .any(|(_, lin)| lin.is_quantized())
            });
            if quantized {
                bail!(
                    "full fine-tuning needs a float base, but this model is quantized; load it dequantized or use method: qlora"
                );
            }
            model.unfreeze_parameters(true);
            Ok(None)
        }
        method => {
            let spec = lora::adapter_spec(&config.lora, method);
            if method == Method::Qlora {
                let q = QuantSpec {
                    group_size: config.quantize_group_size,
                    bits: config.quantize_bits,
                };
                if ![4, 8].contains(&q.bits) || ![32, 64].contains(&q.group_size) {
                    bail!(
                        "qlora quantizes to 4 or 8 bits with group size 32 or 64, not {} bits / group {}",
                        q.bits,
                        q.group_size
                    );
                }
                for l in 0..model.model.layers.len() {
                    for (_, linear) in lora::block_linears(model, l) {
                        if !linear.is_quantized() {
                            *linear = linear.quantize(q)?;
                        }
                    }
                }
            }
            lora::attach(model, &spec, config.seed)?;
            Ok(Some(spec))
        }
    }
}

/// The dtype to load a base model in for `method`: on a GPU (Metal) the frozen base runs in
/// bfloat16 while adapters, DoRA magnitudes and the loss stay float32 (mixed precision);
/// full fine-tuning trains every weight, so it keeps float32. On the CPU backend half
/// precision matmuls are 15-30x slower than float32 (`pipe doctor`, BENCHMARKS.md), so
/// everything is float32.
pub fn base_dtype(method: Method) -> mlx_rs::Dtype {
    let gpu = crate::linear::QuantKernel::for_default_device()
        == crate::linear::QuantKernel::QuantizedMatmul;
    base_dtype_for(method, gpu)
}

/// [`base_dtype`] for a given device kind (tested on both here, where only the CPU runs).
pub fn base_dtype_for(method: Method, gpu: bool) -> mlx_rs::Dtype {
    if gpu && method != Method::Full {
        mlx_rs::Dtype::Bfloat16
    } else {
        mlx_rs::Dtype::Float32
    }
}

/// The examples to train and validate on.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Training examples.
    pub train: &'a [TokenizedExample],
    /// Validation examples (may be empty: then the last adapter is kept).
    pub valid: &'a [TokenizedExample],
    /// The id padding positions get (they never carry loss).
    pub pad_id: u32,
}

/// Trains `model` (already [`prepare`]d) and writes the outputs into `out_dir`.
pub fn train(
    model: &mut Llama,
    spec: Option<&AdapterSpec>,
    data: TrainData<'_>,
    config: &TrainConfig,
    out_dir: &Path,
    resume: bool,
    observer: &mut StepObserver<'_>,
) -> anyhow::Result<TrainSummary> {
    let _peak_memory = crate::runtime::own_peak_memory();
    check(data, config)?;
    fs_err::create_dir_all(out_dir)?;
    let checkpoint_dir = out_dir.join("checkpoint");
    let resumed = if resume {
        resume_state(&checkpoint_dir)?
    } else {
        None
    };
    lora::set_training(model, true);
    model.grad_checkpoint = config.grad_checkpoint;
    let plan = match resumed.as_ref().and_then(|s| s.batch.clone()) {
        Some(plan) => plan,
        None => agree_on_plan(step::plan_batches(model, config, data.train, data.pad_id)?)?,
    };
    let mut run = Run::new(
        model,
        Setup {
            data,
            user_config: config,
            plan,
            out_dir,
            checkpoint_dir,
            resumed,
        },
    )?;
    mlx_rs::memory::reset_peak_memory()?;
    let mut stopped = StopReason::Completed;
    for step in run.start..run.config.iters {
        if run.step(model, step, spec, observer)? == Verdict::Stop {
            stopped = StopReason::EarlyStopped { step: step + 1 };
            break;
        }
    }
    lora::set_training(model, false);
    run.acts.persist();
    model.grad_checkpoint = false;
    if run.lead {
        // The run ended well: the last checkpoint stands without a next step to vouch for it.
        checkpoint::confirm(&run.checkpoint_dir)?;
    }
    run.summary(stopped)
}

/// The checkpoint to resume from. Over ranks, rank 0 reads it first (reading may repair an
/// interrupted swap), then the others read what it left, and all must see the same step:
/// ranks that resumed from different places would sum gradients of different weights.
fn resume_state(dir: &Path) -> anyhow::Result<Option<CheckpointState>> {
    let Some(group) = crate::distributed::world() else {
        return checkpoint::read_state(dir);
    };
    let lead_read = match group.rank() {
        0 => Some(checkpoint::read_state(dir)),
        _ => None,
    };
    // Every rank waits here until rank 0 has read (and maybe repaired) the checkpoint;
    // a failed read still joins, as -2, so that no rank waits for it forever.
    let step_of = |r: &anyhow::Result<Option<CheckpointState>>| match r {
        Ok(Some(s)) => s.step as i32,
        Ok(None) => -1,
        Err(_) => -2,
    };
    let mine = match lead_read {
        Some(read) => read,
        None => {
            let barrier = group.all_sum(&mlx_rs::Array::from_int(0))?;
            barrier.eval()?;
            checkpoint::read_state(dir)
        }
    };
    if group.rank() == 0 {
        let barrier = group.all_sum(&mlx_rs::Array::from_int(0))?;
        barrier.eval()?;
    }
    let steps = group.all_gather(&mlx_rs::Array::from_slice(&[step_of(&mine)], &[1]))?;
    steps.eval()?;
    let steps: Vec<i32> = steps.as_slice::<i32>().to_vec();
    let state = mine?;
    if steps.iter().any(|&s| s != steps[0]) {
        let seen: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(r, s)| match s {
                -1 => format!("rank {r}: none"),
                -2 => format!("rank {r}: unreadable"),
                s => format!("rank {r}: step {s}"),
            })
            .collect();
        bail!(
            "--resume over ranks needs the checkpoint in {} on a disk every rank shares, and the ranks see different ones ({}); copy rank 0's out folder to the others (or resume on one machine)",
            dir.display(),
            seen.join(", ")
        );
    }
    Ok(state)
}

/// Over ranks, every rank must split its steps alike: a measured `micro_batch: auto` may
/// differ between processes, so all take the smallest micro-batch any of them chose.
fn agree_on_plan(mut plan: BatchPlan) -> anyhow::Result<BatchPlan> {
    let Some(group) = crate::distributed::world() else {
        return Ok(plan);
    };
    let least = group.all_min(&mlx_rs::Array::from_int(plan.micro_batch as i32))?;
    least.eval()?;
    let least = usize::try_from(least.item_exact::<i32>())
        .unwrap_or(1)
        .max(1);
    if least != plan.micro_batch {
        plan.micro_batch = least;
        plan.grad_accum = (plan.effective_batch / least) as u32;
    }
    Ok(plan)
}

/// Refuses what cannot train.
fn check(data: TrainData<'_>, config: &TrainConfig) -> anyhow::Result<()> {
    if data.train.is_empty() {
        bail!("no training examples");
    }
    if let Some(group) = crate::distributed::world()
        && config.activation_cache.enabled
    {
        bail!(
            "the activation cache is per process and cannot serve {} ranks; turn `activation_cache` off for distributed training",
            group.size()
        );
    }
    if config.grad_checkpoint && config.method != Method::Full && config.lora.dropout > 0.0 {
        bail!(
            "grad_checkpoint recomputes each block in the backward pass, which would draw new dropout masks; set lora.dropout to 0 or turn grad_checkpoint off"
        );
    }
    Ok(())
}

/// What [`Run::new`] starts from.
struct Setup<'a> {
    data: TrainData<'a>,
    /// The config as given (what a checkpoint records).
    user_config: &'a TrainConfig,
    /// The micro-batch split.
    plan: BatchPlan,
    out_dir: &'a Path,
    checkpoint_dir: PathBuf,
    /// The checkpoint to continue from.
    resumed: Option<CheckpointState>,
}

/// A training run between its steps: the data, the optimizer and every counter.
struct Run<'a> {
    /// The config in force: `batch_size` and `grad_accum` as the micro-batch plan says.
    config: TrainConfig,
    user_config: &'a TrainConfig,
    plan: BatchPlan,
    data: TrainData<'a>,
    batch_spec: BatchSpec,
    batches: step::Batches<'a>,
    schedule: Schedule,
    optimizer: AdamW,
    early: EarlyStopping,
    guard: DivergenceGuard,
    /// The step log; only the lead rank writes one.
    log: Option<StepLog>,
    acts: ActivationCache<'a>,
    /// Whether this process writes the outputs (rank 0, or a single process).
    lead: bool,
    out_dir: &'a Path,
    checkpoint_dir: PathBuf,
    /// The first step to run (after a resumed checkpoint's).
    start: u64,
    /// The step of the last checkpoint whose next step passed the divergence guard (or
    /// the one resumed from).
    good_checkpoint: Option<u64>,
    /// The step of a checkpoint saved but not yet vouched for by a good next step.
    pending_checkpoint: Option<u64>,
    trainable_parameters: usize,
    totals: Totals,
}

/// Sums over this process's steps.
#[derive(Debug)]
struct Totals {
    trained: u64,
    processed: u64,
    seconds: f64,
    last_loss: f64,
    final_valid: Option<f64>,
}

impl<'a> Run<'a> {
    fn new(model: &mut Llama, setup: Setup<'a>) -> anyhow::Result<Self> {
        let Setup {
            data,
            user_config,
            plan,
            out_dir,
            checkpoint_dir,
            resumed,
        } = setup;
        let config = TrainConfig {
            batch_size: plan.micro_batch,
            grad_accum: plan.grad_accum,
            ..user_config.clone()
        };
        let batch_spec = BatchSpec {
            batch_size: config.batch_size.max(1),
            max_seq_len: config.max_seq_len,
            pad_multiple: config.pad_multiple,
            keep_partial: data.train.len() < config.batch_size,
        };
        let batches = step::Batches::new(data.train, batch_spec, config.seed);
        let schedule = Schedule {
            peak_lr: config.learning_rate,
            min_lr: config.min_lr,
            warmup_steps: config.warmup_steps,
            total_steps: config.iters,
            decay: config.schedule,
        };
        let mut optimizer = AdamW::new(config.optimizer);
        let mut early = EarlyStopping::new(config.patience, 0.0);
        let mut start = 0;
        let good_checkpoint = resumed.as_ref().map(|s| s.step);
        if let Some(state) = resumed {
            optimizer = checkpoint::restore(model, &config, &checkpoint_dir)?;
            start = state.step;
            if let Some((step, loss)) = state.best_valid {
                early.observe(step, loss);
            }
        }
        let lead = crate::distributed::is_lead();
        let log = match lead {
            true => Some(StepLog::open_at(&out_dir.join("train_log.jsonl"), start)?),
            false => None,
        };
        let guard = DivergenceGuard::new(config.divergence_factor, 10)
            .with_vocab(usize::try_from(model.config.vocab_size).unwrap_or(0));
        let trainable_parameters = model
            .trainable_parameters()
            .flatten()
            .values()
            .map(|a| a.size())
            .sum();
        let acts = ActivationCache::new(
            model,
            &config.activation_cache,
            CacheSetup {
                spec: batch_spec,
                share_prefix: config.share_prefix,
                pad_id: data.pad_id,
                train: data.train,
                valid: data.valid,
            },
        )?;
        Ok(Self {
            config,
            user_config,
            plan,
            data,
            batch_spec,
            batches,
            schedule,
            optimizer,
            early,
            guard,
            log,
            acts,
            lead,
            out_dir,
            checkpoint_dir,
            start,
            good_checkpoint,
            pending_checkpoint: None,
            trainable_parameters,
            totals: Totals {
                trained: 0,
                processed: 0,
                seconds: 0.0,
                last_loss: f64::NAN,
                final_valid: None,
            },
        })
    }

    /// Runs optimizer step `step` (0-based), then validates, logs and saves as the config
    /// says. Returns early stopping's verdict.
    fn step(
        &mut self,
        model: &mut Llama,
        step: u64,
        spec: Option<&AdapterSpec>,
        observer: &mut StepObserver<'_>,
    ) -> anyhow::Result<Verdict> {
        let began = Instant::now();
        let config = &self.config;
        // Each rank draws its own dropout masks (rank 0's are a single process's).
        let rank = crate::distributed::world().map_or(0, |g| g.rank() as u64);
        mlx_rs::random::seed(
            config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(step)
                .wrapping_add(rank << 32),
        )?;
        let lr = self.schedule.lr_at(step) as f32;
        let acc = step::accumulate(
            model,
            &mut self.batches,
            &mut self.acts,
            config,
            self.data.pad_id,
            step,
        )?;
        let (tokens, positions) = (acc.tokens, acc.positions);
        let applied = step::apply(model, &mut self.optimizer, acc, config.max_grad_norm, lr)?;
        let elapsed = began.elapsed().as_secs_f64();
        self.totals.seconds += elapsed;
        self.totals.trained += tokens as u64;
        self.totals.processed += positions as u64;
        self.totals.last_loss = applied.loss;
        let done = step + 1;
        if let Err(divergence) = self.guard.observe(done, applied.loss, applied.grad_norm) {
            return Err(self.diverged(divergence));
        }
        if let Some(saved) = self.pending_checkpoint.take() {
            if self.lead {
                checkpoint::confirm(&self.checkpoint_dir)?;
            }
            self.good_checkpoint = Some(saved);
        }
        let validate = (self.config.valid_every > 0
            && done.is_multiple_of(self.config.valid_every))
            || done == self.config.iters;
        let (valid_loss, verdict) = if validate && !self.data.valid.is_empty() {
            self.validate(model, done)?
        } else {
            (None, Verdict::Wait)
        };
        let record = StepRecord {
            step: done,
            loss: applied.loss,
            lr: f64::from(lr),
            seconds: elapsed,
            trained_tokens: tokens as u64,
            processed_tokens: positions as u64,
            trained_tokens_per_second: tokens as f64 / elapsed,
            processed_tokens_per_second: positions as f64 / elapsed,
            peak_memory_bytes: mlx_rs::memory::peak_memory()? as u64,
            grad_norm: applied.grad_norm,
            valid_loss,
            cached_positions: self.acts.take_step_skipped(),
        };
        if let Some(log) = &mut self.log {
            log.write(&record)?;
            observer(&record);
        }
        self.save(model, spec, done, validate, verdict)?;
        Ok(verdict)
    }

    /// The error for a divergence: this step's update is saved nowhere, a checkpoint whose
    /// weights gave this step's bad loss is dropped for the one before it, and the message
    /// says where training can continue from.
    fn diverged(&mut self, divergence: super::guard::Divergence) -> anyhow::Error {
        if self.pending_checkpoint.take().is_some()
            && self.lead
            && let Err(e) = checkpoint::roll_back(&self.checkpoint_dir)
        {
            return anyhow::anyhow!(
                "{divergence}; and the checkpoint saved before it could not be dropped: {e:#}"
            );
        }
        match self.good_checkpoint {
            Some(step) => anyhow::anyhow!(
                "{divergence} (now {:e}); the last good checkpoint (step {step}) is kept in {}: lower it and continue from there with `pipe train --config FILE --resume`, or start over",
                self.config.learning_rate,
                self.checkpoint_dir.display()
            ),
            None => anyhow::anyhow!(
                "{divergence} (now {:e}); this run kept no checkpoint (none was saved before the loss went bad; `save_every` saves more often): lower it and start over",
                self.config.learning_rate
            ),
        }
    }

    /// The validation loss after step `done` (dropout off), and early stopping's verdict.
    fn validate(&mut self, model: &mut Llama, done: u64) -> anyhow::Result<(Option<f64>, Verdict)> {
        lora::set_training(model, false);
        let loss = validation_loss_with(
            model,
            self.data.valid,
            &self.batch_spec,
            self.data.pad_id,
            self.config.valid_batches,
            Some(&mut self.acts),
        )?;
        lora::set_training(model, true);
        self.totals.final_valid = Some(loss);
        Ok((Some(loss), self.early.observe(done, loss)))
    }

    /// Saves the adapter when it is the best so far (or the last, without validation data),
    /// and the checkpoint every `save_every` steps and at every validation.
    fn save(
        &mut self,
        model: &Llama,
        spec: Option<&AdapterSpec>,
        done: u64,
        validated: bool,
        verdict: Verdict,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let last = self.data.valid.is_empty() && done == config.iters;
        // The other ranks' weights are the lead's: one writer, no races on the out folder.
        // They keep the checkpoint bookkeeping, so their messages name the same steps.
        if (verdict == Verdict::Improved || last) && self.lead {
            checkpoint::save_adapter(model, spec, config.method, self.out_dir)?;
        }
        if (config.save_every > 0 && done.is_multiple_of(config.save_every)) || validated {
            if !self.lead {
                self.pending_checkpoint = Some(done);
                return Ok(());
            }
            self.acts.persist();
            let state = CheckpointState {
                step: done,
                best_valid: self.early.best(),
                config: self.user_config.clone(),
                batch: Some(self.plan.clone()),
                files: Default::default(),
            };
            checkpoint::save(model, &self.optimizer, &self.checkpoint_dir, &state)?;
            self.pending_checkpoint = Some(done);
        }
        Ok(())
    }

    /// The run's summary, once it ended for `stopped`.
    fn summary(self, stopped: StopReason) -> anyhow::Result<TrainSummary> {
        let Totals {
            trained,
            processed,
            seconds,
            last_loss,
            final_valid,
        } = self.totals;
        let adapter_bytes =
            std::fs::metadata(self.out_dir.join("adapters.safetensors")).map_or(0, |m| m.len());
        Ok(TrainSummary {
            method: self.config.method,
            steps: self.optimizer.steps(),
            stopped,
            final_train_loss: last_loss,
            final_valid_loss: final_valid,
            best_valid: self.early.best(),
            trained_tokens: trained,
            processed_tokens: processed,
            seconds,
            trained_tokens_per_second: trained as f64 / seconds.max(1e-9),
            processed_tokens_per_second: processed as f64 / seconds.max(1e-9),
            peak_memory_bytes: mlx_rs::memory::peak_memory()? as u64,
            trainable_parameters: self.trainable_parameters,
            adapter_bytes,
            activation_cache: self.acts.stats(),
            batch: Some(self.plan),
            grad_checkpoint: self.config.grad_checkpoint,
        })
    }
}

#[cfg(test)]
mod tests;
