//! What a run leaves on disk besides its step log: the best adapter (mlx-lm and PEFT
//! layouts, or a full fine-tune's weights) and the checkpoint `--resume` continues from.
//!
//! ```text
//! checkpoint/trainable.safetensors   every trainable parameter, by name
//! checkpoint/optimizer.safetensors   AdamW's moments and step count
//! checkpoint/state.json              the step, the best validation loss, the config,
//!                                    the micro-batch split and the blake3 of the two
//!                                    files above
//! ```
//!
//! Each file is written atomically, and the folder is written whole under a temporary
//! name and swapped in, so a crash mid-save keeps the previous checkpoint consistent. The
//! swap is two renames (`checkpoint` to `.checkpoint-old`, the new folder to `checkpoint`);
//! a crash between them leaves only `.checkpoint-old`, which [`read_state`] puts back.
//!
//! A checkpoint is good only once the next step's loss, computed from its weights, passed
//! the divergence guard: an update can leave finite weights that give NaN one step later
//! (lr 1e30 on SmolLM2 did). So `.checkpoint-old` stays until the trainer [`confirm`]s the
//! new one, and a divergence at that step [`roll_back`]s to it. A damaged file (truncated,
//! garbled: its hash no longer matches `state.json`) is refused on `--resume`, falling back
//! to an unconfirmed swap's `.checkpoint-old` when that one is whole.

use crate::models::llama::Llama;
use crate::train::adapters;
use crate::train::lora::{AdapterSpec, Method};
use crate::train::micro::BatchPlan;
use crate::train::optim::AdamW;
use anyhow::Context;
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
    /// blake3 of each data file, by name (empty in checkpoints made before it was kept).
    #[serde(default)]
    pub(super) files: std::collections::BTreeMap<String, String>,
}

/// The data files of a checkpoint, hashed into its `state.json`.
const FILES: [&str; 2] = ["trainable.safetensors", "optimizer.safetensors"];

/// The state of the checkpoint in `dir`, when there is one, after checking that its files
/// are whole. A damaged checkpoint gives way to a whole `.checkpoint-old` (a swap not yet
/// confirmed), with a warning; otherwise it is an error that says what to delete.
pub(super) fn read_state(dir: &Path) -> anyhow::Result<Option<CheckpointState>> {
    recover_interrupted_swap(dir)?;
    if !dir.join("state.json").is_file() {
        return Ok(None);
    }
    let damage = match verified_state(dir) {
        Ok(state) => return Ok(Some(state)),
        Err(damage) => damage,
    };
    let old = old_dir(dir);
    if let Ok(state) = verified_state(&old) {
        eprintln!(
            "warning: {damage}; resuming from the previous checkpoint (step {}) instead",
            state.step
        );
        fs_err::remove_dir_all(dir)?;
        fs_err::rename(&old, dir)?;
        pipe_engine::atomic_write::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
        return Ok(Some(state));
    }
    anyhow::bail!(
        "{damage}; delete {} to train from step 0 (or restore it from a backup)",
        dir.display()
    )
}

/// `dir`'s state, if `state.json` parses and every file matches its recorded hash.
fn verified_state(dir: &Path) -> Result<CheckpointState, String> {
    let damaged = |what: String| format!("the checkpoint in {} is damaged: {what}", dir.display());
    let path = dir.join("state.json");
    let text = fs_err::read_to_string(&path).map_err(|e| damaged(e.to_string()))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| damaged(format!("{} does not parse ({e})", path.display())))?;
    for (name, expected) in &state.files {
        let file = dir.join(name);
        let size = fs_err::metadata(&file)
            .map_err(|e| damaged(e.to_string()))?
            .len();
        let got = pipe_engine::cache::hash_file(&file, size).map_err(|e| damaged(e.to_string()))?;
        if &got != expected {
            return Err(damaged(format!(
                "{} is not the file it saved (its blake3 differs from state.json's; truncated or overwritten?)",
                file.display()
            )));
        }
    }
    Ok(state)
}

fn old_dir(dir: &Path) -> std::path::PathBuf {
    dir.parent()
        .unwrap_or(Path::new("."))
        .join(".checkpoint-old")
}

/// The checkpoint just saved gave a good next step: the previous one is no longer needed.
pub(super) fn confirm(dir: &Path) -> anyhow::Result<()> {
    let old = old_dir(dir);
    if old.exists() {
        fs_err::remove_dir_all(old)?;
    }
    Ok(())
}

/// The checkpoint just saved led to a divergence: drop it and put the previous one back.
/// Returns the step of the checkpoint left in `dir`, if any.
pub(super) fn roll_back(dir: &Path) -> anyhow::Result<Option<u64>> {
    let old = old_dir(dir);
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    if old.join("state.json").is_file() {
        fs_err::rename(&old, dir)?;
    }
    pipe_engine::atomic_write::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(verified_state(dir).ok().map(|s| s.step))
}

/// Puts the checkpoint in `dir` back: the trainable parameters into `model`, and the
/// optimizer state (with the hyperparameters of `config`).
pub(super) fn restore(
    model: &mut Llama,
    config: &TrainConfig,
    dir: &Path,
) -> anyhow::Result<AdamW> {
    let delete = || format!("delete {} to train from step 0", dir.display());
    load_trainables(model, &dir.join(FILES[0])).with_context(delete)?;
    AdamW::load(config.optimizer, &dir.join(FILES[1]))
        .map_err(|e| anyhow::anyhow!("cannot read the checkpoint's optimizer state: {e:#}"))
        .with_context(delete)
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
    save_trainables(model, &staging.path().join(FILES[0]))?;
    optimizer
        .save(&staging.path().join(FILES[1]))
        .context("cannot save the optimizer state")?;
    let mut state = state.clone();
    for name in FILES {
        let file = staging.path().join(name);
        let size = fs_err::metadata(&file)?.len();
        state
            .files
            .insert(name.into(), pipe_engine::cache::hash_file(&file, size)?);
    }
    pipe_engine::atomic_write::write_json(&staging.path().join("state.json"), &state)?;
    let staged = staging.keep();
    let old = old_dir(dir);
    if dir.exists() {
        let _ = fs_err::remove_dir_all(&old);
        fs_err::rename(dir, &old)?;
    }
    fs_err::rename(&staged, dir)?;
    // The renames survive a power loss only once the parent folder is synced. The old
    // checkpoint stays until [`confirm`].
    pipe_engine::atomic_write::sync_dir(parent)?;
    Ok(())
}

/// After a crash between `save`'s two renames, `dir` is missing and the previous
/// checkpoint sits whole in `.checkpoint-old`: put it back. A crash before them leaves a
/// half-written staging folder (`.checkpoint-XXXXXX`) that no run will ever read: delete it.
fn recover_interrupted_swap(dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let old = old_dir(dir);
    if let Ok(entries) = fs_err::read_dir(parent) {
        for entry in entries.flatten() {
            let path = entry.path();
            let abandoned = path != old
                && path.is_dir()
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(".checkpoint-"));
            if abandoned {
                // Another rank of the same run may have removed it first.
                match fs_err::remove_dir_all(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
        }
    }
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
    let saved = crate::load::safetensors_header::load(path)
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

    fn state(step: u64) -> CheckpointState {
        CheckpointState {
            step,
            best_valid: None,
            config: TrainConfig::default(),
            batch: None,
            files: Default::default(),
        }
    }

    /// A checkpoint as `save` leaves it, with made-up data files.
    fn fake_checkpoint(dir: &Path, step: u64) {
        fs_err::create_dir_all(dir).unwrap();
        let mut s = state(step);
        for name in FILES {
            let bytes = format!("{name} of step {step}");
            fs_err::write(dir.join(name), &bytes).unwrap();
            s.files.insert(
                name.into(),
                blake3::hash(bytes.as_bytes()).to_hex().to_string(),
            );
        }
        pipe_engine::atomic_write::write_json(&dir.join("state.json"), &s).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_is_refused_or_replaced_by_the_previous_whole_one() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("checkpoint");
        fake_checkpoint(&dir, 4);
        assert_eq!(read_state(&dir).unwrap().unwrap().step, 4);
        // Garbled in place: same length, other bytes.
        fs_err::write(dir.join(FILES[0]), "TRAINABLE.safetensors of step 4").unwrap();
        let err = read_state(&dir).unwrap_err().to_string();
        assert!(
            err.contains("is damaged") && err.contains("trainable.safetensors"),
            "{err}"
        );
        assert!(err.contains(&format!("delete {}", dir.display())), "{err}");
        // A swap not yet confirmed kept the previous checkpoint: resume from it.
        fake_checkpoint(&out.path().join(".checkpoint-old"), 2);
        assert_eq!(read_state(&dir).unwrap().unwrap().step, 2);
        assert!(!out.path().join(".checkpoint-old").exists());
        // A save killed before its swap left a staging folder: the next read removes it.
        let staging = out.path().join(".checkpoint-a1B2c3");
        fs_err::create_dir_all(&staging).unwrap();
        fs_err::write(staging.join(".trainable.safetensors.x.tmp"), "half").unwrap();
        fake_checkpoint(&out.path().join(".checkpoint-old"), 1);
        assert_eq!(read_state(&dir).unwrap().unwrap().step, 2);
        assert!(!staging.exists());
        assert!(
            out.path().join(".checkpoint-old").exists(),
            "the previous one stays"
        );
        fs_err::remove_dir_all(out.path().join(".checkpoint-old")).unwrap();
        // A state.json that does not parse names itself.
        fs_err::write(dir.join("state.json"), "{\"step\": 2,").unwrap();
        let err = read_state(&dir).unwrap_err().to_string();
        assert!(err.contains("state.json does not parse"), "{err}");
    }

    #[test]
    fn roll_back_puts_the_previous_checkpoint_back() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("checkpoint");
        fake_checkpoint(&out.path().join(".checkpoint-old"), 2);
        fake_checkpoint(&dir, 3);
        assert_eq!(roll_back(&dir).unwrap(), Some(2));
        assert_eq!(read_state(&dir).unwrap().unwrap().step, 2);
        // Without a previous one, the bad checkpoint goes and none is left.
        assert_eq!(roll_back(&dir).unwrap(), None);
        assert!(!dir.exists());
    }

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
