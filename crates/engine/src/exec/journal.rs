//! The run journal, `cache/v1/journal.jsonl`: rewritten by every `pipe run`, it opens with
//! a header naming the pipeline's stages and edges, then holds each run event as it
//! happens (the same objects as `pipe run --json`). Stages that describe the run itself,
//! like `report`, read it: which stages ran, were restored or cached, and how long each
//! took. Each line is flushed as written, so a reader sees every event before its own.

use super::events::Stamped;
use crate::dag::Dag;
use crate::spec::Pipeline;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The journal's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Always `run-start`.
    pub event: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Stages in file order, as `(name, kind)`.
    pub stages: Vec<(String, String)>,
    /// Edges as indexes into `stages`, upstream first.
    pub edges: Vec<(usize, usize)>,
}

/// Where the journal of the workspace at `root` lives.
pub fn journal_path(root: &Path) -> PathBuf {
    root.join("cache").join("v1").join("journal.jsonl")
}

/// The journal of a nested run (one a stage started, inside its parent's lock: a
/// monitor's retraining), which must not overwrite its parent's journal.
pub fn nested_journal_path(root: &Path, pid: u32) -> PathBuf {
    root.join("cache")
        .join("v1")
        .join(format!("journal-{pid}.jsonl"))
}

/// The journal a stage process reads: its own run's, found by the PID of the `pipe run`
/// that started it (`PIPE_PARENT_RUN`): a nested run's when that run is nested, else the
/// workspace's.
pub fn current_journal_path(root: &Path) -> PathBuf {
    std::env::var(super::lock::PARENT_RUN_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .map(|pid| nested_journal_path(root, pid))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| journal_path(root))
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: std::io::BufWriter<std::fs::File>,
}

impl Journal {
    /// Starts the journal of a new run.
    pub fn create(pipeline: &Pipeline, dag: &Dag) -> std::io::Result<Self> {
        Self::create_at(&journal_path(&pipeline.root), pipeline, dag)
    }

    /// Starts a journal at `path` (a nested run's: [`nested_journal_path`]).
    pub fn create_at(path: &Path, pipeline: &Pipeline, dag: &Dag) -> std::io::Result<Self> {
        let path = path.to_owned();
        fs_err::create_dir_all(path.parent().expect("journal path has a parent"))?;
        let file = fs_err::File::create(&path)?.into_parts().0;
        let mut journal = Self {
            file: std::io::BufWriter::new(file),
        };
        let header = Header {
            event: "run-start".into(),
            pipeline: pipeline.name.clone(),
            stages: pipeline
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.kind.name().to_owned()))
                .collect(),
            edges: (0..pipeline.stages.len())
                .flat_map(|i| dag.upstream(i).map(move |(up, _)| (up, i)))
                .collect(),
        };
        journal.line(&header)?;
        Ok(journal)
    }

    /// Appends one event.
    pub fn record(&mut self, event: &Stamped<'_>) -> std::io::Result<()> {
        self.line(event)
    }

    fn line<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, value)?;
        self.file.write_all(b"\n")?;
        self.file.flush()
    }
}

/// Reads the journal: the header and every event so far.
pub fn read(root: &Path) -> anyhow::Result<(Header, Vec<serde_json::Value>)> {
    let path = current_journal_path(root);
    let text = fs_err::read_to_string(&path)?;
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{}: no run header: {e}", path.display()))?;
    let events = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok((header, events))
}
