//! The run history: every `pipe run` leaves a record in the workspace, kept without any
//! server (`pipe runs list/show/diff/compare`), read by the web UI, and replayed to MLflow
//! when tracking is on ([`crate::tracking`]).
//!
//! Layout, under `runs/history/` in the workspace:
//!
//! ```text
//! <id>/run.json            the RunRecord, rewritten atomically as stages settle
//! <id>/series/<stage>.json the stage's step series (loss curves), written once
//! <id>/logs/<stage>.log    the log of each stage that ran (the workspace keeps only the last)
//! <id>/events.jsonl        every event of the run as it happens, progress included (appended)
//! <id>/mlflow.json         what has been sent to MLflow (the outbox's ledger)
//! produced.jsonl           fingerprint -> the run that produced it (append-only)
//! ```
//!
//! Each run writes only its own folder, and every file in it is replaced whole through
//! the atomic writer, so a crash loses at most the run in flight (its record then says
//! `running` with a dead pid, shown as `crashed`) and never touches older runs. Ids start
//! with the UTC start time to the millisecond, so sorting them sorts runs by age.

pub mod diff;
pub mod events;
pub mod outcome;
pub mod page;
pub mod read;
pub mod record;
pub mod recorder;

use std::path::{Path, PathBuf};

/// The history folder of the workspace at `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("runs").join("history")
}

/// The folder of run `id`.
pub fn run_dir(root: &Path, id: &str) -> PathBuf {
    dir(root).join(id)
}

/// A stage's name as a file name: matrix values may hold `/` (`model=org/name`).
pub fn file_stem(stage: &str) -> String {
    stage.replace(['/', '\\'], "%")
}
