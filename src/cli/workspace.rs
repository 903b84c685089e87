//! What every pipeline command shares: which pipeline, which workspace root, `--set`
//! overrides, and loading + validating the pipeline into a DAG (validation errors exit 2).

use super::UsageError;
use pipe_engine::dag::{self, Dag};
use pipe_engine::spec::{self, Diagnostics, LoadOptions, Pipeline, SpecError};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Selecting a pipeline and its workspace.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkspaceArgs {
    /// The pipeline file.
    #[arg(default_value = "pipe.yaml")]
    pub pipeline: PathBuf,
    /// Workspace root: paths in the pipeline are relative to it, and `cache/` lives in it.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Override a param, like `--set train.lr=3e-4` (repeatable; the value is YAML).
    #[arg(long = "set", short = 'S', value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl WorkspaceArgs {
    /// The workspace root (the current directory unless `--root`).
    pub fn root(&self) -> anyhow::Result<PathBuf> {
        match &self.root {
            Some(r) => Ok(r.clone()),
            None => Ok(std::env::current_dir()?),
        }
    }

    /// Loads and validates the pipeline and builds its graph.
    pub fn load(&self) -> anyhow::Result<(Pipeline, Dag)> {
        self.load_with(false)
    }

    /// Like [`Self::load`]; `structure_only` skips the check that deps exist (for
    /// commands that only describe the pipeline).
    pub fn load_with(&self, structure_only: bool) -> anyhow::Result<(Pipeline, Dag)> {
        let root = self.root()?;
        if !root.is_dir() {
            return Err(UsageError(format!(
                "workspace root {} is not a directory",
                root.display()
            ))
            .into());
        }
        let options = LoadOptions {
            root,
            sets: self.sets.clone(),
            skip_dep_check: structure_only,
        };
        let pipeline = match spec::load(&self.pipeline, &options) {
            Ok(p) => p,
            Err(SpecError::Invalid(d)) => return Err(UsageError(d.to_string()).into()),
            Err(e @ SpecError::Read { .. }) => {
                let mut msg = anyhow::Error::from(e)
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ");
                if !self.pipeline.exists() {
                    msg.push_str(
                        "\n  hint: pass the pipeline file, e.g. `pipe run pipelines/train.yaml`",
                    );
                }
                return Err(UsageError(msg).into());
            }
        };
        let dag =
            dag::build(&pipeline).map_err(|d| UsageError(Diagnostics(vec![*d]).to_string()))?;
        Ok((pipeline, dag))
    }
}

/// Resolves `-s` names (a full name, or a matrix base name for all its expansions) to
/// stage indices; with `downstream`, adds everything below them.
pub fn select(
    pipeline: &Pipeline,
    dag: &Dag,
    names: &[String],
    downstream: bool,
) -> anyhow::Result<Option<BTreeSet<usize>>> {
    if names.is_empty() {
        if downstream {
            return Err(UsageError("--downstream needs -s STAGE".into()).into());
        }
        return Ok(None);
    }
    let mut picked = BTreeSet::new();
    for name in names {
        let found: Vec<usize> = (0..pipeline.stages.len())
            .filter(|&i| pipeline.stages[i].name == *name || pipeline.stages[i].base == *name)
            .collect();
        if found.is_empty() {
            let mut msg = format!("no stage named `{name}` in {}", pipeline.file.display());
            let all = pipeline.stages.iter().map(|s| s.name.as_str());
            if let Some(s) = spec::diag::did_you_mean(name, all) {
                msg.push_str(&format!("\n  hint: did you mean `{s}`?"));
            }
            return Err(UsageError(msg).into());
        }
        picked.extend(found);
    }
    if downstream {
        picked = dag.downstream_closure(picked);
    }
    Ok(Some(picked))
}
