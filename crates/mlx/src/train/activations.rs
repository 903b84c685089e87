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
//! not written.
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
use anyhow::Context;
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::TryIndexOp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Schema version of the key and the file layout.
const SCHEMA: &str = "pipe-activations-v1";

pub use pipe_schema::train::ActivationCacheConfig;

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

/// The base-model part of the key: `k`, the config, the kernel, and every parameter of the
/// embedding and the blocks below `k` (see the module documentation).
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

fn input_len(e: &TokenizedExample, max_seq_len: usize) -> usize {
    e.len().saturating_sub(1).min(max_seq_len)
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
            let model = model_key(model, block)?;
            for i in 0..2 {
                let examples = cache.sets[i].examples;
                if examples.is_empty() {
                    continue;
                }
                let key = file_key(&model, &data_key(examples, cache.spec.max_seq_len));
                let file = pipe_engine::cache::activations::entry_path(dir, &key);
                if file.is_file() {
                    cache.load(i, &file)?;
                }
                cache.sets[i].file = Some(file);
            }
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

    fn load(&mut self, set: usize, file: &Path) -> anyhow::Result<()> {
        if let Err(why) = pipe_engine::cache::activations::check(file) {
            return self.discard(file, &why);
        }
        let loaded = match Array::load_safetensors(file) {
            Ok(loaded) => loaded,
            Err(e) => return self.discard(file, &format!("MLX cannot read it: {e}")),
        };
        let examples = self.sets[set].examples;
        let mut picked = Vec::new();
        for (name, a) in loaded {
            let i: usize = match name.parse() {
                Ok(i) if i < examples.len() => i,
                _ => return self.discard(file, "an entry names no example"),
            };
            if a.ndim() != 2
                || a.shape()[0] as usize != input_len(&examples[i], self.spec.max_seq_len)
            {
                return self.discard(file, "an entry's shape does not match its example");
            }
            picked.push((i, a));
        }
        picked.sort_by_key(|(i, _)| *i);
        let mut used = self.memory_bytes();
        let mut kept = 0;
        for (i, a) in picked {
            let bytes = a.nbytes() as u64;
            if used + bytes > self.memory_budget {
                break;
            }
            a.eval()?;
            used += bytes;
            self.sets[set].entries[i] = Some(a);
            self.sets[set].from_disk[i] = true;
            kept += 1;
        }
        self.sets[set].on_disk = kept;
        self.stats.disk_loaded += kept as u64;
        // A hit keeps the file young for the eviction order.
        pipe_engine::cache::activations::touch(file);
        Ok(())
    }

    /// A file that is damaged or does not fit its examples is deleted, never read; its
    /// states are recomputed (and written again).
    fn discard(&mut self, file: &Path, why: &str) -> anyhow::Result<()> {
        eprintln!(
            "warning: activation cache file {} is unusable ({why}); deleted, its states are recomputed",
            file.display()
        );
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot delete {}", file.display()));
            }
            _ => {}
        }
        self.stats.disk_discarded += 1;
        Ok(())
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
        let missing: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.sets[s].entries[i].is_none())
            .collect();
        let mut fresh: Vec<(usize, Array)> = Vec::new();
        let mut computed_positions = 0;
        if !missing.is_empty() {
            let (entries, positions) = self.compute(model, s, &missing)?;
            computed_positions = positions;
            let mut used = self.memory_bytes();
            for (i, a) in missing.iter().copied().zip(entries) {
                let bytes = a.nbytes() as u64;
                if used + bytes <= self.memory_budget {
                    used += bytes;
                    self.sets[s].entries[i] = Some(a.clone());
                } else {
                    self.stats.over_budget += 1;
                }
                fresh.push((i, a));
            }
        }
        self.stats.misses += missing.len() as u64;
        self.stats.hits += (rows.len() - missing.len()) as u64;
        self.stats.disk_hits += rows.iter().filter(|&&i| self.sets[s].from_disk[i]).count() as u64;
        let entry = |i: usize| -> &Array {
            self.sets[s].entries[i]
                .as_ref()
                .or_else(|| fresh.iter().find(|(j, _)| *j == i).map(|(_, a)| a))
                .expect("every row is cached or fresh")
        };
        let prefix = batch.prefix.as_ref().map_or(0, |p| p.shape()[1]);
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
        batch.cached = Some(BlockInputs {
            block: self.block,
            prefix: prefix_states,
            rows: mlx_rs::ops::stack(&row_states, 0)?,
        });
        let skipped = (batch.processed_tokens as u64).saturating_sub(computed_positions);
        self.stats.skipped_positions += skipped;
        // Validation's skipped positions are not the training step's.
        if set == Set::Train {
            self.step_skipped += skipped;
        }
        Ok(batch)
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

    /// Writes each data set's entries to its disk file when it holds more than the file
    /// does, then trims the directory to the disk budget. The disk layer only saves time,
    /// so a failed write (a full disk) is a warning, not the end of the training run.
    pub fn persist(&mut self) {
        for s in &mut self.sets {
            let Some(file) = &s.file else { continue };
            let present: Vec<(String, &Array)> = s
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.as_ref().map(|a| (i.to_string(), a)))
                .collect();
            if present.len() <= s.on_disk {
                continue;
            }
            let bytes: u64 = present.iter().map(|(_, a)| a.nbytes() as u64).sum();
            if bytes > self.disk_budget {
                continue;
            }
            match write_file(file, &present, self.disk_budget) {
                Ok(()) => {
                    self.stats.disk_written += (present.len() - s.on_disk) as u64;
                    s.on_disk = present.len();
                }
                Err(e) => eprintln!(
                    "warning: cannot write the activation cache file {}: {e:#}",
                    file.display()
                ),
            }
        }
    }
}

/// Writes `entries` to `file` (temporary name, seal, rename; see
/// [`pipe_engine::cache::activations`]) and trims its directory to `budget` bytes.
fn write_file(file: &Path, entries: &[(String, &Array)], budget: u64) -> anyhow::Result<()> {
    use pipe_engine::cache::activations as files;
    let dir = file.parent().context("a cache file has a directory")?;
    fs_err::create_dir_all(dir)?;
    let key = file.file_stem().and_then(|s| s.to_str()).unwrap_or("entry");
    let tmp = files::temp_path(dir, key);
    let metadata = std::collections::HashMap::from([(
        files::CHECKSUM_KEY.to_owned(),
        files::UNSEALED.to_owned(),
    )]);
    let written = Array::save_safetensors(
        entries.iter().map(|(n, a)| (n.as_str(), *a)),
        &metadata,
        &tmp,
    )
    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))
    .and_then(|()| Ok(files::seal(&tmp)?))
    .and_then(|()| Ok(files::publish(&tmp, file)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    files::trim(dir, budget, file)?;
    Ok(())
}

#[cfg(test)]
mod tests;
