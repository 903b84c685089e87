//! What a run leaves on disk besides its step log: the best adapter (mlx-lm and PEFT
//! layouts, or a full fine-tune's weights) and the checkpoint `--resume` continues from.
//!
//! ```text
//! checkpoint/trainable.safetensors   every trainable parameter, by name
//! checkpoint/optimizer.safetensors   AdamW's moments and step count
//! checkpoint/state.json              the step, the best validation loss, the config and
//!                                    the micro-batch split
//! ```
//!
//! Each file is written atomically, and the folder is written whole under a temporary
//! name and swapped in, so a crash mid-save keeps the previous checkpoint consistent. The
//! swap is two renames (`checkpoint` to `.checkpoint-old`, the new folder to `checkpoint`);
//! a crash between them leaves only `.checkpoint-old`, which [`read_state`] puts back.

use crate::models::llama::Llama;
use crate::train::adapters;
use crate::train::lora::{AdapterSpec, Method};
use crate::train::micro::BatchPlan;
use crate::train::optim::AdamW;
use anyhow::Context;
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::TrainConfig;

/// `state.json`: where a resumed run continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) step: u64,
    pub(super) best_valid: Option<(u64, f64)>,
    pub(super) config: TrainConfig,
    /// The micro-batch split in use, so a resumed run replays the same batches.
    #[serde(default)]
    pub(super) batch: Option<BatchPlan>,
}

/// The state of the checkpoint in `dir`, when there is one.
pub(super) fn read_state(dir: &Path) -> anyhow::Result<Option<CheckpointState>> {
    recover_interrupted_swap(dir)?;
    let path = dir.join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs_err::read_to_string(&path)?;
    let state = serde_json::from_str(&text).context("the checkpoint's state.json is damaged")?;
    Ok(Some(state))
}

/// Puts the checkpoint in `dir` back: the trainable parameters into `model`, and the
/// optimizer state (with the hyperparameters of `config`).
pub(super) fn restore(
    model: &mut Llama,
    config: &TrainConfig,
    dir: &Path,
) -> anyhow::Result<AdamW> {
    load_trainables(model, &dir.join("trainable.safetensors"))?;
    AdamW::load(config.optimizer, &dir.join("optimizer.safetensors"))
}

/// Writes the checkpoint into a fresh folder and swaps it in, so a crash mid-save keeps the
/// previous checkpoint whole.
pub(super) fn save(
    model: &Llama,
    optimizer: &AdamW,
    dir: &Path,
    state: &CheckpointState,
) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .tempdir_in(parent)?;
    save_trainables(model, &staging.path().join("trainable.safetensors"))?;
    optimizer
        .save(&staging.path().join("optimizer.safetensors"))
        .context("cannot save the optimizer state")?;
    pipe_engine::atomic_write::write_json(&staging.path().join("state.json"), state)?;
    let staged = staging.keep();
    let old = parent.join(".checkpoint-old");
    if dir.exists() {
        let _ = fs_err::remove_dir_all(&old);
        fs_err::rename(dir, &old)?;
    }
    fs_err::rename(&staged, dir)?;
    // The renames survive a power loss only once the parent folder is synced.
    pipe_engine::atomic_write::sync_dir(parent)?;
    let _ = fs_err::remove_dir_all(&old);
    Ok(())
}

/// After a crash between `save`'s two renames, `dir` is missing and the previous
/// checkpoint sits whole in `.checkpoint-old`: put it back.
fn recover_interrupted_swap(dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let old = parent.join(".checkpoint-old");
    if !dir.exists() && old.join("state.json").is_file() {
        fs_err::rename(&old, dir)?;
        pipe_engine::atomic_write::sync_dir(parent)?;
    }
    Ok(())
}

/// Writes the adapter as it is now into `out_dir`: mlx-lm's layout and PEFT's (`peft/`),
/// or, without an adapter spec (full fine-tuning), every trained weight.
pub(super) fn save_adapter(
    model: &Llama,
    spec: Option<&AdapterSpec>,
    method: Method,
    out_dir: &Path,
) -> anyhow::Result<()> {
    match spec {
        Some(spec) => {
            adapters::save_mlx_lm(model, spec, method, out_dir)?;
            adapters::save_peft(model, spec, &out_dir.join("peft"))
        }
        None => adapters::save_full(model, out_dir),
    }
}

fn save_trainables(model: &Llama, path: &Path) -> anyhow::Result<()> {
    let params = model.trainable_parameters().flatten();
    crate::train::safetensors::write(
        path,
        params.iter().map(|(k, v)| (k.as_ref(), *v)),
        &std::collections::HashMap::new(),
    )
}

fn load_trainables(model: &mut Llama, path: &Path) -> anyhow::Result<()> {
    let saved = Array::load_safetensors(path)
        .map_err(|e| anyhow::anyhow!("cannot read checkpoint {}: {e}", path.display()))?;
    let mut params = model.parameters_mut().flatten();
    for (name, value) in saved {
        let slot = params.get_mut(name.as_str()).with_context(|| {
            format!("{}: `{name}` is not a parameter of this model (was the checkpoint made with other settings?)", path.display())
        })?;
        **slot = value;
    }
    Ok(())
}

#[cfg(test)]
mod swap_tests {
    use super::*;

    #[test]
    fn a_crash_between_the_two_renames_keeps_the_previous_checkpoint() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("checkpoint");
        // What `save` leaves after `checkpoint -> .checkpoint-old` and before the new
        // folder is renamed in.
        let old = out.path().join(".checkpoint-old");
        fs_err::create_dir_all(&old).unwrap();
        fs_err::write(old.join("state.json"), "{}").unwrap();
        recover_interrupted_swap(&dir).unwrap();
        assert!(dir.join("state.json").is_file());
        assert!(!old.exists());
        // With a checkpoint in place, a leftover old folder is not moved over it.
        fs_err::create_dir_all(&old).unwrap();
        fs_err::write(old.join("state.json"), "{\"old\": true}").unwrap();
        recover_interrupted_swap(&dir).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.join("state.json")).unwrap(),
            "{}"
        );
    }
}
