//! Where finished trials live, so no trial ever runs twice.
//!
//! A stage's outs are deleted before it runs, so trials cannot be kept there. They live in
//! the workspace cache instead:
//!
//! ```text
//! cache/tune/v1/trials/<trial key>/    one finished trial (complete, pruned or failed):
//!     trial.json                       its record (status, intermediate values, time, ...)
//!     metrics.json                     what it reported (train trials: {train, eval})
//!     log.txt                          its stdout and stderr
//!     train/, eval.json                train trials: the adapter and the evaluation
//! cache/tune/v1/trials/.run-<key>-<pid>/   a trial being run (renamed when it finishes)
//! cache/tune/v1/claims/<trial key>         locked by the process running that trial
//! cache/tune/v1/studies/<study key>.jsonl  the trial keys of a study, in finishing order
//! ```
//!
//! Tune stages share trials: two stages of a workspace whose trials have the same
//! definition (a stage and its copy with another `out`, or a larger budget beside a
//! smaller one) run each trial once. A trial is run under an OS lock on its claim file,
//! so a second stage that reaches the same trial waits for the first and reads its
//! result; the OS drops the lock of a killed process, so a claim is never stale.
//!
//! The *trial key* is a blake3 hash of everything a trial's result depends on: the trial
//! definition after the point is applied (the command, or the train and evaluate options),
//! the point, the per-trial iterations, and the content hash of every file the trial reads.
//! The *study key* hashes the same definition without a point, plus the search space, the
//! objective, the seed, the initial design size, the pruning rule, and the optimizer and
//! `enqueue` points where they differ from the defaults: everything that decides which
//! points are proposed. The budget (`n_trials`, `max_minutes`) and
//! `parallel` are left out, so raising `n_trials` continues the same study, and an
//! interrupted run picks up every trial that finished (its journal line is written, and
//! synced, as soon as a trial ends). Deleting `cache/tune/` is always safe: trials rerun.

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bump when the layout below or the meaning of a key changes.
const STORE_VERSION: &str = "v1";

/// A blake3 hex digest of `value` as JSON.
pub fn key_of<T: Serialize>(value: &T) -> String {
    let mut hasher = blake3::Hasher::new();
    // Writing JSON into a hasher cannot fail for plain data (maps with string keys).
    if serde_json::to_writer(&mut hasher, value).is_err() {
        hasher.update(b"unserialisable");
    }
    hasher.finalize().to_hex().to_string()
}

/// The trial store of a workspace.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `<root>/cache/tune/`.
    pub fn open(root: &Path) -> Self {
        Self {
            dir: root.join("cache").join("tune").join(STORE_VERSION),
        }
    }

    /// The folder of a finished trial (it exists only once the trial finished).
    pub fn trial_dir(&self, key: &str) -> PathBuf {
        self.dir.join("trials").join(key)
    }

    /// A fresh folder to run a trial in; any leftover of an interrupted attempt at the same
    /// trial by this process id is removed first.
    pub fn staging_dir(&self, key: &str) -> std::io::Result<PathBuf> {
        let dir = self
            .dir
            .join("trials")
            .join(format!(".run-{key}-{}", std::process::id()));
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes the staging folders that interrupted runs left behind (their trials
    /// rerun). Folders of a process that is still alive (another tune stage running in
    /// parallel) are kept.
    pub fn clear_staging(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("trials")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(".run-")
                .or_else(|| name.strip_prefix(".old-"))
            else {
                continue;
            };
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_none_or(|p| p == std::process::id() || !crate::process::is_alive(p)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Takes the claim on trial `key`, waiting while another process (or thread) holds
    /// it; released when the returned file is dropped.
    pub fn claim(&self, key: &str) -> std::io::Result<std::fs::File> {
        let dir = self.dir.join("claims");
        fs_err::create_dir_all(&dir)?;
        let path = dir.join(key);
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .into_parts()
            .0;
        file.lock()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(file)
    }

    /// Moves a finished staging folder to its final place, replacing an older copy (a
    /// trial that failed before and ran again) only after the new one is complete. The
    /// caller holds the trial's [`Store::claim`].
    pub fn commit(&self, staging: &Path, key: &str) -> std::io::Result<PathBuf> {
        let target = self.trial_dir(key);
        if target.exists() {
            // Out of the way by one rename; readers see the old trial or none, never half.
            let old = self
                .dir
                .join("trials")
                .join(format!(".old-{key}-{}", std::process::id()));
            fs_err::rename(&target, &old)?;
            fs_err::remove_dir_all(&old)?;
        }
        // The staging folder's files were each synced as written (crate::atomic_write);
        // sync the folder itself, then the rename, so a journal line written next never
        // names a trial a power loss took away.
        crate::atomic_write::sync_dir(staging)?;
        fs_err::rename(staging, &target)?;
        crate::atomic_write::sync_dir(target.parent().expect("trials folder"))?;
        Ok(target)
    }

    /// The keys of every finished trial in the store (a folder with its `trial.json`).
    pub fn finished_trials(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("trials")) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|k| !k.starts_with('.') && self.trial_dir(k).join("trial.json").is_file())
            .collect();
        keys.sort();
        keys
    }

    /// The studies that have a journal, by key.
    pub fn studies(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("studies")) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".jsonl").map(str::to_owned)
            })
            .collect();
        keys.sort();
        keys
    }

    /// A study's journal as written (empty when it has none).
    pub fn journal_text(&self, study: &str) -> String {
        std::fs::read_to_string(self.journal(study)).unwrap_or_default()
    }

    /// Adds the lines of `other` (another machine's journal of `study`) whose trial this
    /// journal does not list yet, after its own, and writes it atomically. Returns how many
    /// trials were added.
    pub fn merge_journal(&self, study: &str, other: &str) -> std::io::Result<usize> {
        let mine = self.journal_text(study);
        let merged = merge_journals(&mine, other);
        if merged.len() == mine.len() {
            return Ok(0);
        }
        let added = merged.lines().count() - mine.lines().count();
        let path = self.journal(study);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        crate::atomic_write::write_atomic(&path, merged.as_bytes())?;
        Ok(added)
    }

    fn journal(&self, study: &str) -> PathBuf {
        self.dir.join("studies").join(format!("{study}.jsonl"))
    }

    /// The trials a study finished, in order: each trial key with what was recorded beside
    /// it (how its point was chosen). A torn last line is ignored; a key whose folder is
    /// gone is dropped.
    pub fn study_trials(&self, study: &str) -> Vec<(String, serde_json::Value)> {
        let Ok(text) = std::fs::read_to_string(self.journal(study)) else {
            return Vec::new();
        };
        let mut trials: Vec<(String, serde_json::Value)> = Vec::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(key) = entry.get("key").and_then(|k| k.as_str()) else {
                continue;
            };
            if !trials.iter().any(|(k, _)| k == key)
                && self.trial_dir(key).join("trial.json").is_file()
            {
                trials.push((key.to_owned(), entry["origin"].clone()));
            }
        }
        trials
    }

    /// Appends a finished trial (its key and how its point was chosen) to a study's
    /// journal, synced before returning.
    pub fn record<T: Serialize>(&self, study: &str, key: &str, origin: &T) -> std::io::Result<()> {
        let path = self.journal(study);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let created = !path.exists();
        let mut file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let entry = serde_json::json!({"key": key, "origin": origin});
        writeln!(file, "{entry}")?;
        file.sync_all()?;
        match path.parent() {
            Some(parent) if created => crate::atomic_write::sync_dir(parent),
            _ => Ok(()),
        }
    }
}

/// `mine` followed by the lines of `other` whose trial key `mine` does not have (torn or
/// unreadable lines of `other` are left out).
pub fn merge_journals(mine: &str, other: &str) -> String {
    let key = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_owned))
    };
    let known: std::collections::BTreeSet<String> = mine.lines().filter_map(key).collect();
    let mut merged = mine.to_owned();
    if !merged.is_empty() && !merged.ends_with('\n') {
        merged.push('\n');
    }
    let mut added = std::collections::BTreeSet::new();
    for line in other.lines() {
        if let Some(k) = key(line)
            && !known.contains(&k)
            && added.insert(k)
        {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_journals_keeps_this_order_and_adds_only_trials_it_lacks() {
        let line = |k: &str| format!("{{\"key\":\"{k}\",\"origin\":{{\"by\":\"random\"}}}}\n");
        let mine = format!("{}{}", line("a"), line("b"));
        let other = format!("{}{}{}torn{{\n", line("b"), line("c"), line("c"));
        let merged = merge_journals(&mine, &other);
        assert_eq!(merged, format!("{}{}{}", line("a"), line("b"), line("c")));
        assert_eq!(merge_journals(&merged, &mine), merged, "nothing new");
        assert_eq!(merge_journals("", &line("x")), line("x"));
    }

    #[test]
    fn journal_keeps_order_and_skips_torn_lines_and_missing_trials() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path());
        for key in ["aa", "bb"] {
            let staging = store.staging_dir(key).unwrap();
            fs_err::write(staging.join("trial.json"), "{}").unwrap();
            store.commit(&staging, key).unwrap();
            store.record("s", key, &key.len()).unwrap();
        }
        store.record("s", "gone", &0).unwrap();
        let journal = store.journal("s");
        let mut text = fs_err::read_to_string(&journal).unwrap();
        text.push_str("{\"key\": \"b");
        fs_err::write(&journal, text).unwrap();
        let keys: Vec<String> = store
            .study_trials("s")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["aa", "bb"]);
        assert_eq!(store.study_trials("s")[0].1, serde_json::json!(2));
        assert!(store.study_trials("other").is_empty());
        let left = store.staging_dir("cc").unwrap();
        store.clear_staging();
        assert!(!left.exists());
        assert_ne!(key_of(&("a", 1)), key_of(&("a", 2)));
    }
}
