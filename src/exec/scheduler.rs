//! The scheduler: one coordinating thread that owns all state (stage states, resource
//! tokens, the lock file, events), and one worker thread per running stage that runs the
//! command, stores its outs in the cache and sends a message back.
//!
//! Why one owner: the lock file must be rewritten after each stage without two writers,
//! and output must come out in a sensible order; workers never touch either.
//!
//! A stage starts when every upstream stage is done, a job slot (`-j`) is free and its
//! resource tokens fit. Before starting, its fingerprint is compared with the lock file
//! (dep hashes are computed only now, after upstream stages finished, which is what makes
//! early cutoff work: byte-identical upstream outs give the same fingerprint as before).

use super::ExecError;
use super::events::{Event, utc_now};
use super::lockfile::{LockEntry, LockFile};
use super::plan::{self, Check};
use crate::cache::Store;
use crate::dag::{Dag, Edge};
use crate::spec::{Pipeline, Stage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most stages running at once.
    pub jobs: usize,
    /// Rerun even up-to-date stages (`--force`), and skip the run cache.
    pub force: bool,
    /// Only these stages (`-s`, `--downstream`); `None` = all.
    pub selected: Option<BTreeSet<usize>>,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    /// Resource capacities (`mlx: 1`, `mem_gb: <RAM>`); unknown resources have capacity 1.
    pub capacity: BTreeMap<String, u64>,
}

/// Counts of what a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Stages that ran.
    pub ran: usize,
    /// Stages restored from the run cache.
    pub restored: usize,
    /// Stages that were up to date or frozen.
    pub cached: usize,
    /// Stages that failed.
    pub failed: usize,
    /// Stages skipped because something upstream failed.
    pub skipped: usize,
    /// Whether the run was interrupted.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    Running,
    Done { changed: bool },
    Failed,
    Skipped,
}

struct Finished {
    idx: usize,
    result: Result<BTreeMap<String, String>, String>,
    duration: Duration,
}

/// Where a stage's log and last-run record go.
pub fn log_paths(pipeline: &Pipeline, stage: &str) -> (PathBuf, PathBuf) {
    let safe: String = pipeline
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = pipeline.root.join("cache").join("logs").join(safe);
    // Matrix values may contain `/` (`model=org/name`): keep one flat file per stage.
    let file = stage.replace(['/', '\\'], "%");
    (
        dir.join(format!("{file}.log")),
        dir.join(format!("{file}.json")),
    )
}

/// What is known about a stage's last run, for `pipe show`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    /// When it started (RFC 3339 UTC).
    pub started: String,
    /// Wall time.
    pub duration_ms: u64,
    /// `ok`, `failed` or `interrupted`.
    pub status: String,
    /// The error, for failures.
    pub error: Option<String>,
    /// The log file.
    pub log: PathBuf,
}

/// Runs the pipeline. `emit` receives every event, in order, on this thread.
pub fn run(
    pipeline: &Pipeline,
    dag: &Dag,
    store: &Store,
    opts: &RunOptions,
    interrupted: &AtomicBool,
    emit: &mut dyn FnMut(&Event),
) -> Result<Summary, ExecError> {
    let lock_path = pipeline.lock_path();
    let mut lock = LockFile::load(&lock_path)?;
    let names: BTreeSet<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    lock.stages.retain(|k, _| names.contains(k.as_str()));
    let n = pipeline.stages.len();
    let mut state = vec![State::Pending; n];
    if let Some(sel) = &opts.selected {
        for (i, s) in state.iter_mut().enumerate() {
            if !sel.contains(&i) {
                *s = State::Done { changed: false };
            }
        }
    }
    let mut checks: Vec<Option<Check>> = vec![None; n];
    let mut started_at: Vec<Option<(Instant, String)>> = vec![None; n];
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut running = 0usize;
    let mut stopping = false;
    let mut killed_at: Option<Instant> = None;
    let pids: Mutex<HashMap<usize, u32>> = Mutex::new(HashMap::new());
    let (tx, rx) = mpsc::channel::<Finished>();
    let jobs = opts.jobs.max(1);

    std::thread::scope(|scope| -> Result<(), ExecError> {
        loop {
            if interrupted.load(Ordering::SeqCst) && !summary.interrupted {
                summary.interrupted = true;
                stopping = true;
                signal_all(&pids, SIGINT);
                killed_at = Some(Instant::now());
            }
            if killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                signal_all(&pids, SIGKILL);
                killed_at = None;
            }
            for &i in dag.order() {
                if stopping {
                    break;
                }
                if state[i] != State::Pending {
                    continue;
                }
                let stage = &pipeline.stages[i];
                let ups: Vec<usize> = dag.upstream(i).map(|(u, _)| u).collect();
                if let Some(&bad) = ups
                    .iter()
                    .find(|&&u| matches!(state[u], State::Failed | State::Skipped))
                {
                    state[i] = State::Skipped;
                    summary.skipped += 1;
                    emit(&Event::StageSkipped {
                        stage: stage.name.clone(),
                        because: pipeline.stages[bad].name.clone(),
                    });
                    continue;
                }
                if !ups.iter().all(|&u| matches!(state[u], State::Done { .. })) {
                    continue;
                }
                if stage.frozen {
                    state[i] = State::Done { changed: false };
                    summary.cached += 1;
                    emit(&Event::StageCached {
                        stage: stage.name.clone(),
                        frozen: true,
                    });
                    continue;
                }
                let entry = lock.stages.get(&stage.name);
                let check = match checks[i].take() {
                    Some(c) => c,
                    None => {
                        let changed_by = |dep: &str| -> Option<String> {
                            dag.upstream(i).find_map(|(u, e)| match e {
                                Edge::Data { path }
                                    if path == dep
                                        && state[u] == (State::Done { changed: true }) =>
                                {
                                    Some(pipeline.stages[u].name.clone())
                                }
                                _ => None,
                            })
                        };
                        match plan::check(store, stage, entry, opts.force, &changed_by) {
                            Ok(c) => c,
                            Err(e) => {
                                // An unreadable dep fails this stage, not the whole run:
                                // running stages finish and are recorded.
                                state[i] = State::Failed;
                                summary.failed += 1;
                                stopping |= !opts.keep_going;
                                emit(&Event::StageFailed {
                                    stage: stage.name.clone(),
                                    error: format!("cannot hash its deps: {e}"),
                                    log: None,
                                    duration_ms: 0,
                                });
                                continue;
                            }
                        }
                    }
                };
                if check.reasons.is_empty() {
                    state[i] = State::Done { changed: false };
                    summary.cached += 1;
                    emit(&Event::StageCached {
                        stage: stage.name.clone(),
                        frozen: false,
                    });
                    continue;
                }
                if let Some(outs) = plan::restorable(store, stage, entry, &check) {
                    let restored = outs.iter().try_for_each(|(p, h)| store.restore(p, h));
                    if restored.is_ok() {
                        let changed = entry.is_none_or(|e| e.outs != outs);
                        lock.stages
                            .insert(stage.name.clone(), lock_entry(stage, &check, outs));
                        lock.save(&lock_path)?;
                        store.register_lock(&lock_path)?;
                        state[i] = State::Done { changed };
                        summary.restored += 1;
                        emit(&Event::StageRestored {
                            stage: stage.name.clone(),
                            reasons: check.reasons,
                        });
                        continue;
                    }
                }
                if let Some(dep) = check.missing_deps.first() {
                    state[i] = State::Failed;
                    summary.failed += 1;
                    emit(&Event::StageFailed {
                        stage: stage.name.clone(),
                        error: format!("dep `{dep}` does not exist"),
                        log: None,
                        duration_ms: 0,
                    });
                    stopping |= !opts.keep_going;
                    continue;
                }
                let demand = demand(stage, &opts.capacity);
                let fits = demand.iter().all(|(k, v)| {
                    used.get(k).copied().unwrap_or(0) + v <= capacity(&opts.capacity, k)
                });
                if running >= jobs || !fits {
                    checks[i] = Some(check);
                    continue;
                }
                for (k, v) in &demand {
                    *used.entry(k.clone()).or_default() += v;
                }
                let (log, _) = log_paths(pipeline, &stage.name);
                prepare_outs(store, stage, &log)?;
                running += 1;
                state[i] = State::Running;
                started_at[i] = Some((Instant::now(), utc_now()));
                emit(&Event::StageStart {
                    stage: stage.name.clone(),
                    reasons: check.reasons.clone(),
                    log: log.clone(),
                });
                checks[i] = Some(check);
                let (tx, pids) = (tx.clone(), &pids);
                scope.spawn(move || {
                    let t = Instant::now();
                    let result = execute(pipeline, store, stage, i, &log, pids);
                    let _ = tx.send(Finished {
                        idx: i,
                        result,
                        duration: t.elapsed(),
                    });
                });
            }
            if running == 0 {
                return Ok(());
            }
            let Ok(done) = rx.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            running -= 1;
            let i = done.idx;
            let stage = &pipeline.stages[i];
            for (k, v) in demand(stage, &opts.capacity) {
                *used.entry(k).or_default() -= v;
            }
            let check = checks[i].take().expect("a running stage has its check");
            let (log, record) = log_paths(pipeline, &stage.name);
            let duration_ms = done.duration.as_millis() as u64;
            let started = started_at[i].take().map(|(_, ts)| ts).unwrap_or_default();
            match done.result {
                Ok(outs) => {
                    let changed = lock.stages.get(&stage.name).is_none_or(|e| e.outs != outs);
                    store.put_run(&check.fingerprint, &stage.name, &outs)?;
                    lock.stages
                        .insert(stage.name.clone(), lock_entry(stage, &check, outs));
                    lock.save(&lock_path)?;
                    store.register_lock(&lock_path)?;
                    write_record(&record, &started, duration_ms, "ok", None, &log);
                    state[i] = State::Done { changed };
                    summary.ran += 1;
                    emit(&Event::StageFinish {
                        stage: stage.name.clone(),
                        duration_ms,
                        outs_changed: changed,
                    });
                }
                Err(error) => {
                    // Partial outs must not survive: the next run would take them as done.
                    for out in stage.all_outs() {
                        let _ = store.remove(out);
                    }
                    let (status, error) = if summary.interrupted {
                        ("interrupted", format!("interrupted ({error})"))
                    } else {
                        ("failed", error)
                    };
                    write_record(&record, &started, duration_ms, status, Some(&error), &log);
                    state[i] = State::Failed;
                    summary.failed += 1;
                    stopping |= !opts.keep_going;
                    emit(&Event::StageFailed {
                        stage: stage.name.clone(),
                        error,
                        log: Some(log),
                        duration_ms,
                    });
                }
            }
        }
    })?;
    store.save_stat()?;
    Ok(summary)
}

fn lock_entry(stage: &Stage, check: &Check, outs: BTreeMap<String, String>) -> LockEntry {
    LockEntry {
        fingerprint: check.fingerprint.clone(),
        kind: stage.kind.name().to_owned(),
        impl_version: stage.kind.impl_version(),
        definition: check.definition.clone(),
        deps: check.deps.clone(),
        params: stage.params.clone(),
        outs,
    }
}

/// Removes stale outs (so a command never writes through a hardlink into the store and a
/// missing out is really missing), creates their parent directories and the log's.
fn prepare_outs(store: &Store, stage: &Stage, log: &std::path::Path) -> Result<(), ExecError> {
    for out in stage.all_outs() {
        store.remove(out)?;
        if let Some(parent) = store.root().join(out).parent() {
            fs_err::create_dir_all(parent).map_err(ExecError::Io)?;
        }
    }
    if let Some(parent) = log.parent() {
        fs_err::create_dir_all(parent).map_err(ExecError::Io)?;
    }
    Ok(())
}

/// Worker: runs the stage's command, then stores its outs.
fn execute(
    pipeline: &Pipeline,
    store: &Store,
    stage: &Stage,
    idx: usize,
    log: &std::path::Path,
    pids: &Mutex<HashMap<usize, u32>>,
) -> Result<BTreeMap<String, String>, String> {
    let file = fs_err::File::create(log).map_err(|e| e.to_string())?;
    let mut command = crate::stages::cmd::command(stage, &pipeline.root, file.file())
        .map_err(|e| format!("cannot prepare the command: {e}"))?;
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    pids.lock().expect("pids").insert(idx, child.id());
    let status = child.wait();
    pids.lock().expect("pids").remove(&idx);
    let status = status.map_err(|e| format!("cannot wait for the command: {e}"))?;
    if !status.success() {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return Err(format!("killed by signal {sig}"));
            }
        }
        return Err(format!(
            "exited with status {}",
            status.code().unwrap_or(-1)
        ));
    }
    let mut outs = BTreeMap::new();
    for out in stage.all_outs() {
        match store.store_path(out) {
            Ok(Some(h)) => {
                outs.insert(out.clone(), h);
            }
            Ok(None) => {
                return Err(format!(
                    "the command succeeded but did not write out `{out}`"
                ));
            }
            Err(e) => return Err(format!("cannot store out `{out}`: {e}")),
        }
    }
    Ok(outs)
}

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

/// Signals every running command's process group.
fn signal_all(pids: &Mutex<HashMap<usize, u32>>, sig: i32) {
    for &pid in pids.lock().expect("pids").values() {
        #[cfg(unix)]
        // SAFETY: kill(2) on a process group we created (process_group(0) at spawn).
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
        #[cfg(not(unix))]
        let _ = (pid, sig);
    }
}

fn capacity(caps: &BTreeMap<String, u64>, name: &str) -> u64 {
    caps.get(name).copied().unwrap_or(1)
}

/// The tokens a stage holds while running: its `resources`, plus the `mlx` slot for kinds
/// that use the accelerator. A demand above capacity is clamped so the stage can still run
/// (alone).
fn demand(stage: &Stage, caps: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut d = stage.resources.clone();
    if stage.kind.uses_mlx() {
        d.entry("mlx".into()).or_insert(1);
    }
    for (k, v) in d.iter_mut() {
        *v = (*v).min(capacity(caps, k));
    }
    d
}

fn write_record(
    path: &std::path::Path,
    started: &str,
    duration_ms: u64,
    status: &str,
    error: Option<&str>,
    log: &std::path::Path,
) {
    let record = LastRun {
        started: started.to_owned(),
        duration_ms,
        status: status.to_owned(),
        error: error.map(String::from),
        log: log.to_owned(),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&record) {
        let _ = std::fs::write(path, json);
    }
}
