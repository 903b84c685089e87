//! Reading the history: every run newest first, one run by id (or a unique part of one),
//! a stage's series, and which run produced a fingerprint.

use super::record::{RECORD_SCHEMA, RunRecord, Series};
use std::path::Path;

/// Why a run could not be found.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No run matches.
    #[error("no run `{query}` in {dir} (see `pipe runs list`)")]
    NotFound {
        /// What was asked for.
        query: String,
        /// The history folder.
        dir: String,
    },
    /// Several runs match a partial id.
    #[error("`{query}` matches {} runs: {}; give more of the id", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// What was asked for.
        query: String,
        /// The matching ids.
        matches: Vec<String>,
    },
    /// The record exists but cannot be read.
    #[error("cannot read run record {path}: {message}")]
    Unreadable {
        /// The record file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Every run id, newest first.
pub fn ids(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(super::dir(root)) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().join("run.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// Loads run `id` (exact).
pub fn load(root: &Path, id: &str) -> Result<RunRecord, FindError> {
    let path = super::run_dir(root, id).join("run.json");
    let unreadable = |message: String| FindError::Unreadable {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if record.schema > RECORD_SCHEMA {
        return Err(unreadable(format!(
            "written by a newer pipe (record schema {}); upgrade pipe to read it",
            record.schema
        )));
    }
    Ok(record)
}

/// Every readable run, newest first, optionally of one pipeline only.
pub fn list(root: &Path, pipeline: Option<&str>) -> Vec<RunRecord> {
    ids(root)
        .iter()
        .filter_map(|id| load(root, id).ok())
        .filter(|r| pipeline.is_none_or(|p| r.pipeline == p))
        .collect()
}

/// The id `query` names: an exact id, `latest` (or `latest~N`, the run N before it), or
/// a part of one that only one run has (its start, or its random end).
pub fn resolve(root: &Path, query: &str) -> Result<String, FindError> {
    let all = ids(root);
    let not_found = || FindError::NotFound {
        query: query.to_owned(),
        dir: super::dir(root).display().to_string(),
    };
    if let Some(back) = query.strip_prefix("latest") {
        let n = match back.strip_prefix('~') {
            Some(n) => n.parse::<usize>().map_err(|_| not_found())?,
            None if back.is_empty() => 0,
            None => return Err(not_found()),
        };
        return all.get(n).cloned().ok_or_else(not_found);
    }
    if all.iter().any(|id| id == query) {
        return Ok(query.to_owned());
    }
    let matches: Vec<String> = all
        .into_iter()
        .filter(|id| !query.is_empty() && (id.starts_with(query) || id.ends_with(query)))
        .collect();
    match matches.len() {
        0 => Err(not_found()),
        1 => Ok(matches.into_iter().next().expect("one match")),
        _ => Err(FindError::Ambiguous {
            query: query.to_owned(),
            matches,
        }),
    }
}

/// The step series of `stage` in run `id` (empty when it has none).
pub fn series(root: &Path, id: &str, stage: &str) -> Vec<Series> {
    let path = super::run_dir(root, id)
        .join("series")
        .join(format!("{}.json", super::file_stem(stage)));
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The latest run that produced outs with this fingerprint, if the history knows one.
pub fn producer(root: &Path, fingerprint: &str) -> Option<String> {
    let text = std::fs::read_to_string(super::dir(root).join("produced.jsonl")).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fingerprint"] == fingerprint)
        .and_then(|v| v["run"].as_str().map(str::to_owned))
}
