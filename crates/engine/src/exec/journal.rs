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

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: std::io::BufWriter<std::fs::File>,
}

impl Journal {
    /// Starts the journal of a new run.
    pub fn create(pipeline: &Pipeline, dag: &Dag) -> std::io::Result<Self> {
        let path = journal_path(&pipeline.root);
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
    let path = journal_path(root);
    let text = fs_err::read_to_string(&path)?;
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{}: no run header: {e}", path.display()))?;
    let events = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok((header, events))
}
