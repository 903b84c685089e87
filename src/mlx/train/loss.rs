//! The masked causal-LM loss, computing the LM head only where loss is taken.
//!
//! With a 49k vocabulary the LM head is the largest matmul in a small model. Prompt tokens
//! and padding carry no loss, so their logits are never needed: the hidden states at
//! loss-carrying positions are gathered first and only those rows go through the head.
//! The result equals the full-logits loss exactly (same rows, same math).

use super::batch::PaddedBatch;
use crate::mlx::models::llama::Llama;
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
    /// `rows * seq`.
    pub processed_tokens: usize,
}

impl LossBatch {
    /// Moves a host batch to MLX arrays.
    pub fn from_padded(batch: &PaddedBatch) -> Self {
        let (positions, targets): (Vec<i32>, Vec<i32>) = batch
            .mask
            .iter()
            .enumerate()
            .filter(|(_, m)| **m > 0.0)
            .map(|(i, _)| (i as i32, batch.targets[i]))
            .unzip();
        let n = positions.len() as i32;
        Self {
            inputs: Array::from_slice(&batch.inputs, &[batch.rows as i32, batch.seq as i32]),
            positions: Array::from_slice(&positions, &[n]),
            targets: Array::from_slice(&targets, &[n]),
            loss_tokens: positions.len(),
            processed_tokens: batch.rows * batch.seq,
        }
    }
}

/// Mean cross-entropy over the loss positions of `batch`.
pub fn masked_lm_loss(model: &mut Llama, batch: &LossBatch) -> Result<Array, Exception> {
    let hidden = model.hidden_states(&batch.inputs, None, None)?;
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
    use crate::mlx::models::llama::tiny_random;
    use crate::mlx::train::batch::{BatchSpec, TokenizedExample, pad_batch};

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
}
