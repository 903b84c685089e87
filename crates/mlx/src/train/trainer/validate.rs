//! The validation loss: the token-weighted mean loss over the validation set (or
//! `max_batches` batches of it), without gradients. One function serves every caller: the
//! trainer (through the activation cache, which serves cached block inputs when it is
//! active), the `rank: auto` probe and tests (without a cache).
//!
//! Batches are the examples sorted by length (ties by index), `batch_size` at a time, with
//! shared prefixes run once; batches with no loss-carrying token are skipped.
//!
//! With `max_batches`, the rows are a systematic sample of that length order, not its first
//! rows: the first batches of a length-sorted set hold only its shortest examples, which in
//! a task whose difficulty grows with length (BIG-bench's web of lies: 4 batches of 8 were
//! its 1- and 2-sentence chains) measure the easy part alone. That loss picks the adapter
//! that is kept, stops training early and prunes tune trials, so it must stand for the set.

use crate::models::llama::Llama;
use crate::train::activations::{ActivationCache, Set};
use crate::train::batch::{BatchSpec, TokenizedExample, pad_batch};
use crate::train::loss::{LossBatch, masked_lm_loss};
use anyhow::bail;

/// Token-weighted mean loss over (up to `max_batches` of) `examples`, without gradients.
pub fn validation_loss(
    model: &mut Llama,
    examples: &[TokenizedExample],
    spec: &BatchSpec,
    pad_id: u32,
    max_batches: Option<usize>,
) -> anyhow::Result<f64> {
    validation_loss_with(model, examples, spec, pad_id, max_batches, None)
}

/// [`validation_loss`], with batches served from `cache` when it is given and active.
/// `examples` must then be the validation set the cache was built over.
pub fn validation_loss_with(
    model: &mut Llama,
    examples: &[TokenizedExample],
    spec: &BatchSpec,
    pad_id: u32,
    max_batches: Option<usize>,
    mut cache: Option<&mut ActivationCache<'_>>,
) -> anyhow::Result<f64> {
    let order = sample_in_length_order(examples, spec.batch_size.max(1), max_batches);
    let (mut total, mut tokens) = (0f64, 0usize);
    let world = crate::distributed::world();
    // Over ranks, each takes every size-th batch; the sums are added up below.
    let mine = |i: &usize| world.is_none_or(|g| i % g.size() == g.rank());
    for (_, chunk) in order
        .chunks(spec.batch_size.max(1))
        .enumerate()
        .filter(|(i, _)| mine(i))
    {
        let rows: Vec<&TokenizedExample> = chunk.iter().map(|&i| &examples[i]).collect();
        let padded = pad_batch(&rows, spec, pad_id);
        let batch = LossBatch::from_padded_shared(&padded);
        if batch.loss_tokens == 0 {
            continue;
        }
        let batch = match cache.as_deref_mut() {
            Some(cache) => cache.attach(model, Set::Valid, chunk, &padded, batch)?,
            None => batch,
        };
        let loss = masked_lm_loss(model, &batch)?;
        total += f64::from(loss.item_exact::<f32>()) * batch.loss_tokens as f64;
        tokens += batch.loss_tokens;
    }
    if let Some(group) = world {
        let loss = group.all_sum(&mlx_rs::Array::from_f32(total as f32))?;
        let count = group.all_sum(&mlx_rs::Array::from_int(tokens as i32))?;
        mlx_rs::transforms::eval([&loss, &count])?;
        total = f64::from(loss.item_exact::<f32>());
        tokens = usize::try_from(count.item_exact::<i32>()).unwrap_or(0);
    }
    if tokens == 0 {
        bail!("the validation set has no loss-carrying tokens");
    }
    Ok(total / tokens as f64)
}

/// The rows that `max_batches` batches of `batch_size` measure, in length order: all of
/// them when they fit, else one row from the middle of each of that many equal strata of
/// the length order, so short and long examples count as often as they occur.
fn sample_in_length_order(
    examples: &[TokenizedExample],
    batch_size: usize,
    max_batches: Option<usize>,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (examples[i].len(), i));
    let n = order.len();
    let wanted = max_batches.map_or(n, |b| b.saturating_mul(batch_size));
    if wanted >= n {
        return order;
    }
    // Stratum j is [j n / wanted, (j + 1) n / wanted); its middle is (2j + 1) n / (2 wanted),
    // strictly increasing in j because n > wanted, so no row is taken twice.
    (0..wanted)
        .map(|j| order[(2 * j + 1) * n / (2 * wanted)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_lengths(lengths: &[usize]) -> Vec<TokenizedExample> {
        lengths
            .iter()
            .map(|&n| TokenizedExample {
                ids: vec![1; n],
                loss_mask: vec![true; n],
            })
            .collect()
    }

    #[test]
    fn a_limited_validation_spans_every_length_not_the_shortest_rows() {
        // 100 rows of lengths 1..=100 in a shuffled file order.
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 100 + 1).collect();
        let examples = of_lengths(&lengths);
        let rows = sample_in_length_order(&examples, 4, Some(5));
        let picked: Vec<usize> = rows.iter().map(|&i| lengths[i]).collect();
        assert_eq!(
            picked,
            vec![
                3, 8, 13, 18, 23, 28, 33, 38, 43, 48, 53, 58, 63, 68, 73, 78, 83, 88, 93, 98
            ]
        );
    }

    #[test]
    fn the_sample_has_distinct_rows_and_all_of_them_when_the_limit_covers_the_set() {
        for n in 1..60 {
            let examples = of_lengths(&vec![3; n]);
            for batches in 0..20 {
                let rows = sample_in_length_order(&examples, 3, Some(batches));
                let mut distinct = rows.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), rows.len(), "n {n}, batches {batches}");
                assert_eq!(rows.len(), n.min(3 * batches));
            }
            assert_eq!(sample_in_length_order(&examples, 3, None).len(), n);
        }
    }
}
