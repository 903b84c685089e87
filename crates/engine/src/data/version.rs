//! Dataset versions: a data folder snapshotted into the workspace's content store, with a
//! record of what it holds.
//!
//! A version's id is the blake3 of the folder's manifest (the sorted `hash size path`
//! lines of [`crate::cache`]), so it is a pure function of the bytes: the same data gives
//! the same id in every clone, and editing one row gives a new one. The files themselves
//! are ordinary objects of the store, shared with stage outs.
//!
//! ```text
//! cache/v1/data/versions.jsonl   one VersionRecord per line, oldest first (append-only)
//! cache/v1/data/versions.lock    serialises writers (parallel stages, several runs)
//! ```
//!
//! The log is rewritten whole through a temporary file and a rename, so a crash leaves
//! either the old log or the new one. A snapshot of content already in the log adds no
//! line and returns the first record (same `created`), so rerunning a version stage on
//! unchanged data writes byte-identical output and cuts off everything downstream.
//! `pipe gc` keeps every object a logged version needs.

use crate::cache::{DIR_SUFFIX, Store};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One recorded version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// blake3 of the folder's manifest, 64 hex digits.
    pub id: String,
    /// When it was first recorded (RFC 3339, UTC).
    pub created: String,
    /// The workspace-relative folder it was taken from (where `checkout` restores it).
    pub data: String,
    /// Number of files.
    pub files: usize,
    /// Total size in bytes.
    pub bytes: u64,
    /// Non-empty lines of each `.jsonl` file, by path without the extension
    /// (`train`, `valid`, `test` for an ingest folder).
    pub rows: BTreeMap<String, u64>,
    /// Where the data came from: the `source` of the folder's ingest `stats.json`, if any.
    pub sources: Vec<serde_json::Value>,
}

/// Why a version could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The id is not hex.
    #[error("`{id}` is not a version id (hex digits, as `pipe data log` prints them)")]
    NotAnId {
        /// As given.
        id: String,
    },
    /// The workspace has no versions yet.
    #[error(
        "no data versions are recorded in this workspace ({})\nhint: a `version` stage records one when it runs",
        log.display()
    )]
    NoVersions {
        /// The log file looked at.
        log: PathBuf,
    },
    /// No version starts with the id.
    #[error("no data version `{id}` in this workspace\nhint: `pipe data log` lists them")]
    NotFound {
        /// As given.
        id: String,
    },
    /// Several versions start with the id.
    #[error("version id `{id}` is ambiguous: it starts {}\nhint: give more digits", matches.join(", "))]
    Ambiguous {
        /// As given.
        id: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
}

/// `cache/v1/data/versions.jsonl` of the workspace whose store is `store`.
pub fn log_path(store: &Store) -> PathBuf {
    store.dir().join("data").join("versions.jsonl")
}

/// Every recorded version, oldest first. A missing log is an empty one.
pub fn read_log(store: &Store) -> anyhow::Result<Vec<VersionRecord>> {
    let path = log_path(store);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<VersionRecord>(l)
                .map_err(anyhow::Error::from)
                .and_then(|r| {
                    crate::fetch::url::check_digest("blake3", &r.id)
                        .map_err(|e| anyhow::anyhow!("bad `id`: {e}"))?;
                    Ok(r)
                })
                .with_context(|| {
                    format!(
                        "{}:{}: not a version record (was the file edited by hand?)",
                        path.display(),
                        i + 1
                    )
                })
        })
        .collect()
}

/// Finds a recorded version by its id or a unique prefix of it.
pub fn resolve(store: &Store, id: &str) -> anyhow::Result<VersionRecord> {
    let wanted = id.to_ascii_lowercase();
    if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VersionError::NotAnId { id: id.into() }.into());
    }
    let log = read_log(store)?;
    if log.is_empty() {
        return Err(VersionError::NoVersions {
            log: log_path(store),
        }
        .into());
    }
    let mut found: Vec<VersionRecord> = log
        .into_iter()
        .filter(|r| r.id.starts_with(&wanted))
        .collect();
    match found.len() {
        0 => Err(VersionError::NotFound { id: id.into() }.into()),
        1 => Ok(found.remove(0)),
        _ => Err(VersionError::Ambiguous {
            id: id.into(),
            matches: found.into_iter().map(|r| r.id[..16].to_owned()).collect(),
        }
        .into()),
    }
}

/// Snapshots the workspace folder `data` (relative to the root): stores every file in the
/// content store, and records the version in the log unless that content is already there.
/// Returns the record (the first one, for content seen before).
pub fn snapshot(store: &Store, data: &str) -> anyhow::Result<VersionRecord> {
    let dir = store.root().join(data);
    if !dir.is_dir() {
        anyhow::bail!(
            "{data}: not a folder (a version snapshots a data folder, e.g. an ingest `out`)"
        );
    }
    let hash = store
        .store_path(data)?
        .with_context(|| format!("{data}: disappeared while it was being stored"))?;
    let id = hash.strip_suffix(DIR_SUFFIX).unwrap_or(&hash).to_owned();
    let files = store.manifest(&hash)?;
    let mut rows = BTreeMap::new();
    for (_, _, inner) in &files {
        if let Some(stem) = inner.strip_suffix(".jsonl") {
            let path = dir.join(inner);
            let text = fs_err::read_to_string(&path)?;
            let n = text.lines().filter(|l| !l.trim().is_empty()).count();
            rows.insert(stem.to_owned(), n as u64);
        }
    }
    let sources = std::fs::read(dir.join("stats.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| s.get("source").cloned())
        .filter(|s| !s.is_null())
        .into_iter()
        .collect();
    let record = VersionRecord {
        id,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        data: data.trim_end_matches('/').to_owned(),
        files: files.len(),
        bytes: files.iter().map(|(_, size, _)| size).sum(),
        rows,
        sources,
    };
    append(store, record)
}

/// Records a version made on another machine (`pipe data pull`); its files must already be
/// in the store. Returns the logged record (the local one, when the id was known).
pub fn import(store: &Store, record: VersionRecord) -> anyhow::Result<VersionRecord> {
    let hash = format!("{}{DIR_SUFFIX}", record.id);
    anyhow::ensure!(
        store.can_restore(&hash),
        "version {} is not complete in the local cache",
        record.id
    );
    append(store, record)
}

/// Adds `record` to the log under the log's lock, unless its id is already there; returns
/// the logged record.
fn append(store: &Store, record: VersionRecord) -> anyhow::Result<VersionRecord> {
    let path = log_path(store);
    let dir = path.parent().expect("log has a parent");
    fs_err::create_dir_all(dir)?;
    let lock = fs_err::File::create(dir.join("versions.lock"))?;
    lock.file()
        .lock()
        .with_context(|| format!("cannot lock {}", dir.join("versions.lock").display()))?;
    let log = read_log(store)?;
    if let Some(old) = log.into_iter().find(|r| r.id == record.id) {
        return Ok(old);
    }
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&serde_json::to_string(&record)?);
    text.push('\n');
    crate::atomic_write::write_atomic(&path, text.as_bytes())?;
    Ok(record)
}

/// Restores the files of `record` into `dest` (any folder), replacing what is there.
/// Every object is checked against its hash first; the folder is built beside `dest` and
/// renamed into place, so `dest` is never half-restored.
pub fn checkout(store: &Store, record: &VersionRecord, dest: &Path) -> anyhow::Result<()> {
    let hash = format!("{}{DIR_SUFFIX}", record.id);
    store.export_dir(&hash, dest).map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "cannot restore data version {}",
            &record.id[..12.min(record.id.len())]
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        (dir, store)
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn ids_are_content_hashes_and_the_log_has_one_line_per_content() {
        let (dir, store) = workspace();
        write(
            dir.path(),
            "d/train.jsonl",
            "{\"text\":\"a\"}\n{\"text\":\"b\"}\n",
        );
        write(dir.path(), "d/sub/x.bin", "x");
        let v1 = snapshot(&store, "d").unwrap();
        assert_eq!(v1.id.len(), 64);
        assert_eq!(v1.rows, BTreeMap::from([("train".to_owned(), 2)]));
        assert_eq!((v1.files, v1.bytes), (2, 27));
        assert_eq!(
            snapshot(&store, "d").unwrap(),
            v1,
            "same content, same record"
        );
        write(dir.path(), "d/train.jsonl", "{\"text\":\"a\"}\n");
        let v2 = snapshot(&store, "d").unwrap();
        assert_ne!(v2.id, v1.id);
        let log = read_log(&store).unwrap();
        assert_eq!(log, [v1.clone(), v2.clone()]);

        let out = dir.path().join("restored");
        checkout(&store, &v1, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("train.jsonl")).unwrap(),
            "{\"text\":\"a\"}\n{\"text\":\"b\"}\n"
        );
        assert_eq!(std::fs::read(out.join("sub/x.bin")).unwrap(), b"x");
        std::fs::write(out.join("stray.txt"), "edited by hand").unwrap();
        checkout(&store, &v2, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("train.jsonl")).unwrap(),
            "{\"text\":\"a\"}\n"
        );
        assert!(
            !out.join("stray.txt").exists(),
            "the folder is replaced whole"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".pipe-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let (dir, store) = workspace();
        let err = resolve(&store, "ab").unwrap_err().to_string();
        assert!(err.contains("no data versions are recorded"), "{err}");
        write(dir.path(), "d/a.jsonl", "1\n");
        let v = snapshot(&store, "d").unwrap();
        assert_eq!(resolve(&store, &v.id[..6]).unwrap(), v);
        assert_eq!(resolve(&store, &v.id.to_uppercase()).unwrap(), v);
        let err = resolve(&store, "xyz").unwrap_err().to_string();
        assert!(err.contains("not a version id"), "{err}");
        let other = if v.id.starts_with('0') { "1" } else { "0" };
        let err = resolve(&store, other).unwrap_err().to_string();
        assert!(err.contains("pipe data log"), "{err}");
        // Two versions whose ids share their first digit: make one, then look for it.
        let first = &v.id[..1];
        for i in 0..256 {
            write(dir.path(), "d/a.jsonl", &format!("{i}\n"));
            let w = snapshot(&store, "d").unwrap();
            if w.id != v.id && w.id.starts_with(first) {
                let err = resolve(&store, first).unwrap_err().to_string();
                assert!(err.contains("is ambiguous"), "{err}");
                assert!(
                    err.contains(&w.id[..16]) && err.contains(&v.id[..16]),
                    "{err}"
                );
                return;
            }
        }
        panic!("no two of 257 ids share a first hex digit");
    }

    #[test]
    fn a_corrupt_log_line_is_located() {
        let (_dir, store) = workspace();
        let path = log_path(&store);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}\n").unwrap();
        let err = format!("{:#}", read_log(&store).unwrap_err());
        assert!(
            err.contains("versions.jsonl:1: not a version record"),
            "{err}"
        );
        let short =
            r#"{"id":"ab","created":"","data":"d","files":0,"bytes":0,"rows":{},"sources":[]}"#;
        std::fs::write(&path, format!("\n{short}\n")).unwrap();
        let err = format!("{:#}", read_log(&store).unwrap_err());
        assert!(
            err.contains("versions.jsonl:2: not a version record"),
            "{err}"
        );
        assert!(err.contains("bad `id`"), "{err}");
    }
}
