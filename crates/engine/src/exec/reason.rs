//! Why a stage must run: [`DirtyReason`], shown by `pipe status`, `--dry-run` and in
//! `stage-start` events. Serialised with a `reason` tag for `--json` consumers.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// One reason a stage is stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum DirtyReason {
    /// The stage never ran (no entry in the lock file).
    FirstRun,
    /// A dep's content changed.
    DepChanged {
        /// The dep.
        path: String,
    },
    /// A param the stage reads changed value.
    ParamChanged {
        /// The dotted param key.
        name: String,
        /// The value at the last run (null if it was not read then).
        old: Value,
        /// The value now (null if it is no longer read).
        new: Value,
    },
    /// The stage's definition (cmd, `with`, paths) changed.
    DefinitionChanged {
        /// The parts that changed (`cmd`, `with.split.valid`), where the lock entry says;
        /// empty for a lock file written before parts were recorded.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        parts: Vec<String>,
    },
    /// pipe's implementation of the stage kind changed.
    ImplVersionChanged,
    /// An out is missing.
    OutMissing {
        /// The out.
        path: String,
    },
    /// An out was modified since the stage wrote it.
    OutModified {
        /// The out.
        path: String,
    },
    /// An upstream stage reran (or will) and changed what this stage reads.
    UpstreamChanged {
        /// The upstream stage.
        stage: String,
    },
    /// `--force`.
    Forced,
    /// The stage has `always_run: true`.
    AlwaysRun,
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::FirstRun => write!(f, "never ran"),
            DirtyReason::DepChanged { path } => write!(f, "dep `{path}` changed"),
            DirtyReason::ParamChanged { name, old, new } => {
                write!(f, "param `{name}` changed: {old} -> {new}")
            }
            DirtyReason::DefinitionChanged { parts } => {
                write!(f, "definition changed")?;
                let named: Vec<String> = parts.iter().take(3).map(|p| format!("`{p}`")).collect();
                if !named.is_empty() {
                    write!(f, ": {}", named.join(", "))?;
                }
                if parts.len() > named.len() {
                    write!(f, " and {} more", parts.len() - named.len())?;
                }
                Ok(())
            }
            DirtyReason::ImplVersionChanged => write!(f, "implementation of its kind changed"),
            DirtyReason::OutMissing { path } => write!(f, "out `{path}` is missing"),
            DirtyReason::OutModified { path } => write!(f, "out `{path}` was modified"),
            DirtyReason::UpstreamChanged { stage } => write!(f, "upstream `{stage}` changed"),
            DirtyReason::Forced => write!(f, "forced"),
            DirtyReason::AlwaysRun => write!(f, "always_run"),
        }
    }
}

/// Reasons joined for one line of output.
pub fn describe(reasons: &[DirtyReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
