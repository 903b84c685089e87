//! Finished tune trials and study journals on the remote, so a second machine (or CI)
//! resumes a study where another left it and never reruns a trial it ran:
//!
//! ```text
//! <remote>/v1/tune/trials/<key>.json       {"dir": "<hash>.dir"}: the trial's folder
//! <remote>/v1/tune/studies/<study>.jsonl   the study's journal, merged across machines
//! ```
//!
//! A trial's folder (its `trial.json`, parameters, metrics, log, and a train trial's
//! adapter) goes up as a directory object like any out, so it is content-addressed and
//! checked on the way down. Journals merge by trial key: each machine's order is kept and
//! trials only another machine ran are appended, so concurrent pushes lose no trial.

use super::sync::{PullReport, PushReport, StageTransfer, closure, fetch_hashes};
use super::{Remote, RemoteError};
use crate::cache::Store;
use crate::stages::tune::store::{Store as TrialStore, merge_journals};

fn trial_rel(key: &str) -> String {
    format!("tune/trials/{key}.json")
}

fn study_rel(study: &str) -> String {
    format!("tune/studies/{study}.jsonl")
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
        if remote.get_record(&trial_rel(&key))?.is_some() {
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
    for study in trials.studies() {
        let mine = trials.journal_text(&study);
        let theirs = remote
            .get_record(&study_rel(&study))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // The remote's order first: machines that pushed before keep their trial indexes.
        let merged = merge_journals(&theirs, &mine);
        let state = if merged == theirs {
            "up-to-date"
        } else {
            remote.put_record(&study_rel(&study), merged.into_bytes())?;
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
        let Some(key) = name.strip_suffix(".json") else {
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
    for name in remote.list_records("tune/studies/")? {
        let Some(study) = name.strip_suffix(".jsonl") else {
            continue;
        };
        let Some(theirs) = remote.get_record(&study_rel(study))? else {
            continue;
        };
        let added = trials
            .merge_journal(study, &String::from_utf8_lossy(&theirs))
            .map_err(|e| RemoteError::BadRecord {
                key: study_rel(study),
                remote: remote.location().to_string(),
                why: format!("cannot merge it into the local journal: {e}"),
            })?;
        report.stages.push(StageTransfer {
            stage: "tune study".into(),
            fingerprint: study.to_owned(),
            state: if added > 0 { "pulled" } else { "up-to-date" },
        });
    }
    Ok(())
}
