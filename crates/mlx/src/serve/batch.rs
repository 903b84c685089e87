//! The KV cache of a continuous batch: several sequences at different lengths decoded
//! together, joining and leaving between steps.
//!
//! All rows share the cache's columns. A row that holds fewer tokens than the widest is
//! left-padded: its first `pad[b]` columns are zeros that a key mask hides. Rotary
//! positions are per row ([`RopeOffset::PerRow`](crate::models::llama::RopeOffset)): a
//! row's keys were rotated at `0..len` when it was prefilled alone, so its next query must
//! sit at `len`, whatever column that lands in. That makes a row's attention exactly what
//! it computes alone (same rotations, same keys; the padding only adds masked columns).
//!
//! - join: a new sequence prefilled alone (its own cache, `[1, H, P, D]`) is appended as a
//!   row; whichever side is narrower is left-padded to the wider one's columns.
//! - leave: finished rows are dropped, then leading columns that are padding in every
//!   remaining row are trimmed, so the width stays the longest live sequence.
//!
//! Reference: mlx-lm `models/cache.py` (`BatchKVCache`: `left_padding`, `filter`, `extend`).

use crate::models::llama::{KvCache, Llama};
use mlx_rs::error::Exception;
use mlx_rs::ops::concatenate;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

/// The shared cache of every live row, with each row's padding and length.
#[derive(Debug)]
pub struct BatchCache {
    cache: KvCache,
    /// Padding columns at the start of each row.
    pad: Vec<i32>,
    layers: i32,
}

impl BatchCache {
    /// An empty batch for `model`.
    pub fn new(model: &Llama) -> Self {
        Self {
            cache: model.new_cache(),
            pad: Vec::new(),
            layers: model.config.num_layers,
        }
    }

    /// Live rows.
    pub fn rows(&self) -> usize {
        self.pad.len()
    }

    /// Columns (the longest live sequence).
    pub fn width(&self) -> i32 {
        self.cache.offset()
    }

    /// Tokens each row holds (its next rotary position), `[B]` int32.
    pub fn positions(&self) -> Array {
        let w = self.width();
        let lens: Vec<i32> = self.pad.iter().map(|p| w - p).collect();
        Array::from_slice(&lens, &[lens.len() as i32])
    }

    /// The key mask `[B, width + new]` of a step adding `new` columns: zero on padding.
    pub fn key_mask(&self, new: i32) -> Array {
        let cols = self.width() + new;
        let mut flat = Vec::with_capacity(self.pad.len() * cols as usize);
        for &p in &self.pad {
            flat.extend((0..cols).map(|j| i32::from(j >= p)));
        }
        Array::from_slice(&flat, &[self.pad.len() as i32, cols])
    }

    /// The cache the model extends during a step.
    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Appends a sequence prefilled alone in `single` (one row, every position real) as the
    /// last row.
    pub fn join(&mut self, single: &KvCache) -> Result<(), Exception> {
        let new = single
            .valid_layers()
            .ok_or_else(|| Exception::custom("a joining sequence has an empty cache"))?;
        let p = single.offset();
        let Some(old) = self.cache.valid_layers().filter(|_| !self.pad.is_empty()) else {
            self.cache = KvCache::from_layers(new, p);
            self.pad = vec![0];
            return Ok(());
        };
        let w = self.width();
        let wide = w.max(p);
        let layers = old
            .into_iter()
            .zip(new)
            .map(|((ok, ov), (nk, nv))| {
                Ok((
                    concatenate(&[left_pad(&ok, wide - w)?, left_pad(&nk, wide - p)?], 0)?,
                    concatenate(&[left_pad(&ov, wide - w)?, left_pad(&nv, wide - p)?], 0)?,
                ))
            })
            .collect::<Result<Vec<_>, Exception>>()?;
        for pad in &mut self.pad {
            *pad += wide - w;
        }
        self.pad.push(wide - p);
        self.cache = KvCache::from_layers(layers, wide);
        Ok(())
    }

    /// Keeps only the rows `keep` (ascending indices), then trims columns that are padding
    /// in every remaining row.
    pub fn retain(&mut self, keep: &[usize]) -> Result<(), Exception> {
        if keep.len() == self.pad.len() {
            return Ok(());
        }
        if keep.is_empty() {
            self.cache = KvCache::new(self.layers);
            self.pad.clear();
            return Ok(());
        }
        let old = self
            .cache
            .valid_layers()
            .ok_or_else(|| Exception::custom("a batch with rows has an empty cache"))?;
        let pad: Vec<i32> = keep.iter().map(|&i| self.pad[i]).collect();
        let trim = pad.iter().copied().min().unwrap_or(0);
        let w = self.width();
        let idx: Vec<i32> = keep.iter().map(|&i| i as i32).collect();
        let idx = Array::from_slice(&idx, &[idx.len() as i32]);
        let pick = |a: &Array| -> Result<Array, Exception> {
            let rows = a.take_axis(&idx, 0)?;
            Ok(if trim > 0 {
                rows.index((.., .., trim.., ..))
            } else {
                rows
            })
        };
        let layers = old
            .iter()
            .map(|(k, v)| Ok((pick(k)?, pick(v)?)))
            .collect::<Result<Vec<_>, Exception>>()?;
        self.pad = pad.into_iter().map(|p| p - trim).collect();
        self.cache = KvCache::from_layers(layers, w - trim);
        Ok(())
    }
}

/// `a` `[B, H, S, D]` with `n` zero columns in front.
fn left_pad(a: &Array, n: i32) -> Result<Array, Exception> {
    if n == 0 {
        return Ok(a.clone());
    }
    let mut shape = a.shape().to_vec();
    shape[2] = n;
    let zeros = mlx_rs::ops::zeros_dtype(&shape, a.dtype())?;
    concatenate(&[zeros, a.clone()], 2)
}

/// Prompt tokens processed per forward pass during prefill (as `generate`'s).
const PREFILL_CHUNK: usize = 512;

/// Runs a prompt alone through `model` into a fresh cache, in chunks (so attention scores
/// stay `[chunk × context]`), and returns the cache with the last position's logits `[1,
/// vocab]`.
pub fn prefill(model: &mut Llama, prompt: &[u32]) -> Result<(KvCache, Array), Exception> {
    let mut cache = model.new_cache();
    let mut hidden = None;
    for chunk in prompt.chunks(PREFILL_CHUNK) {
        if let Some(h) = &hidden {
            // Evaluate each chunk before queueing the next: bounds a long prompt's memory.
            Array::eval(h)?;
        }
        let tokens = Array::from_slice(chunk, &[1, chunk.len() as i32]).as_dtype(Dtype::Int32)?;
        hidden = Some(model.hidden_states(&tokens, Some(&mut cache), None)?);
    }
    let hidden = hidden.ok_or_else(|| Exception::custom("the prompt has no tokens"))?;
    let logits = model
        .logits(&hidden.index((.., -1.., ..)))?
        .index((.., -1, ..));
    Ok((cache, logits))
}

/// Int32 token ids `[B, 1]` for one decode step.
pub fn step_tokens(ids: &[u32]) -> Result<Array, Exception> {
    Array::from_slice(ids, &[ids.len() as i32, 1]).as_dtype(Dtype::Int32)
}

// Tests: tests/it/serve_batch.rs (batched against alone, on a random model).
