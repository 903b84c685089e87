//! The frozen-block activation cache: when nothing below block `k` trains (LoRA, DoRA or
//! QLoRA on the last `N` blocks), the hidden states entering block `k` are a fixed function
//! of an example's tokens. They are computed once per example, kept, and later batches,
//! epochs and validations start at block `k` instead of at the embedding.
//!
//! # What is cached, and why batching stays exact
//!
//! One entry per example: `[len, hidden]`, the hidden states entering block `k` at the
//! example's input positions (`ids[..len]`, `len = min(ids - 1, max_seq_len)`), in the
//! model's activation dtype. A batch is assembled from entries exactly as
//! [`LossBatch`] assembles it from tokens: with a shared prefix of `P` tokens, the prefix's
//! states are the first row's `[..P]` (every row has the same tokens there, so the same
//! states), and each row contributes `[P..len]`; rows are right-padded with zeros. Attention
//! is causal and padding is at the end of a row, so no real position sees a padded one, and
//! padding carries no loss: the loss and the adapter gradients equal the uncached path's up to
//! float rounding (tested). Adapter dropout lives only in adapted blocks (`>= k`), so the
//! frozen blocks are deterministic and caching them changes nothing.
//!
//! Rows missing from the cache are computed together as a batch of their own (sharing
//! their prefix when the run shares prefixes), outside the gradient, and stored while the
//! memory budget lasts; rows over the budget are recomputed whenever they come back.
//!
//! # The on-disk layer and its key
//!
//! With `disk_mb > 0` the entries of a data set are also written to one file, so later runs
//! on the same base model and data (a sweep's trials, a rerun with other hyperparameters)
//! start warm. The file is named by a blake3 key over:
//!
//! | input | why |
//! |---|---|
//! | schema version | a layout change must not read old files |
//! | `k` | the states entering another block are other states |
//! | model config (JSON) and the quantized-matmul kernel | they change what the blocks compute |
//! | name, dtype, shape and bytes of every parameter of the embedding and blocks `< k` | the base model hash: another checkpoint, a quantization (QLoRA), a dtype change |
//! | every example's input ids, in order | the tokenized data hash: other data, tokenizer, template or `max_seq_len` |
//!
//! Nothing else enters (no paths, no seeds, no learning rates, nothing about blocks `>= k`),
//! so every trial of a sweep over adapter settings with the same `k` shares the file.
//!
//! Layout: `<dir>/<key>.safetensors`, one array per example named by its index (a subset
//! when some examples were never computed). `dir` is the workspace's
//! `cache/activations/v1` unless the options name another (the train stage, tune trials
//! and `pipe train` fill it in; with no `dir` there is no disk layer), so the runs and
//! trials of a workspace share it. The file format, its checksum and the eviction policy
//! live in [`pipe_engine::cache::activations`], which `pipe gc` uses without MLX: files are
//! written to a temporary name, sealed with a blake3 checksum, synced and renamed; a file
//! that fails its check or does not match its examples' shapes is deleted and recomputed,
//! never read. After a write, the least recently used files (a hit touches its file) are
//! deleted until the directory fits `disk_mb`; a data set larger than the whole budget is
//! not written. The key is computed in `key`, the files are read and written in `disk`.
//!
//! Hit and miss counters go into the train summary (`metrics.json`): `hits` are rows served
//! from the cache (`disk_hits` of them from entries read from disk), `misses` rows computed
//! through blocks `< k`.
//!
//! # Why it is off by default
//!
//! It is exact up to float rounding, not bit for bit: a state computed once in one batch
//! and reused in another differs from the recomputed one in the last bits (matmul and
//! softmax reduction order depends on the batch's shape). Turning it on by default would
//! change every existing train stage's adapters slightly (and so need a new train
//! `IMPL_VERSION`, rerunning them all); with the disk layer, a run's last bits would also
//! depend on which earlier run filled the file. Its memory grows during the first epoch,
//! outside what `micro_batch: auto` measures, so a default-on cache would eat into that
//! budget unseen. And most runs gain nothing: it is inactive unless `lora.num_layers`
//! leaves frozen blocks at the bottom, and it pays off only for examples seen more than once
//! (1.26x over 3 epochs in BENCHMARKS.md). The trainer prints a hint when a run would
//! benefit.

use super::batch::{BatchSpec, PaddedBatch, TokenizedExample, pad_batch};
use super::loss::{BlockInputs, LossBatch};
use crate::models::llama::Llama;
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::TryIndexOp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use key::{data_key, file_key, model_key};
pub use pipe_schema::train::ActivationCacheConfig;

mod disk;
mod key;

/// What the cache did in one run (written into the train metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationCacheStats {
    /// The block whose inputs are cached (`k`); 0 means nothing could be cached.
    pub block: usize,
    /// Rows served from the cache.
    pub hits: u64,
    /// Of those, rows served from entries read from disk (computed by an earlier run).
    #[serde(default)]
    pub disk_hits: u64,
    /// Rows computed through the frozen blocks.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Computed rows not kept because the memory budget was full.
    pub over_budget: u64,
    /// Entries read from disk at the start.
    pub disk_loaded: u64,
    /// Entries written to disk.
    pub disk_written: u64,
    /// Disk files found damaged (or not matching their examples), deleted and recomputed.
    #[serde(default)]
    pub disk_discarded: u64,
    /// Bytes of cached states held in memory at the end.
    pub memory_bytes: u64,
    /// Positions that skipped the frozen blocks (for throughput accounting).
    pub skipped_positions: u64,
}

/// Which data set a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// The training examples.
    Train,
    /// The validation examples.
    Valid,
}

#[derive(Debug)]
struct SetCache<'a> {
    examples: &'a [TokenizedExample],
    entries: Vec<Option<Array>>,
    /// Which entries were read from disk.
    from_disk: Vec<bool>,
    /// The disk file, when the disk layer is on.
    file: Option<PathBuf>,
    /// Entries in the file as last read or written.
    on_disk: usize,
}

/// The cache of one training run; inactive (every call passes through) when disabled or
/// when block 0 already trains.
#[derive(Debug)]
pub struct ActivationCache<'a> {
    block: usize,
    spec: BatchSpec,
    share_prefix: bool,
    pad_id: u32,
    memory_budget: u64,
    disk_budget: u64,
    sets: [SetCache<'a>; 2],
    stats: ActivationCacheStats,
    step_skipped: u64,
}

/// The first block with a trainable parameter; 0 when the embedding trains (or nothing
/// does), the number of blocks when only the final norm or LM head trains.
pub fn first_trainable_block(model: &Llama) -> usize {
    let n = model.model.layers.len();
    let names: Vec<String> = model
        .trainable_parameters()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    if names.is_empty() {
        return 0;
    }
    names
        .iter()
        .map(|name| {
            if let Some(rest) = name.strip_prefix("model.layers.") {
                rest.split('.')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0)
            } else if name.starts_with("model.embed_tokens") {
                0
            } else {
                n
            }
        })
        .min()
        .unwrap_or(0)
}

/// Options the cache needs from the trainer.
#[derive(Debug, Clone)]
pub struct CacheSetup<'a> {
    /// Batch shape (only `max_seq_len` and `pad_multiple` matter for entries).
    pub spec: BatchSpec,
    /// Whether rows computed together share their prefix.
    pub share_prefix: bool,
    /// Padding id.
    pub pad_id: u32,
    /// Training examples.
    pub train: &'a [TokenizedExample],
    /// Validation examples.
    pub valid: &'a [TokenizedExample],
}

impl<'a> ActivationCache<'a> {
    /// A cache for `model` (already prepared: adapters attached) over the run's data.
    /// Reads the disk layer when it is on.
    pub fn new(
        model: &Llama,
        config: &ActivationCacheConfig,
        setup: CacheSetup<'a>,
    ) -> anyhow::Result<Self> {
        let block = if config.enabled {
            first_trainable_block(model).min(model.model.layers.len())
        } else {
            0
        };
        let set = |examples: &'a [TokenizedExample]| SetCache {
            examples,
            entries: Vec::new(),
            from_disk: Vec::new(),
            file: None,
            on_disk: 0,
        };
        let mut cache = Self {
            block,
            spec: setup.spec,
            share_prefix: setup.share_prefix,
            pad_id: setup.pad_id,
            memory_budget: config.memory_mb << 20,
            disk_budget: config.disk_mb << 20,
            sets: [set(setup.train), set(setup.valid)],
            stats: ActivationCacheStats {
                block,
                ..ActivationCacheStats::default()
            },
            step_skipped: 0,
        };
        if block == 0 {
            return Ok(cache);
        }
        for s in &mut cache.sets {
            s.entries = vec![None; s.examples.len()];
            s.from_disk = vec![false; s.examples.len()];
        }
        if let Some(dir) = config.dir.as_ref().filter(|_| config.disk_mb > 0) {
            cache.open_files(model, dir)?;
        }
        Ok(cache)
    }

    /// Whether batches are served from the cache.
    pub fn active(&self) -> bool {
        self.block > 0
    }

    /// The counters so far; `None` when the cache is inactive.
    pub fn stats(&self) -> Option<ActivationCacheStats> {
        self.active().then(|| {
            let mut s = self.stats.clone();
            s.memory_bytes = self.memory_bytes();
            let seen = s.hits + s.misses;
            s.hit_rate = if seen == 0 {
                0.0
            } else {
                s.hits as f64 / seen as f64
            };
            s
        })
    }

    /// Positions that skipped the frozen blocks since the last call.
    pub fn take_step_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.step_skipped)
    }

    fn memory_bytes(&self) -> u64 {
        self.sets
            .iter()
            .flat_map(|s| s.entries.iter().flatten())
            .map(|a| a.nbytes() as u64)
            .sum()
    }

    /// Replaces the token inputs of `batch` (built from `padded`, whose rows are the
    /// examples `rows` of `set`) by the cached hidden states entering block `k`, computing
    /// and storing the missing ones. Inactive: returns `batch` unchanged.
    pub fn attach(
        &mut self,
        model: &mut Llama,
        set: Set,
        rows: &[usize],
        padded: &PaddedBatch,
        mut batch: LossBatch,
    ) -> anyhow::Result<LossBatch> {
        if !self.active() {
            return Ok(batch);
        }
        let s = set as usize;
        let (fresh, computed_positions) = self.fill(model, s, rows)?;
        self.stats.misses += fresh.len() as u64;
        self.stats.hits += (rows.len() - fresh.len()) as u64;
        self.stats.disk_hits += rows.iter().filter(|&&i| self.sets[s].from_disk[i]).count() as u64;
        let prefix = batch.prefix.as_ref().map_or(0, |p| p.shape()[1]);
        batch.cached = Some(self.assemble(s, rows, padded, prefix, &fresh)?);
        let skipped = (batch.processed_tokens as u64).saturating_sub(computed_positions);
        self.stats.skipped_positions += skipped;
        // Validation's skipped positions are not the training step's.
        if set == Set::Train {
            self.step_skipped += skipped;
        }
        Ok(batch)
    }

    /// Computes the entries of `rows` that set `s` lacks and stores them while the memory
    /// budget lasts. Returns every computed entry (stored or not) and the positions computed.
    fn fill(
        &mut self,
        model: &mut Llama,
        s: usize,
        rows: &[usize],
    ) -> Result<(Vec<(usize, Array)>, u64), Exception> {
        let missing: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.sets[s].entries[i].is_none())
            .collect();
        if missing.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let (entries, positions) = self.compute(model, s, &missing)?;
        let mut used = self.memory_bytes();
        let mut fresh = Vec::with_capacity(missing.len());
        for (i, a) in missing.into_iter().zip(entries) {
            let bytes = a.nbytes() as u64;
            if used + bytes <= self.memory_budget {
                used += bytes;
                self.sets[s].entries[i] = Some(a.clone());
            } else {
                self.stats.over_budget += 1;
            }
            fresh.push((i, a));
        }
        Ok((fresh, positions))
    }

    /// The block inputs of a batch (built from `padded`, with a shared prefix of `prefix`
    /// tokens) whose rows are the examples `rows` of set `s`, from stored or `fresh` entries.
    fn assemble(
        &self,
        s: usize,
        rows: &[usize],
        padded: &PaddedBatch,
        prefix: i32,
        fresh: &[(usize, Array)],
    ) -> Result<BlockInputs, Exception> {
        let entry = |i: usize| -> &Array {
            self.sets[s].entries[i]
                .as_ref()
                .or_else(|| fresh.iter().find(|(j, _)| *j == i).map(|(_, a)| a))
                .expect("every row is cached or fresh")
        };
        let suffix = padded.seq as i32 - prefix;
        let prefix_states = match prefix {
            0 => None,
            p => Some(entry(rows[0]).try_index(0..p)?.expand_dims(0)?),
        };
        let mut row_states = Vec::with_capacity(rows.len());
        for (r, &i) in rows.iter().enumerate() {
            let e = entry(i);
            let len = padded.lengths[r] as i32;
            let own = e.try_index(prefix..len)?;
            let pad = suffix - (len - prefix);
            row_states.push(if pad > 0 {
                let zeros = mlx_rs::ops::zeros::<f32>(&[pad, e.shape()[1]])?.as_dtype(e.dtype())?;
                mlx_rs::ops::concatenate(&[own, zeros], 0)?
            } else {
                own
            });
        }
        Ok(BlockInputs {
            block: self.block,
            prefix: prefix_states,
            rows: mlx_rs::ops::stack(&row_states, 0)?,
        })
    }

    /// Hidden states entering block `k` for the examples `which` of set `s`, computed as
    /// one batch outside any gradient; returns them per example and the positions computed.
    fn compute(
        &self,
        model: &mut Llama,
        s: usize,
        which: &[usize],
    ) -> Result<(Vec<Array>, u64), Exception> {
        let examples = self.sets[s].examples;
        let rows: Vec<&TokenizedExample> = which.iter().map(|&i| &examples[i]).collect();
        let padded = pad_batch(&rows, &self.spec, self.pad_id);
        let batch = if self.share_prefix {
            LossBatch::from_padded_shared(&padded)
        } else {
            LossBatch::from_padded(&padded)
        };
        let k = self.block;
        let (prefix, states) = match &batch.prefix {
            None => {
                let h = model.model.embed_tokens.embed(&batch.inputs)?;
                (None, model.run_blocks(h, 0..k, None, None)?)
            }
            Some(p) => {
                let mut cache = model.new_cache();
                let h = model.model.embed_tokens.embed(p)?;
                let ph = model.run_blocks(h, 0..k, Some(&mut cache), None)?;
                let mut shared = cache.broadcast_batch(rows.len() as i32)?;
                let h = model.model.embed_tokens.embed(&batch.inputs)?;
                let sh = model.run_blocks(h, 0..k, Some(&mut shared), None)?;
                (Some(ph.squeeze_axes(&[0])?), sh)
            }
        };
        let p = prefix.as_ref().map_or(0, |p| p.shape()[0]);
        let mut out = Vec::with_capacity(rows.len());
        for (r, &len) in padded.lengths.iter().enumerate() {
            let own = states.try_index(r as i32)?.try_index(0..len as i32 - p)?;
            out.push(match &prefix {
                None => own,
                Some(ph) => mlx_rs::ops::concatenate(&[ph, &own], 0)?,
            });
        }
        mlx_rs::transforms::eval(out.iter())?;
        Ok((out, batch.processed_tokens as u64))
    }
}

#[cfg(test)]
mod tests;
