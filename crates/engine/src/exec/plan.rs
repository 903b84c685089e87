//! Freshness: is a stage up to date, and if not, why ([`DirtyReason`]s).
//!
//! A stage is up to date when its fingerprint equals the one in the lock file and every
//! out still has the hash recorded there. The reasons are found by comparing the parts of
//! the key one by one with the lock entry, so `pipe status` can say *what* changed.

use super::fingerprint::{definition_hash, definition_parts, fingerprint};
use super::lockfile::{LockEntry, LockFile};
use super::{DirtyReason, ExecError};
use crate::cache::Store;
use crate::dag::{Dag, Edge};
use crate::spec::{Pipeline, Stage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The result of checking one stage.
#[derive(Debug, Clone)]
pub struct Check {
    /// Hash of the definition.
    pub definition: String,
    /// Short hashes of the definition's parts, for the lock entry.
    pub definition_parts: BTreeMap<String, String>,
    /// Dep path -> content hash now (missing deps are absent).
    pub deps: BTreeMap<String, String>,
    /// Deps that do not exist.
    pub missing_deps: Vec<String>,
    /// The fingerprint now.
    pub fingerprint: String,
    /// Why the stage is stale; empty when up to date.
    pub reasons: Vec<DirtyReason>,
}

/// Checks `stage` against its lock entry. `changed_by(dep)` names the upstream stage whose
/// rerun changed `dep` in this run, so the reason says "upstream changed" rather than
/// "dep changed".
pub fn check(
    store: &Store,
    stage: &Stage,
    entry: Option<&LockEntry>,
    force: bool,
    changed_by: &dyn Fn(&str) -> Option<String>,
) -> Result<Check, ExecError> {
    let definition = definition_hash(stage);
    let parts = definition_parts(stage);
    let mut deps = BTreeMap::new();
    let mut missing_deps = Vec::new();
    for dep in &stage.deps {
        match store.hash_path(dep)? {
            Some(h) => {
                deps.insert(dep.clone(), h);
            }
            None => missing_deps.push(dep.clone()),
        }
    }
    let fp = fingerprint(stage, &definition, &deps);
    let mut reasons = Vec::new();
    if force {
        reasons.push(DirtyReason::Forced);
    }
    if stage.always_run {
        reasons.push(DirtyReason::AlwaysRun);
    }
    match entry {
        None => reasons.push(DirtyReason::FirstRun),
        Some(e) if e.fingerprint != fp => {
            let before = reasons.len();
            if e.impl_version != stage.kind.impl_version() || e.kind != stage.kind.name() {
                reasons.push(DirtyReason::ImplVersionChanged);
            }
            if e.definition != definition {
                reasons.push(DirtyReason::DefinitionChanged {
                    parts: changed_parts(&e.definition_parts, &parts),
                });
            }
            let keys: BTreeSet<&String> = e.params.keys().chain(stage.params.keys()).collect();
            for k in keys {
                let (old, new) = (e.params.get(k), stage.params.get(k));
                if old != new {
                    reasons.push(DirtyReason::ParamChanged {
                        name: k.clone(),
                        old: old.cloned().unwrap_or_default(),
                        new: new.cloned().unwrap_or_default(),
                    });
                }
            }
            let mut upstream_named = BTreeSet::new();
            let paths: BTreeSet<&String> = e.deps.keys().chain(stage.deps.iter()).collect();
            for p in paths {
                if e.deps.get(p) != deps.get(p) {
                    match changed_by(p) {
                        Some(up) => {
                            if upstream_named.insert(up.clone()) {
                                reasons.push(DirtyReason::UpstreamChanged { stage: up });
                            }
                        }
                        None => reasons.push(DirtyReason::DepChanged { path: p.clone() }),
                    }
                }
            }
            if reasons.len() == before {
                reasons.push(DirtyReason::DefinitionChanged { parts: Vec::new() });
            }
        }
        Some(e) => {
            for out in stage.all_outs() {
                match store.hash_path(out)? {
                    None => reasons.push(DirtyReason::OutMissing { path: out.clone() }),
                    Some(h) if e.outs.get(out) != Some(&h) => {
                        reasons.push(DirtyReason::OutModified { path: out.clone() })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(Check {
        definition,
        definition_parts: parts,
        deps,
        missing_deps,
        fingerprint: fp,
        reasons,
    })
}

/// The parts whose hash differs between the lock entry and now; none when the entry
/// predates recorded parts.
fn changed_parts(then: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    if then.is_empty() {
        return Vec::new();
    }
    let names: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|name| then.get(*name) != now.get(*name))
        .cloned()
        .collect()
}

/// The outs a run-cache hit (or the lock entry itself) would restore for `check`, if every
/// object is in the store and the set of outs is exactly the stage's.
pub fn restorable(
    store: &Store,
    stage: &Stage,
    entry: Option<&LockEntry>,
    check: &Check,
) -> Option<BTreeMap<String, String>> {
    if stage.always_run || check.reasons.contains(&DirtyReason::Forced) {
        return None;
    }
    let outs = match entry.filter(|e| e.fingerprint == check.fingerprint) {
        Some(e) => e.outs.clone(),
        None => store.get_run(&check.fingerprint)?.outs,
    };
    let want: BTreeSet<&String> = stage.all_outs().collect();
    let have: BTreeSet<&String> = outs.keys().collect();
    (want == have && outs.values().all(|h| store.can_restore(h))).then_some(outs)
}

/// One line of `pipe status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// The stage.
    pub stage: String,
    /// `up-to-date`, `stale`, `restorable` (stale, but the run cache has its outs) or `frozen`.
    pub state: &'static str,
    /// Why it is stale.
    pub reasons: Vec<DirtyReason>,
}

/// The status of every selected stage, in run order, without running anything. A stage
/// below a stale stage is reported stale with `upstream-changed`, since its inputs are
/// about to change.
pub fn status(
    pipeline: &Pipeline,
    dag: &Dag,
    store: &Store,
    force: bool,
    selected: Option<&BTreeSet<usize>>,
) -> Result<Vec<StageStatus>, ExecError> {
    let lock = LockFile::load(&pipeline.lock_path())?;
    let mut stale = vec![false; pipeline.stages.len()];
    let mut out = Vec::new();
    for &i in dag.order() {
        if selected.is_some_and(|s| !s.contains(&i)) {
            continue;
        }
        let stage = &pipeline.stages[i];
        let entry = lock.stages.get(&stage.name);
        if stage.frozen {
            out.push(StageStatus {
                stage: stage.name.clone(),
                state: "frozen",
                reasons: Vec::new(),
            });
            continue;
        }
        let stale_ups: Vec<(usize, &str)> = dag
            .upstream(i)
            .filter_map(|(u, e)| match e {
                Edge::Data { path } if stale[u] => Some((u, path.as_str())),
                _ => None,
            })
            .collect();
        let mut c = check(store, stage, entry, force, &|_| None)?;
        if !stale_ups.is_empty() {
            c.reasons.retain(|r| match r {
                DirtyReason::DepChanged { path } => !stale_ups.iter().any(|(_, p)| p == path),
                _ => true,
            });
            let mut named = BTreeSet::new();
            for (u, _) in &stale_ups {
                if named.insert(*u) {
                    c.reasons.push(DirtyReason::UpstreamChanged {
                        stage: pipeline.stages[*u].name.clone(),
                    });
                }
            }
        }
        let state = if c.reasons.is_empty() {
            "up-to-date"
        } else if stale_ups.is_empty() && restorable(store, stage, entry, &c).is_some() {
            "restorable"
        } else {
            "stale"
        };
        stale[i] = !c.reasons.is_empty();
        out.push(StageStatus {
            stage: stage.name.clone(),
            state,
            reasons: c.reasons,
        });
    }
    // The stat cache only saves rehashing next time: a workspace whose cache folder is
    // read-only (a colleague's results, a read-only mount) can still be inspected.
    let _ = store.save_stat();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Cmd;

    fn stage() -> Stage {
        Stage {
            cmd: Some(Cmd::Shell("cat in > out".into())),
            deps: vec!["in".into()],
            outs: vec!["out".into()],
            params: [("lr".to_owned(), serde_json::json!(0.1))].into(),
            ..Stage::bare("s")
        }
    }

    /// The lock entry a successful run of `stage` would leave.
    fn ran(store: &Store, stage: &Stage) -> LockEntry {
        let c = check(store, stage, None, false, &|_| None).unwrap();
        std::fs::write(store.root().join("out"), "o").unwrap();
        LockEntry {
            fingerprint: c.fingerprint,
            kind: "cmd".into(),
            impl_version: stage.kind.impl_version(),
            definition: c.definition,
            definition_parts: c.definition_parts,
            deps: c.deps,
            params: stage.params.clone(),
            outs: [("out".to_owned(), store.hash_path("out").unwrap().unwrap())].into(),
        }
    }

    #[test]
    fn each_input_gives_its_own_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in"), "1").unwrap();
        let store = Store::open(dir.path());
        let s = stage();
        let entry = ran(&store, &s);
        let reasons = |st: &Stage, e: &LockEntry| {
            check(&Store::open(dir.path()), st, Some(e), false, &|_| None)
                .unwrap()
                .reasons
        };
        assert!(reasons(&s, &entry).is_empty());

        // A lock entry written by an older implementation of the kind: its version and
        // hence its fingerprint differ.
        let mut old = entry.clone();
        old.impl_version = 0;
        old.fingerprint = "older".into();
        assert_eq!(reasons(&s, &old), [DirtyReason::ImplVersionChanged]);

        let mut edited = s.clone();
        edited.cmd = Some(Cmd::Shell("cat in in > out".into()));
        assert_eq!(
            reasons(&edited, &entry),
            [DirtyReason::DefinitionChanged {
                parts: vec!["cmd".into()]
            }]
        );
        let mut configured = s.clone();
        configured.config = serde_json::json!({"split": {"valid": 0.2, "seed": 0}});
        let mut reconfigured = configured.clone();
        reconfigured.config["split"]["valid"] = serde_json::json!(0.3);
        let configured_entry = ran(&store, &configured);
        let why = reasons(&reconfigured, &configured_entry);
        assert_eq!(
            why,
            [DirtyReason::DefinitionChanged {
                parts: vec!["with.split.valid".into()]
            }]
        );
        assert_eq!(why[0].to_string(), "definition changed: `with.split.valid`");
        // A lock file from before parts were recorded still says the definition changed.
        let mut older = entry.clone();
        older.definition_parts.clear();
        assert_eq!(
            reasons(&edited, &older),
            [DirtyReason::DefinitionChanged { parts: vec![] }]
        );

        let mut p = s.clone();
        p.params.insert("lr".into(), serde_json::json!(0.2));
        assert_eq!(
            reasons(&p, &entry),
            [DirtyReason::ParamChanged {
                name: "lr".into(),
                old: serde_json::json!(0.1),
                new: serde_json::json!(0.2)
            }]
        );

        std::fs::write(dir.path().join("in"), "2").unwrap();
        assert_eq!(
            reasons(&s, &entry),
            [DirtyReason::DepChanged { path: "in".into() }]
        );
        std::fs::write(dir.path().join("in"), "1").unwrap();

        std::fs::remove_file(dir.path().join("out")).unwrap();
        assert_eq!(
            reasons(&s, &entry),
            [DirtyReason::OutMissing { path: "out".into() }]
        );
        std::fs::write(dir.path().join("out"), "tampered").unwrap();
        assert_eq!(
            reasons(&s, &entry),
            [DirtyReason::OutModified { path: "out".into() }]
        );

        let forced = check(&store, &s, Some(&entry), true, &|_| None)
            .unwrap()
            .reasons;
        assert_eq!(forced[0], DirtyReason::Forced);
    }

    #[test]
    fn fingerprints_ignore_mtimes_and_location() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("in"), "same").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(b.path().join("in"), "same").unwrap();
        let fa = check(&Store::open(a.path()), &stage(), None, false, &|_| None).unwrap();
        let fb = check(&Store::open(b.path()), &stage(), None, false, &|_| None).unwrap();
        assert_eq!(fa.fingerprint, fb.fingerprint);
    }
}
