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
use super::progress::{self, Progress};
use super::worker::{self, Finished, Running, log_paths, write_record};
use crate::cache::Store;
use crate::dag::{Dag, Edge};
use crate::process::Signal;
use crate::spec::{Pipeline, Stage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
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
    /// Before running a stage the local cache cannot restore, look for its outs on this
    /// remote (`--pull`).
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
    /// Where stages run: here, or as Slurm jobs (placed by the cluster, so resource
    /// capacities do not hold them back; `jobs` still caps how many are queued).
    pub executor: super::Executor,
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

/// Runs the pipeline. `emit` receives every event, in order, on this thread.
pub fn run(
    pipeline: &Pipeline,
    dag: &Dag,
    store: &Store,
    opts: &RunOptions,
    interrupted: &AtomicBool,
    emit: &mut dyn FnMut(&Event),
) -> Result<Summary, ExecError> {
    let mut c = Coordinator::new(pipeline, dag, store, opts, emit)?;
    let running = Running::default();
    let (tx, rx) = mpsc::channel::<Finished>();
    let mut killed_at: Option<Instant> = None;
    let mut last_poll = Instant::now();
    std::thread::scope(|scope| -> Result<(), ExecError> {
        loop {
            // Interrupt: SIGINT to every command's process group, SIGKILL 3 s later.
            if interrupted.load(Ordering::SeqCst) && !c.summary.interrupted {
                c.summary.interrupted = true;
                c.stopping = true;
                running.signal_all(Signal::Interrupt);
                killed_at = Some(Instant::now());
            }
            if killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                running.signal_all(Signal::Kill);
                killed_at = None;
            }
            while let Some(launch) = c.next_to_start()? {
                let (tx, running) = (tx.clone(), &running);
                scope.spawn(move || match (launch.as_slice(), &opts.executor) {
                    ([(i, log)], executor) => {
                        let t = Instant::now();
                        let stage = &pipeline.stages[*i];
                        let result =
                            worker::execute(pipeline, store, stage, *i, log, executor, running);
                        let _ = tx.send(Finished {
                            idx: *i,
                            result,
                            duration: t.elapsed(),
                        });
                    }
                    (siblings, super::Executor::Slurm(slurm)) => {
                        worker::execute_array(pipeline, store, siblings, slurm, running, &tx)
                    }
                    (_, super::Executor::Local) => unreachable!("local stages start one by one"),
                });
            }
            if c.running == 0 {
                return Ok(());
            }
            if let Ok(done) = rx.recv_timeout(Duration::from_millis(50)) {
                c.finished(done)?;
            }
            if last_poll.elapsed() >= PROGRESS_POLL {
                last_poll = Instant::now();
                c.poll_progress();
            }
        }
    })?;
    store.save_stat()?;
    Ok(c.summary)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    Running,
    Done { changed: bool },
    Failed,
    Skipped,
}

/// Everything the coordinating thread owns.
struct Coordinator<'a, 'e> {
    pipeline: &'a Pipeline,
    dag: &'a Dag,
    store: &'a Store,
    opts: &'a RunOptions,
    emit: &'e mut dyn FnMut(&Event),
    lock: LockFile,
    lock_path: PathBuf,
    state: Vec<State>,
    /// Checks of stages that must run but wait for a job slot or resource tokens (and of
    /// running stages, for their lock entry).
    checks: Vec<Option<Check>>,
    /// When each running stage started (RFC 3339).
    started: Vec<Option<String>>,
    used: BTreeMap<String, u64>,
    /// Running stages' progress files and the last progress seen in each.
    progress: BTreeMap<usize, (PathBuf, Option<Progress>)>,
    summary: Summary,
    running: usize,
    /// No new stage starts (a failure without `--keep-going`, or an interrupt).
    stopping: bool,
}

impl<'a, 'e> Coordinator<'a, 'e> {
    fn new(
        pipeline: &'a Pipeline,
        dag: &'a Dag,
        store: &'a Store,
        opts: &'a RunOptions,
        emit: &'e mut dyn FnMut(&Event),
    ) -> Result<Self, ExecError> {
        let lock_path = pipeline.lock_path();
        // This run holds the workspace lock and is the lock file's only writer, so a
        // temporary file of it is what a run killed mid-write left behind.
        for temp in crate::atomic_write::temporary_files_of(&lock_path) {
            let _ = std::fs::remove_file(temp);
        }
        let mut lock = LockFile::load(&lock_path)?;
        // Entries of stages that no longer exist would otherwise live forever.
        let names: BTreeSet<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        lock.stages.retain(|k, _| names.contains(k.as_str()));
        let n = pipeline.stages.len();
        let state = (0..n)
            .map(|i| match &opts.selected {
                Some(sel) if !sel.contains(&i) => State::Done { changed: false },
                _ => State::Pending,
            })
            .collect();
        Ok(Self {
            pipeline,
            dag,
            store,
            opts,
            emit,
            lock,
            lock_path,
            state,
            checks: vec![None; n],
            started: vec![None; n],
            used: BTreeMap::new(),
            progress: BTreeMap::new(),
            summary: Summary::default(),
            running: 0,
            stopping: false,
        })
    }

    fn name(&self, i: usize) -> String {
        self.pipeline.stages[i].name.clone()
    }

    fn fail(&mut self, i: usize, error: String, log: Option<PathBuf>, duration_ms: u64) {
        self.state[i] = State::Failed;
        self.summary.failed += 1;
        self.stopping |= !self.opts.keep_going;
        let stage = self.name(i);
        (self.emit)(&Event::StageFailed {
            stage,
            error,
            log,
            duration_ms,
        });
    }

    fn record_success(
        &mut self,
        i: usize,
        check: &Check,
        outs: BTreeMap<String, String>,
    ) -> Result<bool, ExecError> {
        let stage = &self.pipeline.stages[i];
        let changed = self
            .lock
            .stages
            .get(&stage.name)
            .is_none_or(|e| e.outs != outs);
        self.lock
            .stages
            .insert(stage.name.clone(), lock_entry(stage, check, outs));
        self.lock.save(&self.lock_path)?;
        self.store.register_lock(&self.lock_path)?;
        self.state[i] = State::Done { changed };
        Ok(changed)
    }

    /// Walks pending stages in order, settling those that need no worker (skipped, frozen,
    /// up to date, restored, failed checks), and returns the first one that must run and
    /// fits, with its tokens taken and its `stage-start` emitted. On Slurm, a matrix stage
    /// comes with the siblings that can start with it, to run as one job array.
    fn next_to_start(&mut self) -> Result<Option<Vec<(usize, PathBuf)>>, ExecError> {
        for &i in self.dag.order() {
            if self.stopping {
                return Ok(None);
            }
            if self.state[i] != State::Pending || !self.upstream_done(i) {
                continue;
            }
            let Some(check) = self.decide(i)? else {
                continue;
            };
            let stage = &self.pipeline.stages[i];
            let demand = demand(stage, &self.opts.capacity);
            let fits = demand.iter().all(|(k, v)| {
                self.used.get(k).copied().unwrap_or(0) + v <= capacity(&self.opts.capacity, k)
            });
            // The cluster places Slurm jobs by what they ask for (`sbatch_options`).
            let here = matches!(self.opts.executor, super::Executor::Local);
            if self.slots_full() || (here && !fits) {
                self.checks[i] = Some(check);
                continue;
            }
            let mut launch = vec![(i, self.start(i, check)?)];
            if let super::Executor::Slurm(slurm) = &self.opts.executor {
                for j in self.array_siblings(i, &slurm.sbatch_args) {
                    if self.slots_full()
                        || self.stopping
                        || launch.len() == super::slurm::array::MAX_TASKS
                    {
                        break;
                    }
                    if let Some(check) = self.decide(j)? {
                        launch.push((j, self.start(j, check)?));
                    }
                }
            }
            return Ok(Some(launch));
        }
        Ok(None)
    }

    /// Whether `-j` stages are running.
    fn slots_full(&self) -> bool {
        self.running >= self.opts.jobs.max(1)
    }

    /// Settles a pending stage below a failed or skipped one as skipped; whether all of a
    /// pending stage's upstream stages are done.
    fn upstream_done(&mut self, i: usize) -> bool {
        let ups: Vec<usize> = self.dag.upstream(i).map(|(u, _)| u).collect();
        if let Some(&bad) = ups
            .iter()
            .find(|&&u| matches!(self.state[u], State::Failed | State::Skipped))
        {
            self.state[i] = State::Skipped;
            self.summary.skipped += 1;
            let (stage, because) = (self.name(i), self.name(bad));
            (self.emit)(&Event::StageSkipped { stage, because });
            return false;
        }
        ups.iter()
            .all(|&u| matches!(self.state[u], State::Done { .. }))
    }

    /// The pending expansions of matrix stage `i`'s matrix that are ready too and ask
    /// Slurm for the same placement, so they can join its job array.
    fn array_siblings(&mut self, i: usize, extra: &[String]) -> Vec<usize> {
        let stage = &self.pipeline.stages[i];
        if stage.matrix.is_empty() {
            return Vec::new();
        }
        let root = &self.pipeline.root;
        let placement = super::slurm::placement(stage, root, extra);
        let candidates: Vec<usize> = self
            .dag
            .order()
            .iter()
            .copied()
            .filter(|&j| {
                let other = &self.pipeline.stages[j];
                j != i
                    && self.state[j] == State::Pending
                    && other.base == stage.base
                    && !other.matrix.is_empty()
                    && super::slurm::placement(other, root, extra) == placement
            })
            .collect();
        candidates
            .into_iter()
            .filter(|&j| self.upstream_done(j))
            .collect()
    }

    /// Takes a stage's tokens and starts it: its outs are cleared, its `stage-start`
    /// emitted; returns its log.
    fn start(&mut self, i: usize, check: Check) -> Result<PathBuf, ExecError> {
        let stage = &self.pipeline.stages[i];
        for (k, v) in demand(stage, &self.opts.capacity) {
            *self.used.entry(k).or_default() += v;
        }
        let (log, _) = log_paths(self.pipeline, &stage.name);
        worker::prepare_outs(self.store, stage, &log)?;
        let progress_file = progress::path_for(&log);
        let _ = std::fs::remove_file(&progress_file);
        self.progress.insert(i, (progress_file, None));
        self.running += 1;
        self.state[i] = State::Running;
        self.started[i] = Some(utc_now());
        (self.emit)(&Event::StageStart {
            stage: stage.name.clone(),
            reasons: check.reasons.clone(),
            log: log.clone(),
        });
        self.checks[i] = Some(check);
        Ok(log)
    }

    /// For a stage whose upstream is done: settles it without a worker when possible
    /// (frozen, up to date, restored, or failed because its deps cannot be read), else
    /// returns its check: it must run.
    fn decide(&mut self, i: usize) -> Result<Option<Check>, ExecError> {
        let stage = &self.pipeline.stages[i];
        if stage.frozen {
            self.state[i] = State::Done { changed: false };
            self.summary.cached += 1;
            (self.emit)(&Event::StageCached {
                stage: stage.name.clone(),
                frozen: true,
            });
            return Ok(None);
        }
        let check = match self.checks[i].take() {
            Some(c) => c,
            None => {
                let (dag, state, pipeline) = (self.dag, &self.state, self.pipeline);
                // A changed dep written by an upstream stage that reran in this run is
                // reported as "upstream changed".
                let changed_by = |dep: &str| -> Option<String> {
                    dag.upstream(i).find_map(|(u, e)| match e {
                        Edge::Data { path }
                            if path == dep && state[u] == (State::Done { changed: true }) =>
                        {
                            Some(pipeline.stages[u].name.clone())
                        }
                        _ => None,
                    })
                };
                let entry = self.lock.stages.get(&stage.name);
                match plan::check(self.store, stage, entry, self.opts.force, &changed_by) {
                    Ok(c) => c,
                    Err(e) => {
                        // An unreadable dep fails this stage, not the whole run.
                        self.fail(i, unreadable_deps(&e), None, 0);
                        return Ok(None);
                    }
                }
            }
        };
        if check.reasons.is_empty() {
            self.state[i] = State::Done { changed: false };
            self.summary.cached += 1;
            (self.emit)(&Event::StageCached {
                stage: stage.name.clone(),
                frozen: false,
            });
            return Ok(None);
        }
        let pulled_from = self.pull(stage, &check);
        let entry = self.lock.stages.get(&stage.name);
        if let Some(outs) = plan::restorable(self.store, stage, entry, &check) {
            // A failed restore (say, a corrupt object) falls through to running the stage.
            if outs
                .iter()
                .try_for_each(|(p, h)| self.store.restore(p, h))
                .is_ok()
            {
                self.record_success(i, &check, outs)?;
                self.summary.restored += 1;
                (self.emit)(&Event::StageRestored {
                    stage: stage.name.clone(),
                    reasons: check.reasons,
                    pulled_from,
                });
                return Ok(None);
            }
        }
        if let Some(dep) = check.missing_deps.first() {
            self.fail(i, format!("dep `{dep}` does not exist"), None, 0);
            return Ok(None);
        }
        Ok(Some(check))
    }

    /// With `--pull`, fetches what restoring `stage` needs from the remote when the local
    /// cache cannot restore it; the remote's name when something was fetched. A remote
    /// that fails (unreachable, an object refused by its hash check) is reported, and the
    /// stage runs here.
    fn pull(&mut self, stage: &Stage, check: &Check) -> Option<String> {
        let remote = self.opts.remote.clone()?;
        let entry = self.lock.stages.get(&stage.name);
        if stage.always_run
            || check.reasons.contains(&super::DirtyReason::Forced)
            || plan::restorable(self.store, stage, entry, check).is_some()
        {
            return None;
        }
        match crate::remote::fetch_run(&remote, self.store, &check.fingerprint) {
            Ok(Some(_)) => Some(remote.location().to_string()),
            Ok(None) => None,
            Err(e) => {
                (self.emit)(&Event::RemoteRefused {
                    stage: stage.name.clone(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Emits a `stage-progress` event for each running stage whose progress file changed.
    fn poll_progress(&mut self) {
        let running: Vec<usize> = self.progress.keys().copied().collect();
        for i in running {
            self.poll_one(i);
        }
    }

    fn poll_one(&mut self, i: usize) {
        let Some((file, last)) = self.progress.get_mut(&i) else {
            return;
        };
        let Some(now) = progress::read(file) else {
            return;
        };
        if last.as_ref() == Some(&now) {
            return;
        }
        *last = Some(now.clone());
        let stage = self.name(i);
        (self.emit)(&Event::StageProgress {
            stage,
            progress: now,
        });
    }

    /// A worker is done: record success in the lock file and the run cache, or clean up.
    fn finished(&mut self, done: Finished) -> Result<(), ExecError> {
        self.running -= 1;
        let i = done.idx;
        let stage = &self.pipeline.stages[i];
        for (k, v) in demand(stage, &self.opts.capacity) {
            *self.used.entry(k).or_default() -= v;
        }
        let check = self.checks[i]
            .take()
            .expect("a running stage has its check");
        // The last progress the stage wrote comes before its end.
        self.poll_one(i);
        if let Some((file, _)) = self.progress.remove(&i) {
            let _ = std::fs::remove_file(file);
        }
        let (log, record) = log_paths(self.pipeline, &stage.name);
        let duration_ms = done.duration.as_millis() as u64;
        let started = self.started[i].take().unwrap_or_default();
        match done.result {
            Ok(outs) => {
                self.store.put_run(&check.fingerprint, &stage.name, &outs)?;
                let changed = self.record_success(i, &check, outs)?;
                write_record(&record, &started, duration_ms, "ok", None, &log);
                self.summary.ran += 1;
                (self.emit)(&Event::StageFinish {
                    stage: stage.name.clone(),
                    duration_ms,
                    outs_changed: changed,
                });
            }
            Err(error) => {
                // Partial outs must not survive: the next run would take them as done.
                for out in stage.all_outs() {
                    let _ = self.store.remove(out);
                }
                let (status, error) = if self.summary.interrupted {
                    ("interrupted", format!("interrupted ({error})"))
                } else {
                    ("failed", error)
                };
                write_record(&record, &started, duration_ms, status, Some(&error), &log);
                self.fail(i, error, Some(log), duration_ms);
            }
        }
        Ok(())
    }
}

fn lock_entry(stage: &Stage, check: &Check, outs: BTreeMap<String, String>) -> LockEntry {
    LockEntry {
        fingerprint: check.fingerprint.clone(),
        kind: stage.kind.name().to_owned(),
        impl_version: stage.kind.impl_version(),
        definition: check.definition.clone(),
        definition_parts: check.definition_parts.clone(),
        deps: check.deps.clone(),
        params: stage.params.clone(),
        outs,
    }
}

/// How often running stages' progress files are read.
const PROGRESS_POLL: Duration = Duration::from_millis(200);

fn capacity(caps: &BTreeMap<String, u64>, name: &str) -> u64 {
    caps.get(name).copied().unwrap_or(1)
}

/// The tokens a stage holds while running: its `resources`, plus the `mlx` slot for kinds
/// that use the accelerator. A demand above capacity is clamped so the stage can still run
/// (alone).
fn demand(stage: &Stage, caps: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut d = stage.resources.clone();
    if stage.uses_mlx {
        d.entry("mlx".into()).or_insert(1);
    }
    for (k, v) in d.iter_mut() {
        *v = (*v).min(capacity(caps, k));
    }
    d
}

/// The message of a stage whose deps could not be hashed: the error with its causes, and
/// for a file that was there when the folder was listed and gone when it was read, what
/// that means.
fn unreadable_deps(e: &ExecError) -> String {
    let mut message = format!("cannot hash its deps: {e}");
    let mut vanished = false;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        vanished |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
        source = cause.source();
    }
    if vanished {
        message.push_str(
            "\n  hint: the file was deleted or replaced while pipe read it (another program is \
             writing there); run again once it holds still",
        );
    }
    message
}
