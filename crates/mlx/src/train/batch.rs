//! Batches for causal-LM fine-tuning with little padding and no loss on padding.
//!
//! Examples are sorted by token length and cut into batches of neighbours, so rows in a
//! batch have similar lengths; each batch is padded only to its own longest row (optionally
//! rounded up to a multiple, to bound the number of distinct shapes a compiled step sees).
//! The batch order is shuffled per epoch from a seed, so runs are reproducible.
//!
//! Unlike mlx-lm, which pads every row to a multiple of 32 and counts one padding token per
//! row in its loss, the loss mask here is zero on every padded position.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One tokenized example: token ids and, per token, whether predicting it carries loss
/// (completion or assistant tokens; prompts are masked out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizedExample {
    /// Token ids, BOS to EOS.
    pub ids: Vec<u32>,
    /// `loss_mask[j]` is true when token `j` is a training target.
    pub loss_mask: Vec<bool>,
}

impl TokenizedExample {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens that carry loss (the first token never does: nothing predicts it).
    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|m| **m).count()
    }
}

/// How to cut examples into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    /// Rows per batch.
    pub batch_size: usize,
    /// Longest input a row may have; longer examples are truncated (the tokenize stage
    /// reports how many).
    pub max_seq_len: usize,
    /// Round each batch's length up to a multiple of this (1 = no rounding).
    pub pad_multiple: usize,
    /// Whether the last, smaller batch of an epoch is kept.
    pub keep_partial: bool,
}

/// The batches of one epoch, as indexes into the example list, in training order.
pub fn plan_epoch(lengths: &[usize], spec: &BatchSpec, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let size = spec.batch_size.max(1);
    let mut batches: Vec<Vec<usize>> = order
        .chunks(size)
        .filter(|c| spec.keep_partial || c.len() == size)
        .map(<[usize]>::to_vec)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    batches.shuffle(&mut rng);
    batches
}

/// A padded batch, flattened row-major, ready to become `[rows, seq]` arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    /// Rows.
    pub rows: usize,
    /// Positions per row.
    pub seq: usize,
    /// Input ids (`ids[..n-1]` per row), padding = `pad_id`.
    pub inputs: Vec<i32>,
    /// Target ids (`ids[1..n]` per row), padding = 0.
    pub targets: Vec<i32>,
    /// 1.0 where the target carries loss, 0.0 elsewhere (always 0.0 on padding).
    pub mask: Vec<f32>,
    /// Positions that carry loss.
    pub loss_tokens: usize,
    /// Real (unpadded) input positions.
    pub real_tokens: usize,
    /// Real input length of each row.
    pub lengths: Vec<usize>,
}

/// Pads the examples `rows` into one batch.
pub fn pad_batch(rows: &[&TokenizedExample], spec: &BatchSpec, pad_id: u32) -> PaddedBatch {
    let input_len = |e: &TokenizedExample| e.len().saturating_sub(1).min(spec.max_seq_len);
    let longest = rows.iter().map(|e| input_len(e)).max().unwrap_or(0).max(1);
    let multiple = spec.pad_multiple.max(1);
    let seq = longest.div_ceil(multiple) * multiple;
    let n = rows.len();
    let mut batch = PaddedBatch {
        rows: n,
        seq,
        inputs: vec![pad_id as i32; n * seq],
        targets: vec![0; n * seq],
        mask: vec![0.0; n * seq],
        loss_tokens: 0,
        real_tokens: 0,
        lengths: Vec::with_capacity(n),
    };
    for (r, example) in rows.iter().enumerate() {
        let len = input_len(example);
        for j in 0..len {
            let at = r * seq + j;
            batch.inputs[at] = example.ids[j] as i32;
            batch.targets[at] = example.ids[j + 1] as i32;
            if example.loss_mask[j + 1] {
                batch.mask[at] = 1.0;
                batch.loss_tokens += 1;
            }
        }
        batch.real_tokens += len;
        batch.lengths.push(len);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(len: usize, prompt: usize) -> TokenizedExample {
        TokenizedExample {
            ids: (1..=len as u32).collect(),
            loss_mask: (0..len).map(|j| j >= prompt).collect(),
        }
    }

    const SPEC: BatchSpec = BatchSpec {
        batch_size: 2,
        max_seq_len: 100,
        pad_multiple: 1,
        keep_partial: true,
    };

    #[test]
    fn pads_to_the_longest_row_with_no_loss_on_padding() {
        let (a, b) = (example(4, 2), example(6, 3));
        let batch = pad_batch(&[&a, &b], &SPEC, 0);
        assert_eq!((batch.rows, batch.seq), (2, 5));
        assert_eq!(&batch.inputs[..5], &[1, 2, 3, 0, 0]);
        assert_eq!(&batch.targets[..5], &[2, 3, 4, 0, 0]);
        assert_eq!(&batch.mask[..5], &[0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&batch.mask[5..], &[0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(batch.loss_tokens, a.loss_tokens() + b.loss_tokens());
        assert_eq!(batch.real_tokens, 3 + 5);
    }

    #[test]
    fn rounding_and_truncation() {
        let spec = BatchSpec {
            pad_multiple: 8,
            ..SPEC
        };
        assert_eq!(pad_batch(&[&example(6, 0)], &spec, 0).seq, 8);
        let spec = BatchSpec {
            max_seq_len: 3,
            ..SPEC
        };
        let batch = pad_batch(&[&example(10, 0)], &spec, 0);
        assert_eq!(batch.seq, 3);
        assert_eq!(batch.targets, vec![2, 3, 4]);
    }

    #[test]
    fn epochs_are_seeded_and_batches_hold_neighbours_by_length() {
        let lengths = [5, 1, 9, 3, 7, 2, 8, 4];
        let spec = BatchSpec {
            batch_size: 2,
            ..SPEC
        };
        let a = plan_epoch(&lengths, &spec, 7, 0);
        assert_eq!(a, plan_epoch(&lengths, &spec, 7, 0), "same seed, same plan");
        assert_ne!(a, plan_epoch(&lengths, &spec, 7, 1), "epochs differ");
        let mut pairs: Vec<Vec<usize>> = a
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).collect())
            .collect();
        pairs.sort();
        assert_eq!(pairs, vec![vec![1, 2], vec![3, 4], vec![5, 7], vec![8, 9]]);
    }

    #[test]
    fn partial_batches_can_be_dropped() {
        let spec = BatchSpec {
            batch_size: 4,
            keep_partial: false,
            ..SPEC
        };
        let plan = plan_epoch(&[1, 2, 3, 4, 5], &spec, 0, 0);
        assert_eq!(plan.len(), 1);
    }

    proptest! {
        #[test]
        fn every_example_appears_exactly_once(lengths in proptest::collection::vec(1usize..50, 0..60), size in 1usize..9, seed in 0u64..100) {
            let spec = BatchSpec { batch_size: size, ..SPEC };
            let mut seen: Vec<usize> = plan_epoch(&lengths, &spec, seed, 3).into_iter().flatten().collect();
            seen.sort();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        }

        #[test]
        fn padding_never_carries_loss(lens in proptest::collection::vec(2usize..30, 1..8)) {
            let examples: Vec<TokenizedExample> = lens.iter().map(|&n| example(n, n / 2)).collect();
            let refs: Vec<&TokenizedExample> = examples.iter().collect();
            let batch = pad_batch(&refs, &SPEC, 99);
            for (r, e) in examples.iter().enumerate() {
                for j in (e.len() - 1)..batch.seq {
                    prop_assert_eq!(batch.mask[r * batch.seq + j], 0.0);
                }
            }
            let expected: usize = examples.iter().map(TokenizedExample::loss_tokens).sum();
            prop_assert_eq!(batch.loss_tokens, expected);
        }
    }
}
