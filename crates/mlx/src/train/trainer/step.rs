//! One optimizer step: its rows, split into micro-batches; their losses and gradients,
//! accumulated weighted by loss tokens; then clipping, the AdamW update and evaluation.
//!
//! The rows of a step depend only on the seed, the epoch and the step's index, so a resumed
//! run takes the batches an uninterrupted one would.

use crate::distributed::Group;
use crate::distributed::reduce::{BUCKET_BYTES, all_sum_gradients};
use crate::models::llama::Llama;
use crate::train::activations::{ActivationCache, Set};
use crate::train::batch::{BatchSpec, TokenizedExample, pad_batch, plan_epoch};
use crate::train::loss::{LossBatch, masked_lm_loss};
use crate::train::micro::{self, BatchPlan, MicroBatch, ProbeSpec};
use crate::train::optim::{AdamW, clip_grad_norm};
use anyhow::bail;
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::{Array, array};

use super::TrainConfig;

/// The training examples of a run and the micro-batches they form, epoch by epoch.
pub(super) struct Batches<'a> {
    examples: &'a [TokenizedExample],
    lengths: Vec<usize>,
    spec: BatchSpec,
    seed: u64,
    per_epoch: usize,
    /// The epoch whose plan is in use, and the plan.
    epoch: Option<(u64, Vec<Vec<usize>>)>,
}

impl<'a> Batches<'a> {
    /// The batches of `examples` shaped by `spec`, shuffled per epoch from `seed`.
    pub(super) fn new(examples: &'a [TokenizedExample], spec: BatchSpec, seed: u64) -> Self {
        let lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
        let per_epoch = plan_epoch(&lengths, &spec, seed, 0).len().max(1);
        Self {
            examples,
            lengths,
            spec,
            seed,
            per_epoch,
            epoch: None,
        }
    }

    /// The example indexes of micro-batch `index` (counted over the whole run).
    fn rows(&mut self, index: u64) -> &[usize] {
        let epoch = index / self.per_epoch as u64;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let plan = plan_epoch(&self.lengths, &self.spec, self.seed, epoch);
            self.epoch = Some((epoch, plan));
        }
        let plan = &self.epoch.as_ref().expect("set above").1;
        &plan[(index % self.per_epoch as u64) as usize]
    }
}

/// What a step's micro-batches summed up to.
pub(super) struct Accumulated {
    /// Gradients, each weighted by its micro-batch's loss tokens.
    grads: FlattenedModuleParam,
    /// Losses, each weighted by its micro-batch's loss tokens.
    loss_sum: Array,
    /// Loss-carrying tokens of the step.
    pub(super) tokens: usize,
    /// Positions computed (prompt and padding included).
    pub(super) positions: usize,
}

/// Runs the micro-batches of step `step` and accumulates their losses and gradients.
/// Token-weighted: the step's loss and gradient are means over all loss tokens of its
/// micro-batches, not means of per-batch means.
pub(super) fn accumulate(
    model: &mut Llama,
    batches: &mut Batches<'_>,
    acts: &mut ActivationCache<'_>,
    config: &TrainConfig,
    pad_id: u32,
    step: u64,
) -> anyhow::Result<Accumulated> {
    let mut value_and_grad = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    let accum = u64::from(config.grad_accum.max(1));
    let (examples, spec) = (batches.examples, batches.spec);
    let mut summed: Option<FlattenedModuleParam> = None;
    let (mut loss_sum, mut tokens, mut positions) = (array!(0.0f32), 0usize, 0usize);
    let world = crate::distributed::world();
    for micro in 0..accum {
        let picked = rank_share(batches.rows(step * accum + micro), world);
        let rows: Vec<&TokenizedExample> = picked.iter().map(|&i| &examples[i]).collect();
        let padded = pad_batch(&rows, &spec, pad_id);
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
        let weight = array!(batch.loss_tokens as f32);
        loss_sum = loss_sum.add(loss[0].multiply(&weight)?)?;
        summed = Some(match summed {
            None => scale_all(grads, &weight)?,
            Some(acc) => add_scaled(acc, grads, &weight)?,
        });
        tokens += batch.loss_tokens;
        positions += batch.processed_tokens;
        if config.grad_accum > 1 {
            // Evaluate each micro-batch before building the next: left lazy, all of a
            // step's micro-batch graphs would be alive at once, and accumulation would
            // save no memory.
            let mut pending: Vec<&Array> = vec![&loss_sum];
            pending.extend(summed.iter().flat_map(|g| g.values()));
            mlx_rs::transforms::eval(pending)?;
        }
    }
    if let Some(group) = world {
        // This rank's rows may all have been empty; it still joins the sums.
        let grads = match summed {
            Some(g) => g,
            None => zero_gradients(model)?,
        };
        summed = Some(all_sum_gradients(group, grads, BUCKET_BYTES)?);
        (loss_sum, tokens, positions) = sum_counts(group, &loss_sum, tokens, positions)?;
    }
    let Some(grads) = summed.filter(|_| tokens > 0) else {
        bail!("step {step} had no loss-carrying tokens; are the completions empty?");
    };
    Ok(Accumulated {
        grads,
        loss_sum,
        tokens,
        positions,
    })
}

/// This rank's part of a micro-batch's rows: a contiguous share, all of them in a single
/// process. Token-weighted sums make any split give the same step as one process.
fn rank_share<'r>(rows: &'r [usize], world: Option<&Group>) -> &'r [usize] {
    match world {
        None => rows,
        Some(g) => {
            let (n, size, rank) = (rows.len(), g.size(), g.rank());
            &rows[n * rank / size..n * (rank + 1) / size]
        }
    }
}

/// Zeros shaped like every trainable parameter: the gradient of a rank with no rows.
fn zero_gradients(model: &Llama) -> Result<FlattenedModuleParam, Exception> {
    model
        .trainable_parameters()
        .flatten()
        .into_iter()
        .map(|(k, p)| mlx_rs::ops::zeros_like(p).map(|z| (k, z)))
        .collect()
}

/// The step's loss sum, loss tokens and positions summed over every rank.
fn sum_counts(
    group: &Group,
    loss_sum: &Array,
    tokens: usize,
    positions: usize,
) -> anyhow::Result<(Array, usize, usize)> {
    // Counts go as integers: float32 is exact only up to 2^24.
    let counts = Array::from_slice(&[tokens as i32, positions as i32], &[2]);
    let (loss, counts) = (group.all_sum(loss_sum)?, group.all_sum(&counts)?);
    mlx_rs::transforms::eval([&loss, &counts])?;
    let c: &[i32] = counts.as_slice();
    Ok((
        loss,
        usize::try_from(c[0]).unwrap_or(0),
        usize::try_from(c[1]).unwrap_or(0),
    ))
}

/// The outcome of an applied step.
pub(super) struct Applied {
    /// The step's mean training loss.
    pub(super) loss: f64,
    /// The global gradient norm before clipping, when clipping is on.
    pub(super) grad_norm: Option<f64>,
}

/// Turns the accumulated sums into means, clips them to `max_grad_norm`, updates `model`
/// with learning rate `lr`, and evaluates the parameters and the optimizer state.
pub(super) fn apply(
    model: &mut Llama,
    optimizer: &mut AdamW,
    acc: Accumulated,
    max_grad_norm: Option<f32>,
    lr: f32,
) -> anyhow::Result<Applied> {
    let inv = array!(1.0 / acc.tokens as f32);
    let grads = scale_all(acc.grads, &inv)?;
    let (grads, norm) = match max_grad_norm {
        Some(max) => {
            let (g, n) = clip_grad_norm(grads, max)?;
            (g, Some(n))
        }
        None => (grads, None),
    };
    optimizer.update(model, &grads, lr)?;
    let loss = acc.loss_sum.multiply(&inv)?;
    let mut to_eval: Vec<&Array> = vec![&loss];
    let params = model.trainable_parameters().flatten();
    to_eval.extend(params.values().copied());
    to_eval.extend(optimizer.state_arrays());
    if let Some(n) = &norm {
        to_eval.push(n);
    }
    mlx_rs::transforms::eval(to_eval)?;
    Ok(Applied {
        loss: f64::from(loss.item_exact::<f32>()),
        grad_norm: norm.map(|n| f64::from(n.item_exact::<f32>())),
    })
}

/// Splits a step's `batch_size × grad_accum` rows into micro-batches (see [`micro`]).
pub(super) fn plan_batches(
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

fn scale_all(grads: FlattenedModuleParam, by: &Array) -> Result<FlattenedModuleParam, Exception> {
    grads
        .into_iter()
        .map(|(k, g)| g.multiply(by).map(|g| (k, g)))
        .collect()
}

fn add_scaled(
    mut acc: FlattenedModuleParam,
    grads: FlattenedModuleParam,
    by: &Array,
) -> Result<FlattenedModuleParam, Exception> {
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
