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

use super::activations::{ActivationCache, ActivationCacheStats, CacheSetup, Set};
use super::adapters;
use super::batch::{BatchSpec, TokenizedExample, pad_batch, plan_epoch};
use super::guard::{DivergenceGuard, EarlyStopping, Verdict};
use super::log::{StepLog, StepRecord};
use super::lora::{self, AdapterSpec, Method};
use super::loss::{LossBatch, masked_lm_loss};
use super::micro::{self, BatchPlan, MicroBatch, ProbeSpec};
use super::optim::{AdamW, clip_grad_norm};
use super::schedule::Schedule;
use crate::linear::QuantSpec;
use crate::models::llama::Llama;
use anyhow::{Context, bail};
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::{Array, array};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

pub use pipe_schema::train::TrainConfig;
pub use validate::{validation_loss, validation_loss_with};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    best_valid: Option<(u64, f64)>,
    config: TrainConfig,
    /// The micro-batch split in use, so a resumed run replays the same batches.
    #[serde(default)]
    batch: Option<BatchPlan>,
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
    let (train_set, valid_set, pad_id) = (data.train, data.valid, data.pad_id);
    if train_set.is_empty() {
        bail!("no training examples");
    }
    if config.grad_checkpoint && config.method != Method::Full && config.lora.dropout > 0.0 {
        bail!(
            "grad_checkpoint recomputes each block in the backward pass, which would draw new dropout masks; set lora.dropout to 0 or turn grad_checkpoint off"
        );
    }
    fs_err::create_dir_all(out_dir)?;
    let checkpoint = out_dir.join("checkpoint");
    let resumed: Option<CheckpointState> = if resume && checkpoint.join("state.json").is_file() {
        Some(
            serde_json::from_str(&fs_err::read_to_string(checkpoint.join("state.json"))?)
                .context("the checkpoint's state.json is damaged")?,
        )
    } else {
        None
    };
    lora::set_training(model, true);
    model.grad_checkpoint = config.grad_checkpoint;
    let plan = match resumed.as_ref().and_then(|s| s.batch.clone()) {
        Some(plan) => plan,
        None => plan_batches(model, config, train_set, pad_id)?,
    };
    let user_config = config;
    let config = &TrainConfig {
        batch_size: plan.micro_batch,
        grad_accum: plan.grad_accum,
        ..config.clone()
    };
    let batch_spec = BatchSpec {
        batch_size: config.batch_size.max(1),
        max_seq_len: config.max_seq_len,
        pad_multiple: config.pad_multiple,
        keep_partial: train_set.len() < config.batch_size,
    };
    let lengths: Vec<usize> = train_set.iter().map(TokenizedExample::len).collect();
    let batches_per_epoch = plan_epoch(&lengths, &batch_spec, config.seed, 0)
        .len()
        .max(1);
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
    if let Some(state) = resumed {
        load_trainables(model, &checkpoint.join("trainable.safetensors"))?;
        optimizer = AdamW::load(config.optimizer, &checkpoint.join("optimizer.safetensors"))?;
        start = state.step;
        if let Some((step, loss)) = state.best_valid {
            early.observe(step, loss);
        }
    }
    let mut log = StepLog::open(&out_dir.join("train_log.jsonl"), start > 0)?;
    let mut guard = DivergenceGuard::new(config.divergence_factor, 10);
    let trainable_parameters = model
        .trainable_parameters()
        .flatten()
        .values()
        .map(|a| a.size())
        .sum();
    let mut acts = ActivationCache::new(
        model,
        &config.activation_cache,
        CacheSetup {
            spec: batch_spec,
            share_prefix: config.share_prefix,
            pad_id,
            train: train_set,
            valid: valid_set,
        },
    )?;

    let mut value_and_grad = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    let mut epoch_plan: Option<(u64, Vec<Vec<usize>>)> = None;
    let (mut trained, mut processed, mut seconds) = (0u64, 0u64, 0f64);
    let mut last_loss = f64::NAN;
    let mut final_valid = None;
    let mut stopped = StopReason::Completed;
    mlx_rs::memory::reset_peak_memory()?;

    for step in start..config.iters {
        let began = Instant::now();
        mlx_rs::random::seed(config.seed.wrapping_mul(1_000_003).wrapping_add(step))?;
        let lr = schedule.lr_at(step) as f32;
        let mut summed: Option<FlattenedModuleParam> = None;
        let (mut loss_sum, mut step_tokens, mut step_positions) = (array!(0.0f32), 0usize, 0usize);
        for micro in 0..u64::from(config.grad_accum.max(1)) {
            let index = step * u64::from(config.grad_accum.max(1)) + micro;
            let epoch = index / batches_per_epoch as u64;
            if epoch_plan.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_plan = Some((epoch, plan_epoch(&lengths, &batch_spec, config.seed, epoch)));
            }
            let plan = &epoch_plan.as_ref().expect("set above").1;
            let picked = &plan[(index % batches_per_epoch as u64) as usize];
            let rows: Vec<&TokenizedExample> = picked.iter().map(|&i| &train_set[i]).collect();
            let padded = pad_batch(&rows, &batch_spec, pad_id);
            let batch = if config.share_prefix {
                LossBatch::from_padded_shared(&padded)
            } else {
                LossBatch::from_padded(&padded)
            };
            if batch.loss_tokens == 0 {
                continue;
            }
            let batch = acts.attach(model, Set::Train, picked, &padded, batch)?;
            let (loss, grads) = value_and_grad(model, &batch)?;
            // Token-weighted accumulation: the step's loss and gradient are means over all
            // loss tokens of its micro-batches, not means of per-batch means.
            let weight = array!(batch.loss_tokens as f32);
            loss_sum = loss_sum.add(loss[0].multiply(&weight)?)?;
            summed = Some(match summed {
                None => scale_all(grads, &weight)?,
                Some(acc) => add_scaled(acc, grads, &weight)?,
            });
            step_tokens += batch.loss_tokens;
            step_positions += batch.processed_tokens;
            if config.grad_accum > 1 {
                // Evaluate each micro-batch before building the next: left lazy, all of a
                // step's micro-batch graphs would be alive at once, and accumulation would
                // save no memory.
                let mut pending: Vec<&Array> = vec![&loss_sum];
                pending.extend(summed.iter().flat_map(|g| g.values()));
                mlx_rs::transforms::eval(pending)?;
            }
        }
        let Some(grads) = summed else {
            bail!("step {step} had no loss-carrying tokens; are the completions empty?");
        };
        let inv = array!(1.0 / step_tokens as f32);
        let grads = scale_all(grads, &inv)?;
        let (grads, norm) = match config.max_grad_norm {
            Some(max) => {
                let (g, n) = clip_grad_norm(grads, max)?;
                (g, Some(n))
            }
            None => (grads, None),
        };
        optimizer.update(model, &grads, lr)?;
        let loss = loss_sum.multiply(&inv)?;
        let mut to_eval: Vec<&Array> = vec![&loss];
        let params = model.trainable_parameters().flatten();
        to_eval.extend(params.values().copied());
        to_eval.extend(optimizer.state_arrays());
        if let Some(n) = &norm {
            to_eval.push(n);
        }
        mlx_rs::transforms::eval(to_eval)?;
        drop(params);
        last_loss = f64::from(loss.item_exact::<f32>());
        let elapsed = began.elapsed().as_secs_f64();
        seconds += elapsed;
        trained += step_tokens as u64;
        processed += step_positions as u64;
        let done = step + 1;

        if let Err(divergence) = guard.observe(done, last_loss) {
            bail!(
                "{divergence}; the last good checkpoint is in {}",
                checkpoint.display()
            );
        }
        let validate =
            (config.valid_every > 0 && done % config.valid_every == 0) || done == config.iters;
        let mut valid_loss = None;
        let mut verdict = Verdict::Wait;
        if validate && !valid_set.is_empty() {
            lora::set_training(model, false);
            let v = validation_loss_with(
                model,
                valid_set,
                &batch_spec,
                pad_id,
                config.valid_batches,
                Some(&mut acts),
            )?;
            lora::set_training(model, true);
            valid_loss = Some(v);
            final_valid = Some(v);
            verdict = early.observe(done, v);
        }
        let record = StepRecord {
            step: done,
            loss: last_loss,
            lr: f64::from(lr),
            seconds: elapsed,
            trained_tokens: step_tokens as u64,
            processed_tokens: step_positions as u64,
            trained_tokens_per_second: step_tokens as f64 / elapsed,
            processed_tokens_per_second: step_positions as f64 / elapsed,
            peak_memory_bytes: mlx_rs::memory::peak_memory()? as u64,
            grad_norm: norm.map(|n| f64::from(n.item_exact::<f32>())),
            valid_loss,
            cached_positions: acts.take_step_skipped(),
        };
        log.write(&record)?;
        observer(&record);

        let save_now = (config.save_every > 0 && done % config.save_every == 0) || validate;
        if verdict == Verdict::Improved || (valid_set.is_empty() && done == config.iters) {
            if let Some(spec) = spec {
                adapters::save_mlx_lm(model, spec, config.method, out_dir)?;
                adapters::save_peft(model, spec, &out_dir.join("peft"))?;
            } else {
                adapters::save_full(model, out_dir)?;
            }
        }
        if save_now {
            acts.persist();
            save_checkpoint(
                model,
                &optimizer,
                &checkpoint,
                &CheckpointState {
                    step: done,
                    best_valid: early.best(),
                    config: user_config.clone(),
                    batch: Some(plan.clone()),
                },
            )?;
        }
        if verdict == Verdict::Stop {
            stopped = StopReason::EarlyStopped { step: done };
            break;
        }
    }
    lora::set_training(model, false);
    acts.persist();
    model.grad_checkpoint = false;
    let adapter_bytes =
        std::fs::metadata(out_dir.join("adapters.safetensors")).map_or(0, |m| m.len());
    Ok(TrainSummary {
        method: config.method,
        steps: optimizer.steps(),
        stopped,
        final_train_loss: last_loss,
        final_valid_loss: final_valid,
        best_valid: early.best(),
        trained_tokens: trained,
        processed_tokens: processed,
        seconds,
        trained_tokens_per_second: trained as f64 / seconds.max(1e-9),
        processed_tokens_per_second: processed as f64 / seconds.max(1e-9),
        peak_memory_bytes: mlx_rs::memory::peak_memory()? as u64,
        trainable_parameters,
        adapter_bytes,
        activation_cache: acts.stats(),
        batch: Some(plan),
        grad_checkpoint: config.grad_checkpoint,
    })
}

/// Splits a step's `batch_size × grad_accum` rows into micro-batches (see [`micro`]).
fn plan_batches(
    model: &mut Llama,
    config: &TrainConfig,
    train_set: &[TokenizedExample],
    pad_id: u32,
) -> anyhow::Result<BatchPlan> {
    let effective = config.batch_size.max(1) * config.grad_accum.max(1) as usize;
    let fixed = |micro_batch: usize| BatchPlan {
        micro_batch,
        grad_accum: (effective / micro_batch) as u32,
        effective_batch: effective,
        memory_budget_bytes: None,
        probe_peak_bytes: None,
        probes: Vec::new(),
    };
    match config.micro_batch {
        None => Ok(fixed(config.batch_size.max(1))),
        Some(MicroBatch::Value(n)) if effective.is_multiple_of(n) => Ok(fixed(n)),
        Some(MicroBatch::Value(n)) => bail!(
            "micro_batch {n} does not divide the effective batch of {effective} rows (batch_size × grad_accum)"
        ),
        Some(MicroBatch::Auto) => {
            let budget = match config.memory_budget_mb {
                Some(mb) => mb << 20,
                None => micro::default_budget(),
            };
            micro::choose(
                model,
                &ProbeSpec {
                    examples: train_set,
                    max_seq_len: config.max_seq_len,
                    pad_multiple: config.pad_multiple,
                    share_prefix: config.share_prefix,
                    pad_id,
                },
                effective,
                budget,
            )
        }
    }
}

fn scale_all(
    grads: FlattenedModuleParam,
    by: &Array,
) -> Result<FlattenedModuleParam, mlx_rs::error::Exception> {
    grads
        .into_iter()
        .map(|(k, g)| g.multiply(by).map(|g| (k, g)))
        .collect()
}

fn add_scaled(
    mut acc: FlattenedModuleParam,
    grads: FlattenedModuleParam,
    by: &Array,
) -> Result<FlattenedModuleParam, mlx_rs::error::Exception> {
    for (k, g) in grads {
        let scaled = g.multiply(by)?;
        let sum = match acc.remove(&k) {
            Some(a) => a.add(scaled)?,
            None => scaled,
        };
        acc.insert(k, sum);
    }
    Ok(acc)
}

fn save_trainables(model: &Llama, path: &Path) -> anyhow::Result<()> {
    let params = model.trainable_parameters().flatten();
    super::safetensors::write(
        path,
        params.iter().map(|(k, v)| (k.as_ref(), *v)),
        &std::collections::HashMap::new(),
    )
}

fn load_trainables(model: &mut Llama, path: &Path) -> anyhow::Result<()> {
    let saved = Array::load_safetensors(path)
        .map_err(|e| anyhow::anyhow!("cannot read checkpoint {}: {e}", path.display()))?;
    let mut params = model.parameters_mut().flatten();
    for (name, value) in saved {
        let slot = params.get_mut(name.as_str()).with_context(|| {
            format!("{}: `{name}` is not a parameter of this model (was the checkpoint made with other settings?)", path.display())
        })?;
        **slot = value;
    }
    Ok(())
}

/// Writes the checkpoint into a fresh folder and swaps it in, so a crash mid-save keeps the
/// previous checkpoint whole.
fn save_checkpoint(
    model: &Llama,
    optimizer: &AdamW,
    dir: &Path,
    state: &CheckpointState,
) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .tempdir_in(parent)?;
    save_trainables(model, &staging.path().join("trainable.safetensors"))?;
    optimizer
        .save(&staging.path().join("optimizer.safetensors"))
        .context("cannot save the optimizer state")?;
    pipe_engine::atomic_write::write_json(&staging.path().join("state.json"), state)?;
    let staged = staging.keep();
    let old = parent.join(".checkpoint-old");
    if dir.exists() {
        let _ = fs_err::remove_dir_all(&old);
        fs_err::rename(dir, &old)?;
    }
    fs_err::rename(&staged, dir)?;
    let _ = fs_err::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests;
