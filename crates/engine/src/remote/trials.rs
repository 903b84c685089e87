//! Finished tune trials and study journals on the remote, so a second machine (or CI)
//! resumes a study where another left it and never reruns a trial it ran:
//!
//! ```text
//! <remote>/v1/tune/trials/<key>.json                {"dir": "<hash>.dir"}: the trial's folder
//! <remote>/v1/tune/studies/<study>.<part>.jsonl     journal snapshots, merged on read
//! ```
//!
//! A trial's folder (its `trial.json`, parameters, metrics, log, and a train trial's
//! adapter) goes up as a directory object like any out, so it is content-addressed and
//! checked on the way down. A journal goes up as a new snapshot named by its content (the
//! remote's journal merged with this machine's), never over another one: two machines
//! pushing at once each add a snapshot, and readers merge every snapshot by trial key, so
//! no push loses another's trials. Merging keeps the order of what was there first.

use super::sync::{PullReport, PushReport, StageTransfer, closure, fetch_hashes};
use super::{Remote, RemoteError};
use crate::cache::Store;
use crate::stages::tune::store::{Store as TrialStore, merge_journals};

fn trial_rel(key: &str) -> String {
    format!("tune/trials/{key}.json")
}

fn snapshot_rel(study: &str, text: &str) -> String {
    let part = &crate::cache::hash_bytes(text.as_bytes())[..16];
    format!("tune/studies/{study}.{part}.jsonl")
}

/// Trial keys and study keys are blake3 hex; a listed name that is not one is no record
/// of ours (and must never become a path).
fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every study on the remote with its snapshots' names.
fn remote_studies(
    remote: &Remote,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, RemoteError> {
    let mut studies: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for name in remote.list_records("tune/studies/")? {
        if let Some((study, _)) = name.split_once('.')
            && is_key(study)
            && name.ends_with(".jsonl")
        {
            studies.entry(study.to_owned()).or_default().push(name);
        }
    }
    Ok(studies)
}

/// A study's journal on the remote: every snapshot merged, in name order.
fn remote_journal(remote: &Remote, snapshots: &[String]) -> Result<String, RemoteError> {
    let mut merged = String::new();
    for name in snapshots {
        if let Some(bytes) = remote.get_record(&format!("tune/studies/{name}"))? {
            merged = merge_journals(&merged, &String::from_utf8_lossy(&bytes));
        }
    }
    Ok(merged)
}

/// The workspace-relative path of a trial's folder.
fn trial_path(key: &str) -> String {
    format!("cache/tune/v1/trials/{key}")
}

/// Pushes every finished trial the remote lacks, then merges every journal into the
/// remote's. Adds one line per pushed trial and journal to `report`.
pub fn push_trials(
    remote: &Remote,
    store: &Store,
    report: &mut PushReport,
) -> Result<(), RemoteError> {
    let trials = TrialStore::open(store.root());
    let mut pending = Vec::new();
    for key in trials.finished_trials() {
        if !is_key(&key) || remote.get_record(&trial_rel(&key))?.is_some() {
            continue;
        }
        if let Some(hash) = store.store_path(&trial_path(&key))? {
            pending.push((key, hash));
        }
    }
    let hashes: Vec<&String> = pending.iter().map(|(_, h)| h).collect();
    report.objects += remote.push_objects(store, &closure(store, &hashes)?)?;
    for (key, hash) in &pending {
        let record = serde_json::json!({ "dir": hash });
        remote.put_record(&trial_rel(key), record.to_string().into_bytes())?;
        report.stages.push(StageTransfer {
            stage: "tune trial".into(),
            fingerprint: key.clone(),
            state: "pushed",
        });
    }
    let on_remote = remote_studies(remote)?;
    for study in trials.studies().into_iter().filter(|s| is_key(s)) {
        let mine = trials.journal_text(&study);
        let snapshots = on_remote.get(&study).map_or(&[][..], Vec::as_slice);
        let theirs = remote_journal(remote, snapshots)?;
        // The remote's order first: machines that pushed before keep their trial indexes.
        let merged = merge_journals(&theirs, &mine);
        let state = if merged == theirs {
            "up-to-date"
        } else {
            remote.put_record(&snapshot_rel(&study, &merged), merged.into_bytes())?;
            "pushed"
        };
        report.stages.push(StageTransfer {
            stage: "tune study".into(),
            fingerprint: study,
            state,
        });
    }
    Ok(())
}

/// Pulls every trial on the remote that this workspace lacks (each object checked against
/// its hash), then merges the remote's journals into the local ones.
pub fn pull_trials(
    remote: &Remote,
    store: &Store,
    report: &mut PullReport,
) -> Result<(), RemoteError> {
    let trials = TrialStore::open(store.root());
    let have: std::collections::BTreeSet<String> = trials.finished_trials().into_iter().collect();
    for name in remote.list_records("tune/trials/")? {
        let Some(key) = name.strip_suffix(".json").filter(|k| is_key(k)) else {
            continue;
        };
        if have.contains(key) {
            continue;
        }
        let rel = trial_rel(key);
        let bad = |why: String| RemoteError::BadRecord {
            key: rel.clone(),
            remote: remote.location().to_string(),
            why,
        };
        let bytes = remote
            .get_record(&rel)?
            .ok_or_else(|| bad("listed but gone".into()))?;
        let record: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let hash = record["dir"]
            .as_str()
            .filter(|h| h.ends_with(crate::cache::DIR_SUFFIX))
            .ok_or_else(|| bad("no `dir` hash".into()))?
            .to_owned();
        let (counts, missing) = fetch_hashes(remote, store, &[&hash])?;
        report.objects += counts;
        let state = if missing.is_empty() {
            let staging = trials
                .staging_dir(key)
                .map_err(|e| bad(format!("cannot stage it: {e}")))?;
            store
                .export_dir(&hash, &staging)
                .map_err(|e| bad(format!("cannot restore it: {e}")))?;
            trials
                .commit(&staging, key)
                .map_err(|e| bad(format!("cannot store it: {e}")))?;
            "pulled"
        } else {
            "not-on-remote"
        };
        report.stages.push(StageTransfer {
            stage: "tune trial".into(),
            fingerprint: key.to_owned(),
            state,
        });
    }
    for (study, snapshots) in remote_studies(remote)? {
        let theirs = remote_journal(remote, &snapshots)?;
        let added = trials
            .merge_journal(&study, &theirs)
            .map_err(|e| RemoteError::BadRecord {
                key: format!("tune/studies/{study}"),
                remote: remote.location().to_string(),
                why: format!("cannot merge it into the local journal: {e}"),
            })?;
        report.stages.push(StageTransfer {
            stage: "tune study".into(),
            fingerprint: study,
            state: if added > 0 { "pulled" } else { "up-to-date" },
        });
    }
    Ok(())
}
