//! The validation loss: the token-weighted mean loss over the validation set (or its first
//! `max_batches` batches), without gradients. One function serves every caller: the trainer
//! (through the activation cache, which serves cached block inputs when it is active), the
//! `rank: auto` probe and tests (without a cache).
//!
//! Batches are the examples sorted by length (ties by index), `batch_size` at a time, with
//! shared prefixes run once; batches with no loss-carrying token are skipped.

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
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (examples[i].len(), i));
    let (mut total, mut tokens) = (0f64, 0usize);
    let world = crate::distributed::world();
    // Over ranks, each takes every size-th batch; the sums are added up below.
    let mine = |i: &usize| world.is_none_or(|g| i % g.size() == g.rank());
    for (_, chunk) in order
        .chunks(spec.batch_size.max(1))
        .take(max_batches.unwrap_or(usize::MAX))
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
