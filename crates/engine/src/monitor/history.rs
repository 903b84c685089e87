//! The monitor's history: one JSON line per evaluation, appended, never rewritten in place.
//!
//! Each entry keeps the per-example outcome (a stable key per example and whether the
//! answer was right), not only the accuracy, so that any two evaluations can be compared
//! pairwise on the examples they share ([`super::rules`]). The file outlives runs (it is
//! no stage's out): it is the monitor's memory from night to night. Appending rewrites the
//! whole file through the atomic writer, so a crash leaves the old history or the new one,
//! never a torn line; a history of a year of nightly entries of a few hundred examples is
//! a few MB.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluation of the watched model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was scored (UTC, RFC 3339).
    pub at: String,
    /// The model, as people read it (`past-tense@champion (version 3)`, a folder).
    pub model: String,
    /// The content hash of the model's adapter files: the baseline is the first entry
    /// with the same hash.
    pub model_hash: String,
    /// The hash of the examples scored (keys and references): an evaluation of the same
    /// model on the same examples is not scored twice.
    pub data_hash: String,
    /// Per example: its key and whether the answer was right.
    pub examples: Vec<Scored>,
    /// Whether this evaluation regressed against the baseline by the rules.
    pub regressed: bool,
}

impl Entry {
    /// Right answers over examples (0 when there are none).
    pub fn accuracy(&self) -> f64 {
        accuracy(&self.examples)
    }
}

/// Right answers over examples (0 when there are none).
pub fn accuracy(examples: &[Scored]) -> f64 {
    let right = examples.iter().filter(|e| e.ok).count();
    right as f64 / examples.len().max(1) as f64
}

/// One example's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scored {
    /// A stable key of the example (a hash of its prompt and reference).
    pub key: String,
    /// Whether the model's answer matched the reference.
    pub ok: bool,
}

/// Reads the history; a missing file is an empty history. A line that does not parse
/// is an error naming the file and line (the history is not guessed at).
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!(
                    "{}:{}: not a monitor history entry; the file is written by the monitor \
                     stage only (move it away to start a new history)",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Appends `entry` (atomically: the old file or the new one, never half a line).
pub fn append(path: &Path, entry: &Entry) -> anyhow::Result<()> {
    let mut text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&serde_json::to_string(entry).context("a history entry serializes")?);
    text.push('\n');
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    crate::atomic_write::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(model: &str, oks: &[bool]) -> Entry {
        Entry {
            at: "2026-12-04T00:00:00Z".into(),
            model: model.into(),
            model_hash: model.into(),
            data_hash: "d".into(),
            examples: oks
                .iter()
                .enumerate()
                .map(|(i, &ok)| Scored {
                    key: format!("k{i}"),
                    ok,
                })
                .collect(),
            regressed: false,
        }
    }

    #[test]
    fn appends_and_reads_back_and_names_a_bad_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("deep/history.jsonl");
        assert!(read(&path).unwrap().is_empty());
        let (a, b) = (entry("a", &[true, false]), entry("b", &[true, true]));
        append(&path, &a).unwrap();
        append(&path, &b).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a.clone(), b]);
        assert_eq!(a.accuracy(), 0.5);
        fs_err::write(&path, "{\"at\": 1}\n").unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("history.jsonl:1"), "{e}");
    }
}
