//! The disk layer: each data set's entries in one file named by its key ([`super::key`]),
//! read when a run starts and written back when the run holds more entries than the file.
//! The file format, its checksum and the eviction policy are the engine's
//! ([`pipe_engine::cache::activations`]); this module computes nothing, it moves states.

use super::ActivationCache;
use super::key::{data_key, file_key, input_len, model_key};
use crate::models::llama::Llama;
use anyhow::Context;
use mlx_rs::Array;
use std::path::Path;

impl ActivationCache<'_> {
    /// Finds each non-empty data set's file under `dir`, reading it when it exists.
    pub(super) fn open_files(&mut self, model: &Llama, dir: &Path) -> anyhow::Result<()> {
        let model = model_key(model, self.block)?;
        for i in 0..2 {
            let examples = self.sets[i].examples;
            if examples.is_empty() {
                continue;
            }
            let key = file_key(&model, &data_key(examples, self.spec.max_seq_len));
            let file = pipe_engine::cache::activations::entry_path(dir, &key);
            if file.is_file() {
                self.load(i, &file)?;
            }
            self.sets[i].file = Some(file);
        }
        Ok(())
    }

    /// Reads the entries of data set `set` from `file`, as many as the memory budget holds.
    fn load(&mut self, set: usize, file: &Path) -> anyhow::Result<()> {
        if let Err(why) = pipe_engine::cache::activations::check(file) {
            return self.discard(file, &why);
        }
        let loaded = match crate::load::safetensors_header::load(file) {
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
