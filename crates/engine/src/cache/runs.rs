//! The run cache (fingerprint -> outs) and the registry of lock files, which together
//! decide what `gc` keeps.
//!
//! When a param goes back to an earlier value, the stage's fingerprint is one seen before:
//! its entry here names the outs, the objects are still in the store, and the executor
//! restores them without running anything.

use super::{CacheError, Store, io_err};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One run-cache entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunEntry {
    /// The stage that produced it (informational: the key is the fingerprint).
    pub stage: String,
    /// Milliseconds since the Unix epoch when it was recorded.
    pub created_ms: u64,
    /// Out path -> hash.
    pub outs: BTreeMap<String, String>,
}

fn run_path(store: &Store, fingerprint: &str) -> PathBuf {
    store.dir.join("runs").join(format!("{fingerprint}.json"))
}

pub(crate) fn put(
    store: &Store,
    fingerprint: &str,
    stage: &str,
    outs: &BTreeMap<String, String>,
) -> Result<(), CacheError> {
    let entry = RunEntry {
        stage: stage.to_owned(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        outs: outs.clone(),
    };
    let path = run_path(store, fingerprint);
    let json = serde_json::to_vec_pretty(&entry).expect("serialisable");
    write_atomic(&path, &json)
}

pub(crate) fn import(store: &Store, fingerprint: &str, entry: &RunEntry) -> Result<(), CacheError> {
    let json = serde_json::to_vec_pretty(entry).expect("serialisable");
    write_atomic(&run_path(store, fingerprint), &json)
}

pub(crate) fn get(store: &Store, fingerprint: &str) -> Option<RunEntry> {
    let text = std::fs::read(run_path(store, fingerprint)).ok()?;
    serde_json::from_slice(&text).ok()
}

pub(crate) fn all(store: &Store) -> Vec<(PathBuf, RunEntry)> {
    let Ok(dir) = std::fs::read_dir(store.dir.join("runs")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let entry = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((e.path(), entry))
        })
        .collect()
}

fn locks_file(store: &Store) -> PathBuf {
    store.dir.join("locks")
}

pub(crate) fn register_lock(store: &Store, lock: &Path) -> Result<(), CacheError> {
    // Relative to the root when inside it (the workspace can move), else absolute.
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (lock_abs, root_abs) = (abs(lock), abs(&store.root));
    let rel = lock_abs
        .strip_prefix(&root_abs)
        .unwrap_or(&lock_abs)
        .to_string_lossy()
        .into_owned();
    let path = locks_file(store);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l == rel) {
        return Ok(());
    }
    write_atomic(&path, format!("{text}{rel}\n").as_bytes())
}

pub(crate) fn registered_locks(store: &Store) -> Vec<PathBuf> {
    std::fs::read_to_string(locks_file(store))
        .unwrap_or_default()
        .lines()
        .map(|l| store.root.join(l))
        .filter(|p| p.exists())
        .collect()
}

/// Every out hash recorded in a lock file (read loosely: gc must not depend on the
/// executor's types, and an unreadable lock file keeps nothing alive).
pub(crate) fn hashes_in_lock(lock: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(lock) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(stages) = doc.get("stages").and_then(|s| s.as_mapping()) {
        for stage in stages.values() {
            if let Some(outs) = stage.get("outs").and_then(|o| o.as_mapping()) {
                out.extend(outs.values().filter_map(|v| v.as_str().map(String::from)));
            }
        }
    }
    out
}

/// The directory hash of every dataset version in `data/versions.jsonl`
/// ([`crate::data::version`]), read loosely like lock files: a version is recorded so it
/// can be checked out later, so gc keeps its objects.
pub(crate) fn recorded_versions(store: &Store) -> Vec<String> {
    let text =
        std::fs::read_to_string(store.dir.join("data").join("versions.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("id")?
                .as_str()
                .map(|id| format!("{id}{}", super::DIR_SUFFIX))
        })
        .collect()
}

/// Writes `bytes` to `path` with the atomic writer, as a [`CacheError`].
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    crate::atomic_write::write_atomic(path, bytes).map_err(io_err("cannot write", path))
}
