//! Gradient checkpointing per transformer block ([`Llama::grad_checkpoint`]).
//!
//! A block runs inside [`crate::checkpoint::checkpoint`], so a gradient through it
//! keeps only the block's input and output from the forward pass and recomputes the
//! attention and MLP activations in the backward. Everything a gradient must reach goes in
//! as an input: the hidden states, the block's trainable parameters (adapters, or every
//! weight in full fine-tuning) and, with a KV cache (the shared prompt prefix of a batch),
//! the cached keys and values of earlier positions. The block's new keys and values come
//! back as outputs and are stored in the cache outside the checkpointed function, which
//! must be free of side effects because it runs twice.

use super::{DecoderLayer, KvCache};
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use std::rc::Rc;

/// [`DecoderLayer::forward_block`] under gradient checkpointing.
pub(super) fn block(
    layer: &mut DecoderLayer,
    h: &Array,
    mask: Option<&Array>,
    cache: Option<(&mut KvCache, usize)>,
    offset: i32,
) -> Result<Array, Exception> {
    let mut trainable: Vec<(Rc<str>, Array)> = layer
        .trainable_parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    let uses_cache = cache.is_some();
    let prior = cache.as_ref().and_then(|(c, i)| c.layer(*i).cloned());
    let has_prior = prior.is_some();
    let mut inputs = vec![h.clone()];
    if let Some((k, v)) = prior {
        inputs.extend([k, v]);
    }
    let fixed = inputs.len();
    inputs.extend(trainable.iter().map(|(_, a)| a.clone()));
    let names: Vec<Rc<str>> = trainable.into_iter().map(|(k, _)| k).collect();
    let mut owned = layer.clone();
    let mask = mask.cloned();
    let mut outputs = crate::checkpoint::checkpoint(&inputs, move |args| {
        {
            let mut params = owned.parameters_mut().flatten();
            for (name, value) in names.iter().zip(&args[fixed..]) {
                let slot = params.get_mut(name).ok_or_else(|| {
                    Exception::custom(format!("checkpointed block has no parameter {name}"))
                })?;
                **slot = value.clone();
            }
        }
        let mut local = uses_cache.then(|| KvCache::new(1));
        if let (Some(c), true) = (&mut local, has_prior) {
            c.set_layer(0, args[1].clone(), args[2].clone())?;
            // The prior keys and values hold `offset` valid positions (a decoding cache's
            // buffer may hold more): the local cache must know where the new ones go.
            c.advance(offset);
        }
        let out = owned.forward_block(
            &args[0],
            mask.as_ref(),
            local.as_mut().map(|c| (c, 0)),
            offset,
        )?;
        let mut outs = vec![out];
        if let Some((k, v)) = local.as_ref().and_then(|c| c.layer(0)) {
            outs.extend([k.clone(), v.clone()]);
        }
        Ok(outs)
    })?;
    if let Some((c, i)) = cache {
        let (Some(v), Some(k)) = (outputs.pop(), outputs.pop()) else {
            return Err(Exception::custom(
                "checkpointed block returned no keys/values",
            ));
        };
        c.set_layer(i, k, v)?;
    }
    outputs
        .pop()
        .ok_or_else(|| Exception::custom("checkpointed block returned nothing"))
}
