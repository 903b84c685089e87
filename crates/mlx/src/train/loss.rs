//! The masked causal-LM loss, computing the LM head only where loss is taken.
//!
//! With a 49k vocabulary the LM head is the largest matmul in a small model. Prompt tokens
//! and padding carry no loss, so their logits are never needed: the hidden states at
//! loss-carrying positions are gathered first and only those rows go through the head.
//! The result equals the full-logits loss exactly (same rows, same math).
//!
//! Shared prefixes: instruction data rendered through a chat template starts every row
//! with the same tokens (the system prompt, the task preamble). When all rows of a batch
//! share a prefix that carries no loss, it is run once as a batch of one; its keys and
//! values are broadcast to every row, and the rows run only their suffixes, attending to
//! the prefix through the KV cache. The broadcast's gradient is the sum over rows, so
//! losses and gradients equal the plain path's; only the repeated work is gone.
//!
//! Cached block inputs: a batch may instead start at a block, from hidden states the
//! activation cache ([`super::activations`]) kept ([`BlockInputs`]). This module does not
//! depend on the cache; the cache builds on the batch types here.

use super::batch::PaddedBatch;
use crate::models::llama::Llama;
use mlx_rs::Array;
use mlx_rs::error::Exception;

/// A batch on the device: inputs plus the flat indexes and targets of loss positions.
#[derive(Debug, Clone)]
pub struct LossBatch {
    /// `[rows, seq]` input ids.
    pub inputs: Array,
    /// `[n]` flat indexes `row * seq + position` of loss-carrying positions.
    pub positions: Array,
    /// `[n]` target ids at those positions.
    pub targets: Array,
    /// `n`.
    pub loss_tokens: usize,
    /// Positions computed: `prefix + rows * suffix`, or `rows * seq` without a prefix.
    pub processed_tokens: usize,
    /// `[1, P]` tokens every row starts with, run once (see the module documentation).
    pub prefix: Option<Array>,
    /// Cached hidden states that replace the tokens up to a block (see `activations`).
    pub cached: Option<BlockInputs>,
}

/// Hidden states entering block `block` for a batch, replacing its tokens (the activation
/// cache assembles them; see [`super::activations`]).
#[derive(Debug, Clone)]
pub struct BlockInputs {
    /// The first block to run.
    pub block: usize,
    /// `[1, P, hidden]` states of the shared prefix, when the batch has one.
    pub prefix: Option<Array>,
    /// `[rows, suffix, hidden]` states of each row's own positions, zero-padded.
    pub rows: Array,
}

impl BlockInputs {
    /// Final hidden states `[rows, suffix, hidden]` (after the final norm), as
    /// [`Llama::hidden_states`] gives them for the batch's tokens.
    pub fn hidden_states(&self, model: &mut Llama) -> Result<Array, Exception> {
        let blocks = self.block..model.model.layers.len();
        let h = match &self.prefix {
            None => model.run_blocks(self.rows.clone(), blocks, None, None)?,
            Some(p) => {
                let mut cache = model.new_cache();
                model.run_blocks(p.clone(), blocks.clone(), Some(&mut cache), None)?;
                let mut shared = cache.broadcast_batch(self.rows.shape()[0])?;
                model.run_blocks(self.rows.clone(), blocks, Some(&mut shared), None)?
            }
        };
        model.final_norm(&h)
    }
}

/// Shorter shared prefixes are not worth a separate pass.
pub const MIN_SHARED_PREFIX: usize = 8;

impl LossBatch {
    /// Moves a host batch to MLX arrays, without prefix sharing.
    pub fn from_padded(batch: &PaddedBatch) -> Self {
        Self::build(batch, 0)
    }

    /// Moves a host batch to MLX arrays, running the rows' common loss-free prefix once
    /// when it is at least [`MIN_SHARED_PREFIX`] tokens long.
    pub fn from_padded_shared(batch: &PaddedBatch) -> Self {
        let p = shared_prefix_len(batch);
        Self::build(batch, if p >= MIN_SHARED_PREFIX { p } else { 0 })
    }

    fn build(batch: &PaddedBatch, prefix: usize) -> Self {
        let (rows, seq) = (batch.rows, batch.seq);
        let suffix = seq - prefix;
        let mut inputs = Vec::with_capacity(rows * suffix);
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for r in 0..rows {
            inputs.extend_from_slice(&batch.inputs[r * seq + prefix..(r + 1) * seq]);
            for j in prefix..seq {
                let at = r * seq + j;
                if batch.mask[at] > 0.0 {
                    positions.push((r * suffix + j - prefix) as i32);
                    targets.push(batch.targets[at]);
                }
            }
        }
        let n = positions.len() as i32;
        Self {
            inputs: Array::from_slice(&inputs, &[rows as i32, suffix as i32]),
            positions: Array::from_slice(&positions, &[n]),
            targets: Array::from_slice(&targets, &[n]),
            loss_tokens: positions.len(),
            processed_tokens: prefix + rows * suffix,
            prefix: (prefix > 0)
                .then(|| Array::from_slice(&batch.inputs[..prefix], &[1, prefix as i32])),
            cached: None,
        }
    }
}

/// The longest prefix all rows share that carries no loss and leaves every row at least
/// one token of its own.
pub fn shared_prefix_len(batch: &PaddedBatch) -> usize {
    if batch.rows < 2 {
        return 0;
    }
    let seq = batch.seq;
    let mut p = batch
        .lengths
        .iter()
        .copied()
        .min()
        .unwrap_or(0)
        .saturating_sub(1);
    for r in 0..batch.rows {
        let row = &batch.inputs[r * seq..r * seq + p];
        let first = &batch.inputs[..p];
        p = row.iter().zip(first).take_while(|(a, b)| a == b).count();
        if let Some(loss_at) = batch.mask[r * seq..r * seq + p]
            .iter()
            .position(|m| *m > 0.0)
        {
            p = loss_at;
        }
    }
    p
}

/// Mean cross-entropy over the loss positions of `batch`.
pub fn masked_lm_loss(model: &mut Llama, batch: &LossBatch) -> Result<Array, Exception> {
    let hidden = match (&batch.cached, &batch.prefix) {
        (Some(cached), _) => cached.hidden_states(model)?,
        (None, None) => model.hidden_states(&batch.inputs, None, None)?,
        (None, Some(prefix)) => {
            let mut cache = model.new_cache();
            model.hidden_states(prefix, Some(&mut cache), None)?;
            let mut shared = cache.broadcast_batch(batch.inputs.shape()[0])?;
            model.hidden_states(&batch.inputs, Some(&mut shared), None)?
        }
    };
    let width = hidden.shape()[2];
    let picked = hidden
        .reshape(&[-1, width])?
        .take_axis(&batch.positions, 0)?;
    let logits = model.logits(&picked)?.as_dtype(mlx_rs::Dtype::Float32)?;
    cross_entropy_mean(&logits, &batch.targets)
}

/// Mean of `logsumexp(logits) - logits[target]` over rows.
pub fn cross_entropy_mean(logits: &Array, targets: &Array) -> Result<Array, Exception> {
    let lse = logits.logsumexp_axis(-1, false)?;
    let picked = logits
        .take_along_axis(&targets.reshape(&[-1, 1])?, -1)?
        .reshape(&[-1])?;
    lse.subtract(&picked)?.mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;
    use crate::train::batch::{BatchSpec, TokenizedExample, pad_batch};

    #[test]
    fn head_at_loss_positions_equals_the_full_logits_loss() {
        let mut model = tiny_random(3, 50, 2, false).unwrap();
        let rows = [
            TokenizedExample {
                ids: vec![1, 5, 7, 9, 11, 2],
                loss_mask: vec![false, false, false, true, true, true],
            },
            TokenizedExample {
                ids: vec![1, 4, 2],
                loss_mask: vec![false, true, true],
            },
        ];
        let spec = BatchSpec {
            batch_size: 2,
            max_seq_len: 64,
            pad_multiple: 1,
            keep_partial: true,
        };
        let padded = pad_batch(&rows.iter().collect::<Vec<_>>(), &spec, 0);
        let batch = LossBatch::from_padded(&padded);
        assert_eq!(batch.loss_tokens, 5);
        let fast = masked_lm_loss(&mut model, &batch)
            .unwrap()
            .item_exact::<f32>();

        // Reference: full logits everywhere, masked mean.
        let logits = model.forward_tokens(&batch.inputs, None, None).unwrap();
        let v = logits.shape()[2];
        let flat = logits.reshape(&[-1, v]).unwrap();
        let targets = Array::from_slice(&padded.targets, &[padded.targets.len() as i32]);
        let lse = flat.logsumexp_axis(-1, false).unwrap();
        let tgt = flat
            .take_along_axis(targets.reshape(&[-1, 1]).unwrap(), -1)
            .unwrap()
            .reshape(&[-1])
            .unwrap();
        let per = lse.subtract(&tgt).unwrap();
        let mask = Array::from_slice(&padded.mask, &[padded.mask.len() as i32]);
        let full = per
            .multiply(&mask)
            .unwrap()
            .sum(None)
            .unwrap()
            .item_exact::<f32>()
            / 5.0;
        assert!((fast - full).abs() < 1e-5, "{fast} vs {full}");
    }

    fn shared_rows() -> Vec<TokenizedExample> {
        let preamble: Vec<u32> = (1..=12).collect();
        [
            vec![20, 21, 22, 23],
            vec![30, 31],
            vec![40, 41, 42, 43, 44, 45],
            vec![20, 25, 26],
        ]
        .into_iter()
        .map(|tail| {
            let ids: Vec<u32> = preamble.iter().copied().chain(tail).collect();
            let loss_mask = (0..ids.len()).map(|j| j >= 13).collect();
            TokenizedExample { ids, loss_mask }
        })
        .collect()
    }

    #[test]
    fn the_shared_prefix_stops_at_the_first_difference_or_loss() {
        let rows = shared_rows();
        let spec = BatchSpec {
            batch_size: 4,
            max_seq_len: 64,
            pad_multiple: 1,
            keep_partial: true,
        };
        let padded = pad_batch(&rows.iter().collect::<Vec<_>>(), &spec, 0);
        assert_eq!(shared_prefix_len(&padded), 12);
        let batch = LossBatch::from_padded_shared(&padded);
        assert_eq!(batch.prefix.as_ref().unwrap().shape(), &[1, 12]);
        assert_eq!(
            batch.loss_tokens,
            LossBatch::from_padded(&padded).loss_tokens
        );
        assert!(batch.processed_tokens < padded.rows * padded.seq);
        let one = pad_batch(&[&rows[0]], &spec, 0);
        assert_eq!(shared_prefix_len(&one), 0, "a single row shares nothing");
    }

    /// Shared-prefix batches give the plain path's loss and LoRA gradients.
    #[test]
    fn shared_prefix_is_exact_for_loss_and_gradients() {
        use crate::train::lora::{Adapter, LoraConfig, Method, attach, block_linears};
        let mut model = tiny_random(5, 50, 2, false).unwrap();
        let spec = crate::train::lora::adapter_spec(
            &LoraConfig {
                rank: 4,
                ..LoraConfig::default()
            },
            Method::Lora,
        );
        attach(&mut model, &spec, 3).unwrap();
        let key = mlx_rs::random::key(4).unwrap();
        for layer in 0..2 {
            for (_, linear) in block_linears(&mut model, layer) {
                let a = Adapter::of_mut(linear).unwrap();
                let shape = a.lora_b.shape().to_vec();
                a.lora_b.value = mlx_rs::random::normal::<f32>(&shape, None, 0.05, &key).unwrap();
            }
        }
        let rows = shared_rows();
        let spec = BatchSpec {
            batch_size: 4,
            max_seq_len: 64,
            pad_multiple: 1,
            keep_partial: true,
        };
        let padded = pad_batch(&rows.iter().collect::<Vec<_>>(), &spec, 0);
        let mut vg = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
            masked_lm_loss(m, b).map(|l| vec![l])
        });
        let (plain_loss, plain_grads) = vg(&mut model, &LossBatch::from_padded(&padded)).unwrap();
        let (shared_loss, shared_grads) =
            vg(&mut model, &LossBatch::from_padded_shared(&padded)).unwrap();
        let (a, b) = (
            plain_loss[0].item_exact::<f32>(),
            shared_loss[0].item_exact::<f32>(),
        );
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        crate::test_support::assert_grads_close(&plain_grads, &shared_grads);
    }
}
