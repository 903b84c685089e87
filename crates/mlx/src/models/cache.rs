//! The key/value cache of autoregressive decoding and the attention mask of padded
//! batches; shared by every decoder architecture.
//!
//! Multi-token updates (a prompt, a training prefix or suffix) are concatenated. Single-token
//! updates (decoding) write into buffers pre-allocated [`DECODE_STEP`] positions at a time,
//! as mlx-lm's `KVCache` does: concatenating would copy every layer's whole cache on every
//! token (about 9 MB per SmolLM2 token at 200 positions) and allocate two new buffers per
//! layer; the in-place slice update copies one position. A slot may therefore hold more
//! positions than [`KvCache::offset`]; only the first `offset` are valid.

use mlx_rs::error::Exception;
use mlx_rs::ops::concatenate;
use mlx_rs::ops::indexing::{IndexOp, TryIndexMutOp};
use mlx_rs::{Array, Dtype};

/// Positions a decoding cache grows by at once.
const DECODE_STEP: i32 = 256;

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
                            let a = valid(a, self.offset);
                            let mut shape = a.shape().to_vec();
                            shape[0] = batch;
                            mlx_rs::ops::broadcast_to(&a, &shape)
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

    /// A cache holding `layers` (each `[B, H, offset, D]`, every position valid).
    pub(crate) fn from_layers(layers: Vec<(Array, Array)>, offset: i32) -> Self {
        Self {
            layers: layers.into_iter().map(Some).collect(),
            offset,
        }
    }

    /// Every layer's valid keys and values (`[B, H, offset, D]`); `None` before the first
    /// update.
    pub(crate) fn valid_layers(&self) -> Option<Vec<(Array, Array)>> {
        self.layers
            .iter()
            .map(|slot| {
                slot.as_ref()
                    .map(|(k, v)| (valid(k, self.offset), valid(v, self.offset)))
            })
            .collect()
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
        let prev = self.offset;
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Exception::custom(format!("KV cache has no layer {layer}")))?;
        let (k, v) = match slot.take() {
            Some((pk, pv)) if k.shape()[2] == 1 => {
                let pk = write_one(pk, prev, &k)?;
                let pv = write_one(pv, prev, &v)?;
                let out = (valid(&pk, prev + 1), valid(&pv, prev + 1));
                *slot = Some((pk, pv));
                return Ok(out);
            }
            Some((pk, pv)) => (
                concatenate(&[valid(&pk, prev), k], 2)?,
                concatenate(&[valid(&pv, prev), v], 2)?,
            ),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// The first `len` positions of a cached `[B, H, S, D]` buffer (the whole array when it
/// holds exactly that many).
fn valid(buf: &Array, len: i32) -> Array {
    if buf.shape()[2] == len {
        buf.clone()
    } else {
        buf.index((.., .., ..len, ..))
    }
}

/// Writes one position `[B, H, 1, D]` at `at` into `buf`, first growing the buffer by
/// [`DECODE_STEP`] positions (copying the `at` valid ones) when it is full.
fn write_one(mut buf: Array, at: i32, x: &Array) -> Result<Array, Exception> {
    if buf.shape()[2] <= at {
        let mut shape = buf.shape().to_vec();
        shape[2] = DECODE_STEP;
        let room = mlx_rs::ops::zeros_dtype(&shape, buf.dtype())?;
        buf = concatenate(&[valid(&buf, at), room], 2)?;
    }
    buf.try_index_mut((.., .., at..at + 1, ..), x)?;
    Ok(buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `[1, 2, n, 3]` keys whose entries name their position.
    fn positions(from: i32, n: i32) -> Array {
        let data: Vec<f32> = (0..2)
            .flat_map(|h| {
                (from..from + n)
                    .flat_map(move |p| (0..3).map(move |d| (h * 10_000 + p * 10 + d) as f32))
            })
            .collect();
        Array::from_slice(&data, &[1, 2, n, 3])
    }

    /// The elements in logical order (a cache slice is a strided view of its buffer).
    fn flat(a: &Array) -> Vec<f32> {
        a.contiguous().unwrap().as_slice::<f32>().to_vec()
    }

    #[test]
    fn decoding_past_several_growth_steps_keeps_every_position() {
        let mut cache = KvCache::new(1);
        let prompt = 5;
        let (k, _) = cache
            .update(0, positions(0, prompt), positions(0, prompt))
            .unwrap();
        assert_eq!(k.shape(), &[1, 2, prompt, 3]);
        cache.advance(prompt);
        let steps = 2 * DECODE_STEP + 7;
        for t in 0..steps {
            let at = prompt + t;
            let (k, v) = cache.update(0, positions(at, 1), positions(at, 1)).unwrap();
            cache.advance(1);
            assert_eq!(k.shape(), &[1, 2, at + 1, 3]);
            if t % 97 == 0 || t + 1 == steps {
                let want = positions(0, at + 1);
                assert_eq!(flat(&k), flat(&want), "keys at {at}");
                assert_eq!(flat(&v), flat(&want), "values at {at}");
            }
        }
        // A multi-token update after decoding (and a broadcast) sees only valid positions.
        let at = prompt + steps;
        let (k, _) = cache.update(0, positions(at, 4), positions(at, 4)).unwrap();
        assert_eq!(flat(&k), flat(&positions(0, at + 4)));
        cache.advance(4);
        let wide = cache.broadcast_batch(3).unwrap();
        let (k, _) = wide.layers[0].as_ref().unwrap();
        assert_eq!(k.shape(), &[3, 2, at + 4, 3]);
    }
}
