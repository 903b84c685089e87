//! The key/value cache of autoregressive decoding and the attention mask of padded
//! batches; shared by every decoder architecture.
//!
//! The cache grows by concatenation. For the short generations pipe runs (hundreds of
//! tokens) the copies are small next to the weight reads of each step; mlx-lm's
//! pre-allocated, step-grown buffers would be the next refinement for long contexts.

use mlx_rs::error::Exception;
use mlx_rs::ops::concatenate;
use mlx_rs::{Array, Dtype};

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Array, Array)>>,
    offset: i32,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: i32) -> Self {
        Self {
            layers: vec![None; num_layers.max(0) as usize],
            offset: 0,
        }
    }

    /// Positions already cached.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Moves the offset past `n` new positions (after every layer has been updated).
    pub(crate) fn advance(&mut self, n: i32) {
        self.offset += n;
    }

    /// The same cached keys and values seen by `batch` rows: a prefix computed once for a
    /// batch whose rows all start with it. Gradients through the broadcast sum over rows.
    pub fn broadcast_batch(&self, batch: i32) -> Result<KvCache, Exception> {
        let layers = self
            .layers
            .iter()
            .map(|slot| {
                slot.as_ref()
                    .map(|(k, v)| {
                        let grow = |a: &Array| {
                            let mut shape = a.shape().to_vec();
                            shape[0] = batch;
                            mlx_rs::ops::broadcast_to(a, &shape)
                        };
                        Ok((grow(k)?, grow(v)?))
                    })
                    .transpose()
            })
            .collect::<Result<_, Exception>>()?;
        Ok(KvCache {
            layers,
            offset: self.offset,
        })
    }

    /// One layer's cached keys and values.
    pub(crate) fn layer(&self, layer: usize) -> Option<&(Array, Array)> {
        self.layers.get(layer).and_then(Option::as_ref)
    }

    /// Replaces one layer's keys and values (a checkpointed block computes them apart).
    pub(crate) fn set_layer(&mut self, layer: usize, k: Array, v: Array) -> Result<(), Exception> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Exception::custom(format!("KV cache has no layer {layer}")))?;
        *slot = Some((k, v));
        Ok(())
    }

    /// Appends this step's keys/values for one layer and returns the full ones.
    pub(crate) fn update(
        &mut self,
        layer: usize,
        k: Array,
        v: Array,
    ) -> Result<(Array, Array), Exception> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Exception::custom(format!("KV cache has no layer {layer}")))?;
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (concatenate(&[pk, k], 2)?, concatenate(&[pv, v], 2)?),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// An additive attention mask `[B, 1, L, S]` from a key mask `[B, S]` (S = offset + L):
/// causal and hiding padded keys. A large finite negative rather than -inf keeps rows
/// whose keys are all padding finite (they belong to padding queries, whose outputs are
/// never used), so no NaN leaks into later layers through the padded positions' values.
pub fn attention_mask(
    key_mask: &Array,
    offset: i32,
    l: i32,
    dtype: Dtype,
) -> Result<Array, Exception> {
    let b = key_mask.shape()[0];
    let s = key_mask.shape()[1];
    if s != offset + l {
        return Err(Exception::custom(format!(
            "key mask covers {s} positions but the cache offset plus the input is {}",
            offset + l
        )));
    }
    let q_pos = mlx_rs::ops::arange::<_, i32>(offset, offset + l, None)?.reshape(&[l, 1])?;
    let k_pos = mlx_rs::ops::arange::<_, i32>(0, s, None)?.reshape(&[1, s])?;
    let causal = k_pos.le(&q_pos)?.reshape(&[1, 1, l, s])?;
    let keys = key_mask.ne(Array::from_int(0))?.reshape(&[b, 1, 1, s])?;
    let allowed = causal.logical_and(&keys)?;
    let zero = Array::from_f32(0.0).as_dtype(dtype)?;
    let neg = Array::from_f32(-1e9).as_dtype(dtype)?;
    mlx_rs::ops::select(&allowed, &zero, &neg)
}
