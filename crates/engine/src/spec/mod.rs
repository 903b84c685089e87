//! The YAML pipeline spec: reading a pipeline file into a resolved, validated [`Pipeline`].
//!
//! Resolution happens once, up front, so nothing runs when anything is wrong:
//! 1. parse YAML and check every key against the schema ("did you mean" on typos);
//! 2. merge params (`params_file`, then inline `params`, then `--set` overrides);
//! 3. per stage: merge `extends` presets from `<root>/stages/*.yaml`, expand `matrix` into
//!    one stage per combination (`train@rank=8,lr=1e-4`), render every string with
//!    minijinja (undefined names are errors), normalise paths, look up the params it reads;
//! 4. cross-stage checks: `needs` names, outs written twice or nested in another out, deps
//!    that neither exist nor are produced.
//!
//! Cycles are found when the DAG is built ([`crate::dag`]). The schema is documented for
//! users in `docs/pipeline-schema.md`.

mod checks;
pub mod diag;
mod fields;
pub mod locate;
mod resolve;
pub mod schema;
mod values;
mod with;

use crate::stages::Kind;
pub use diag::{Diagnostic, Diagnostics, Pos};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys allowed at the top of a pipeline file.
pub const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "params",
    "params_file",
    "vars",
    "tracking",
    "notify",
    "remote",
    "stages",
];
/// Keys allowed in a stage.
pub const STAGE_KEYS: &[&str] = &[
    "kind",
    "desc",
    "cmd",
    "deps",
    "outs",
    "params",
    "with",
    "needs",
    "metrics",
    "matrix",
    "always_run",
    "frozen",
    "extends",
    "resources",
];

/// What to load and how.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The workspace root: paths in the pipeline are relative to it.
    pub root: PathBuf,
    /// `--set key.path=value` overrides, in order.
    pub sets: Vec<String>,
    /// Skip the check that every dep exists or is produced (for commands that only look
    /// at the pipeline, like `pipe dag` on a fresh clone without its data).
    pub skip_dep_check: bool,
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read pipeline {path}")]
    Read {
        /// The pipeline file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The pipeline is invalid; every problem found is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

pub use pipe_schema::tune::Cmd;

/// A resolved stage: templates rendered, matrix expanded, paths normalised.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Unique name (`train@rank=8,lr=1e-4` for matrix expansions).
    pub name: String,
    /// The name in the file, before matrix expansion.
    pub base: String,
    /// What the stage does.
    pub kind: Kind,
    /// The command of a `cmd` stage.
    pub cmd: Option<Cmd>,
    /// Input files or directories, relative to the workspace root.
    pub deps: Vec<String>,
    /// Output files or directories, relative to the workspace root.
    pub outs: Vec<String>,
    /// The dotted params the stage reads, with their values.
    pub params: BTreeMap<String, Value>,
    /// The kind's configuration, resolved from `with:` when the pipeline loaded (see
    /// [`crate::stages::Resolved::config`]): hashed into the fingerprint, and passed to the
    /// stage's process.
    pub config: Value,
    /// Whether the stage uses the accelerator (and so takes the `mlx` slot by default).
    pub uses_mlx: bool,
    /// Stages that must finish first (expanded names).
    pub needs: Vec<String>,
    /// JSON metrics files the stage writes (also tracked like outs).
    pub metrics: Vec<String>,
    /// This expansion's matrix values (empty without `matrix`).
    pub matrix: BTreeMap<String, Value>,
    /// Run every time, even when nothing changed.
    pub always_run: bool,
    /// Never run; keep the last outs.
    pub frozen: bool,
    /// Resource tokens the stage holds while running (e.g. `mlx: 1`, `mem_gb: 8`).
    pub resources: BTreeMap<String, u64>,
    /// Where the stage is defined in the pipeline file.
    pub pos: Pos,
}

impl Stage {
    /// A `cmd` stage with nothing but a name, for tests to fill in.
    #[cfg(test)]
    pub(crate) fn bare(name: &str) -> Self {
        Stage {
            name: name.into(),
            base: name.split('@').next().unwrap_or(name).into(),
            kind: Kind::CMD,
            cmd: None,
            deps: Vec::new(),
            outs: Vec::new(),
            params: BTreeMap::new(),
            config: Value::Null,
            uses_mlx: false,
            needs: Vec::new(),
            metrics: Vec::new(),
            matrix: BTreeMap::new(),
            always_run: false,
            frozen: false,
            resources: BTreeMap::new(),
            pos: Pos::default(),
        }
    }

    /// Everything the stage writes: its outs, then metrics files not already listed.
    pub fn all_outs(&self) -> impl Iterator<Item = &String> {
        self.outs
            .iter()
            .chain(self.metrics.iter().filter(|m| !self.outs.contains(m)))
    }
}

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `name:` or the file stem.
    pub name: String,
    /// The pipeline file as given.
    pub file: PathBuf,
    /// The workspace root.
    pub root: PathBuf,
    /// All params after merging and overrides.
    pub params: Value,
    /// Stages in file order (matrix expansions in combination order).
    pub stages: Vec<Stage>,
    /// The file's text, kept to locate errors found later (cycles).
    pub source: String,
    /// Where runs are logged besides the local history (`tracking:`), checked.
    pub tracking: Option<pipe_schema::tracking::TrackingConfig>,
    /// Who hears about a run's outcome (`notify:`), checked.
    pub notify: Option<pipe_schema::notify::NotifyConfig>,
    /// The shared cache `pipe push`/`pull` and `run --pull` use (`remote:`), checked.
    pub remote: Option<pipe_schema::remote::RemoteConfig>,
}

impl Pipeline {
    /// The lock file: `<stem>.lock` next to the pipeline (`pipe.yaml` -> `pipe.lock`).
    pub fn lock_path(&self) -> PathBuf {
        self.file.with_extension("lock")
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// A diagnostic pointing at stage `name`'s definition.
    pub fn diag_at_stage(&self, name: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.stage(name).map_or(Pos::default(), |s| s.pos);
        Diagnostic::new(&self.file, &self.source, pos, message)
    }
}

/// Loads and validates the pipeline at `file`.
pub fn load(file: &Path, options: &LoadOptions) -> Result<Pipeline, SpecError> {
    let source = fs_err::read_to_string(file).map_err(|source| SpecError::Read {
        path: file.to_owned(),
        source,
    })?;
    resolve::resolve(file, source, options).map_err(SpecError::Invalid)
}

/// Normalises a workspace-relative path as written in a pipeline: strips `./` and trailing
/// `/`; refuses absolute paths and `..` (outs must stay inside the workspace, and keys
/// must not depend on where the workspace is).
pub fn normalize_path(raw: &str) -> Result<String, &'static str> {
    if raw.trim().is_empty() {
        return Err("empty path");
    }
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed; paths are relative to the workspace root");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("`..` is not allowed; paths must stay inside the workspace"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("the workspace root itself cannot be a dep or an out");
    }
    Ok(parts.join("/"))
}

/// Whether `inner` is `outer` or lies inside the directory `outer` (both normalised).
pub fn path_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || (inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes()[outer.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalize_path("./data//raw/").unwrap(), "data/raw");
        assert!(normalize_path("/etc").is_err());
        assert!(normalize_path("a/../b").is_err());
        assert!(path_within("data/raw/x", "data/raw"));
        assert!(!path_within("data/rawx", "data/raw"));
    }
}
