//! Whether a run of the workspace holds the `mlx` slot right now.
//!
//! A `pipe run` gives the accelerator to one stage at a time: stages whose kind uses MLX
//! (train, evaluate, tokenize, ...) or that ask for the `mlx` resource take its `mlx`
//! token (`exec::scheduler::demand`). That token lives inside the run's process, so the
//! playground reads the same facts from outside: the running run's events say which
//! stages started and have not settled, and its pipeline, loaded with the run's `--set`
//! as `pipe run` loaded it, says whether those stages take the slot. While one does, the
//! playground keeps no model in memory: a training's speed and memory budget were
//! measured without a second model beside it.
//!
//! Only the newest runs are read: the workspace lock lets one `pipe run` go at a time,
//! and a waiting one has not started a stage.

use pipe_engine::history::{self, read, record::RunStatus};
use pipe_engine::spec::{self, LoadOptions};
use std::collections::BTreeSet;
use std::path::Path;

/// Runs looked at, newest first.
const NEWEST: usize = 4;

/// What holds the slot (`run ID, stage train`), or `None` when it is free.
pub fn holder(root: &Path) -> Option<String> {
    for id in read::ids(root).into_iter().take(NEWEST) {
        let Ok(record) = read::load(root, &id) else {
            continue;
        };
        if record.effective_status() != RunStatus::Running {
            continue;
        }
        let (events, _) = super::super::live::all_events(&history::events::path(root, &id));
        let mut running = BTreeSet::new();
        for e in &events {
            let Some(stage) = e["stage"].as_str() else {
                continue;
            };
            match e["event"].as_str() {
                Some("stage-start") => {
                    running.insert(stage.to_owned());
                }
                Some("stage-finish" | "stage-failed" | "stage-cached" | "stage-restored") => {
                    running.remove(stage);
                }
                _ => {}
            }
        }
        if running.is_empty() {
            continue;
        }
        let options = LoadOptions {
            root: root.to_owned(),
            sets: record.sets.clone(),
            skip_dep_check: true,
        };
        let pipeline = spec::load(&root.join(&record.pipeline_file), &options).ok();
        for stage in &running {
            // A pipeline that no longer loads (edited since) cannot say: assume the slot
            // is taken, as a training is the costly case.
            let takes_slot = pipeline
                .as_ref()
                .and_then(|p| p.stages.iter().find(|s| &s.name == stage))
                .is_none_or(|s| s.uses_mlx || s.resources.contains_key("mlx"));
            if takes_slot {
                return Some(format!("run {id}, stage `{stage}`"));
            }
        }
    }
    None
}
