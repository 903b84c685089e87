//! The retraining a firing monitor starts: a child `pipe run` of the configured pipeline in
//! the same workspace, waited for, its output kept in the monitor's out folder.
//!
//! The parent `pipe run` holds the workspace lock, so the child would wait for its own
//! parent forever. Stage processes get `PIPE_PARENT_RUN` (the parent's PID); a `pipe run`
//! that finds the lock held by exactly that process runs nested, inside its parent's lock
//! ([`crate::exec::lock::acquire`]), instead of waiting.

use anyhow::Context;
use pipe_schema::monitor::OnRegression;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the child run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrained {
    /// The pipeline run.
    pub pipeline: PathBuf,
    /// Its `--set` arguments.
    pub sets: Vec<String>,
    /// Its exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Its output, in the monitor's out folder.
    pub log: PathBuf,
}

impl Retrained {
    /// Whether the child run succeeded.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// The `--set` arguments of `on_regression.set` (`key=value`, the value as YAML).
pub fn sets(on: &OnRegression) -> Vec<String> {
    on.set
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect()
}

/// Runs the retrain pipeline in the workspace at `root` and waits for it; its output goes
/// to `log` (relative to `root`).
pub fn run(root: &Path, on: &OnRegression, log: &Path) -> anyhow::Result<Retrained> {
    let sets = sets(on);
    let log_path = root.join(log);
    if let Some(parent) = log_path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let err = file.try_clone()?;
    // `pipe` is first on a stage's PATH (the binary running the parent).
    let mut command = Command::new("pipe");
    command
        .arg("run")
        .arg(&on.run)
        .arg("--root")
        .arg(root)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    for s in &sets {
        command.arg("--set").arg(s);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start `pipe run {}`", on.run.display()))?;
    Ok(Retrained {
        pipeline: on.run.clone(),
        sets,
        exit_code: status.code(),
        log: log.to_owned(),
    })
}
