//! Summing gradients over ranks in buckets: the gradients are flattened and concatenated
//! into buckets of about [`BUCKET_BYTES`], each summed with one `all_sum`, then split back.
//! One collective per bucket instead of one per tensor: LoRA has hundreds of small tensors,
//! and each collective costs a round trip around the ring.

use super::Group;
use mlx_rs::error::Exception;
use mlx_rs::module::FlattenedModuleParam;
use mlx_rs::ops::{concatenate, split_at_indices};

/// The bucket size mlx.nn.average_gradients uses by default (32 MiB).
pub const BUCKET_BYTES: usize = 32 << 20;

/// The sum over ranks of every gradient, in buckets of about `bucket_bytes`. Every rank
/// must pass the same keys with the same shapes (it does: the same model).
pub fn all_sum_gradients(
    group: &Group,
    grads: FlattenedModuleParam,
    bucket_bytes: usize,
) -> Result<FlattenedModuleParam, Exception> {
    // Ranks must concatenate in the same order; a map's order is not that.
    let mut keys: Vec<_> = grads.keys().cloned().collect();
    keys.sort();
    let mut grads = grads;
    let mut out = FlattenedModuleParam::with_capacity(keys.len());
    let mut bucket: Vec<(std::rc::Rc<str>, mlx_rs::Array)> = Vec::new();
    let mut bytes = 0usize;
    for key in keys {
        let g = grads.remove(&key).expect("key taken from the map");
        bytes += g.nbytes();
        bucket.push((key, g));
        if bytes >= bucket_bytes {
            sum_bucket(group, std::mem::take(&mut bucket), &mut out)?;
            bytes = 0;
        }
    }
    if !bucket.is_empty() {
        sum_bucket(group, bucket, &mut out)?;
    }
    Ok(out)
}

fn sum_bucket(
    group: &Group,
    bucket: Vec<(std::rc::Rc<str>, mlx_rs::Array)>,
    out: &mut FlattenedModuleParam,
) -> Result<(), Exception> {
    let flat: Vec<mlx_rs::Array> = bucket
        .iter()
        .map(|(_, g)| g.reshape(&[-1]))
        .collect::<Result<_, _>>()?;
    let mut offsets = Vec::with_capacity(flat.len());
    let mut at = 0i32;
    for f in &flat[..flat.len() - 1] {
        at += f.size() as i32;
        offsets.push(at);
    }
    let summed = group.all_sum(&concatenate(&flat, 0)?)?;
    let parts = split_at_indices(&summed, &offsets, 0)?;
    for ((key, g), part) in bucket.into_iter().zip(parts) {
        out.insert(key, part.reshape(g.shape())?);
    }
    Ok(())
}
