//! The disk file's key: blake3 over the base model below block `k` and the tokenized data
//! (what enters, and why, is in the table of the [`super`] documentation).

use crate::models::llama::Llama;
use crate::train::batch::TokenizedExample;
use mlx_rs::module::ModuleParameters;

/// Schema version of the key and the file layout.
const SCHEMA: &str = "pipe-activations-v1";

/// The base-model part of the key: `k`, the config, the kernel, and every parameter of the
/// embedding and the blocks below `k` (see the table in the `activations` documentation).
pub fn model_key(model: &Llama, block: usize) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SCHEMA.as_bytes());
    hasher.update(&(block as u64).to_le_bytes());
    hasher.update(&serde_json::to_vec(&model.config)?);
    hasher.update(format!("{:?}", crate::linear::QuantKernel::for_default_device()).as_bytes());
    let params = model.parameters().flatten();
    let mut names: Vec<_> = params
        .keys()
        .filter(|name| {
            name.starts_with("model.embed_tokens.")
                || name
                    .strip_prefix("model.layers.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < block)
        })
        .cloned()
        .collect();
    names.sort();
    for name in names {
        let a = params[&name];
        let bytes = a.view::<u8>()?;
        bytes.eval()?;
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}{:?}", a.dtype(), a.shape()).as_bytes());
        hasher.update(&(bytes.size() as u64).to_le_bytes());
        hasher.update(bytes.as_slice::<u8>());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The tokenized-data part of the key: every example's input ids (truncated as batches
/// truncate them), in order.
pub fn data_key(examples: &[TokenizedExample], max_seq_len: usize) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(examples.len() as u64).to_le_bytes());
    for e in examples {
        let ids = &e.ids[..input_len(e, max_seq_len)];
        hasher.update(&(ids.len() as u64).to_le_bytes());
        for id in ids {
            hasher.update(&id.to_le_bytes());
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// The cache file's key: base model (with `k`) and data.
pub fn file_key(model_key: &str, data_key: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SCHEMA.as_bytes());
    hasher.update(model_key.as_bytes());
    hasher.update(data_key.as_bytes());
    hasher.finalize().to_hex().to_string()
}

pub(super) fn input_len(e: &TokenizedExample, max_seq_len: usize) -> usize {
    e.len().saturating_sub(1).min(max_seq_len)
}
