//! What `pipe push`, `pipe pull`, `pipe data push/pull` and `pipe run --pull` move: a lock
//! file's outs with their run entries, and recorded data versions.
//!
//! Order matters for readers on other machines: objects go up before the records that name
//! them, and come down (checked) before the local records that name them are written.

use super::transfer::Counts;
use super::{Remote, RemoteError, run_rel, version_rel};
use crate::cache::{DIR_SUFFIX, RunEntry, Store};
use crate::data::version::{self, VersionRecord};
use crate::exec::lockfile::LockFile;
use std::collections::BTreeSet;

/// One stage of a push or pull.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageTransfer {
    /// The stage.
    pub stage: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// `pushed`, `pulled`, `up-to-date` (nothing to move), or `not-on-remote`.
    pub state: &'static str,
}

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    /// The remote.
    pub remote: String,
    /// Objects.
    pub objects: Counts,
    /// Per stage (or per data version).
    pub stages: Vec<StageTransfer>,
}

/// What a pull did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullReport {
    /// The remote.
    pub remote: String,
    /// Objects.
    pub objects: Counts,
    /// Per stage (or per data version).
    pub stages: Vec<StageTransfer>,
    /// Outs written into the workspace because they were missing there.
    pub restored: Vec<String>,
}

/// Every object the hashes are made of; a directory's manifest must be local.
pub(super) fn closure(store: &Store, hashes: &[&String]) -> Result<Vec<String>, RemoteError> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for hash in hashes {
        for hex in store.object_closure(hash)? {
            if seen.insert(hex.clone()) {
                all.push(hex);
            }
        }
    }
    Ok(all)
}

/// Pushes the outs of every stage in `lock`, then their run entries.
pub fn push_lock(
    remote: &Remote,
    store: &Store,
    lock: &LockFile,
) -> Result<PushReport, RemoteError> {
    let hashes: Vec<&String> = lock.stages.values().flat_map(|e| e.outs.values()).collect();
    let objects = remote.push_objects(store, &closure(store, &hashes)?)?;
    let mut stages = Vec::new();
    for (name, entry) in &lock.stages {
        let record = store
            .get_run(&entry.fingerprint)
            .unwrap_or_else(|| RunEntry {
                stage: name.clone(),
                created_ms: 0,
                outs: entry.outs.clone(),
            });
        let rel = run_rel(&entry.fingerprint);
        let state = if remote.get_record(&rel)?.is_some() {
            "up-to-date"
        } else {
            let json = serde_json::to_vec_pretty(&record).expect("serialisable");
            remote.put_record(&rel, json)?;
            "pushed"
        };
        stages.push(StageTransfer {
            stage: name.clone(),
            fingerprint: entry.fingerprint.clone(),
            state,
        });
    }
    Ok(PushReport {
        remote: remote.location().to_string(),
        objects,
        stages,
    })
}

/// Fetches the objects of `hashes` (manifests first, then the files they list).
pub(super) fn fetch_hashes(
    remote: &Remote,
    store: &Store,
    hashes: &[&String],
) -> Result<(Counts, Vec<String>), RemoteError> {
    let manifests: Vec<String> = hashes
        .iter()
        .filter_map(|h| h.strip_suffix(DIR_SUFFIX).map(str::to_owned))
        .collect();
    let (mut counts, mut missing) = remote.fetch_objects(store, &manifests)?;
    let complete: Vec<&String> = hashes
        .iter()
        .copied()
        .filter(|h| {
            h.strip_suffix(DIR_SUFFIX)
                .is_none_or(|bare| !missing.iter().any(|m| m == bare))
        })
        .collect();
    let (more, gone) = remote.fetch_objects(store, &closure(store, &complete)?)?;
    counts += more;
    missing.extend(gone);
    Ok((counts, missing))
}

/// Fetches what restoring `fingerprint` needs: its run entry and every object its outs name.
/// `Ok(None)` when the remote does not have the entry or all of its objects (the stage then
/// runs locally); the entry is recorded locally only once every object is in.
pub fn fetch_run(
    remote: &Remote,
    store: &Store,
    fingerprint: &str,
) -> Result<Option<Counts>, RemoteError> {
    let rel = run_rel(fingerprint);
    let Some(bytes) = remote.get_record(&rel)? else {
        return Ok(None);
    };
    let entry: RunEntry = serde_json::from_slice(&bytes).map_err(|e| RemoteError::BadRecord {
        key: rel,
        remote: remote.location().to_string(),
        why: e.to_string(),
    })?;
    let hashes: Vec<&String> = entry.outs.values().collect();
    let (counts, missing) = fetch_hashes(remote, store, &hashes)?;
    if !missing.is_empty() {
        return Ok(None);
    }
    store.import_run(fingerprint, &entry)?;
    Ok(Some(counts))
}

/// Pulls the outs of every stage in `lock`: fetches their objects and run entries, then
/// restores the outs missing from the workspace (never overwriting a file that exists).
pub fn pull_lock(
    remote: &Remote,
    store: &Store,
    lock: &LockFile,
) -> Result<PullReport, RemoteError> {
    let mut report = PullReport {
        remote: remote.location().to_string(),
        ..PullReport::default()
    };
    for (name, entry) in &lock.stages {
        let have = entry.outs.values().all(|h| store.can_restore(h));
        let state = if have {
            if store.get_run(&entry.fingerprint).is_none() {
                store.import_run(
                    &entry.fingerprint,
                    &RunEntry {
                        stage: name.clone(),
                        created_ms: 0,
                        outs: entry.outs.clone(),
                    },
                )?;
            }
            "up-to-date"
        } else {
            match fetch_run(remote, store, &entry.fingerprint)? {
                Some(counts) => {
                    report.objects += counts;
                    "pulled"
                }
                None => {
                    // No run entry (pushed by hand?): the lock's outs alone may be there.
                    let hashes: Vec<&String> = entry.outs.values().collect();
                    let (counts, missing) = fetch_hashes(remote, store, &hashes)?;
                    report.objects += counts;
                    if missing.is_empty() {
                        "pulled"
                    } else {
                        "not-on-remote"
                    }
                }
            }
        };
        if state != "not-on-remote" {
            for (out, hash) in &entry.outs {
                if !store.root().join(out).exists() {
                    store.restore(out, hash)?;
                    report.restored.push(out.clone());
                }
            }
        }
        report.stages.push(StageTransfer {
            stage: name.clone(),
            fingerprint: entry.fingerprint.clone(),
            state,
        });
    }
    Ok(report)
}

/// Pushes data versions: their files, then their records.
pub fn push_versions(
    remote: &Remote,
    store: &Store,
    records: &[VersionRecord],
) -> Result<PushReport, RemoteError> {
    let hashes: Vec<String> = records
        .iter()
        .map(|r| format!("{}{DIR_SUFFIX}", r.id))
        .collect();
    let refs: Vec<&String> = hashes.iter().collect();
    let objects = remote.push_objects(store, &closure(store, &refs)?)?;
    let mut stages = Vec::new();
    for record in records {
        let rel = version_rel(&record.id);
        let state = if remote.get_record(&rel)?.is_some() {
            "up-to-date"
        } else {
            remote.put_record(&rel, serde_json::to_vec(record).expect("serialisable"))?;
            "pushed"
        };
        stages.push(StageTransfer {
            stage: record.data.clone(),
            fingerprint: record.id.clone(),
            state,
        });
    }
    Ok(PushReport {
        remote: remote.location().to_string(),
        objects,
        stages,
    })
}

/// Pulls the data versions whose id starts with one of `ids` (all when empty) into the
/// local cache and the workspace's version log (`pipe data log` lists them; `pipe data
/// checkout` restores one).
pub fn pull_versions(
    remote: &Remote,
    store: &Store,
    ids: &[String],
) -> Result<PullReport, RemoteError> {
    let mut report = PullReport {
        remote: remote.location().to_string(),
        ..PullReport::default()
    };
    for name in remote.list_records("data/versions/")? {
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if !ids.is_empty() && !ids.iter().any(|w| id.starts_with(&w.to_ascii_lowercase())) {
            continue;
        }
        let rel = version_rel(id);
        let bad = |why: String| RemoteError::BadRecord {
            key: rel.clone(),
            remote: remote.location().to_string(),
            why,
        };
        let bytes = remote
            .get_record(&rel)?
            .ok_or_else(|| bad("listed but gone".into()))?;
        let record: VersionRecord =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if record.id != id {
            return Err(bad(format!("it says it is version {}", record.id)));
        }
        let hash = format!("{id}{DIR_SUFFIX}");
        let (counts, missing) = fetch_hashes(remote, store, &[&hash])?;
        report.objects += counts;
        let state = if missing.is_empty() {
            version::import(store, record.clone()).map_err(|e| bad(format!("{e:#}")))?;
            "pulled"
        } else {
            "not-on-remote"
        };
        report.stages.push(StageTransfer {
            stage: record.data,
            fingerprint: record.id,
            state,
        });
    }
    Ok(report)
}
