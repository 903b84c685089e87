//! The worker side of a run: preparing a stage's outs, running its command with output
//! to its log, storing its outs in the cache, and the per-stage files (`<stage>.log`, the
//! last-run record) that `pipe show` reads. Workers report back with a `Finished`
//! message; they never touch the lock file or print anything.

use super::ExecError;
use super::groups::Registration;
use super::slurm::Executor;
use crate::cache::Store;
use crate::process::Signal;
use crate::spec::{Pipeline, Stage};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A worker's report: the stage index, its outs (path -> hash) or the error, and how long
/// it took.
pub(crate) struct Finished {
    pub idx: usize,
    pub result: Result<BTreeMap<String, String>, String>,
    pub duration: Duration,
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

/// Removes stale outs (so a command never writes through a hardlink into the store and a
/// missing out is really missing), creates their parent directories and the log's.
pub(crate) fn prepare_outs(
    store: &Store,
    stage: &Stage,
    log: &std::path::Path,
) -> Result<(), ExecError> {
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

/// What is running, so that an interrupt reaches it: the process groups of local
/// commands and the ids of Slurm jobs, by stage index.
#[derive(Default)]
pub(crate) struct Running {
    pids: Mutex<HashMap<usize, u32>>,
    jobs: Mutex<HashMap<usize, String>>,
}

impl Running {
    /// Signals every running command's process group (each was spawned with
    /// `process_group(0)`) and cancels every Slurm job (Slurm sends the job SIGTERM, then
    /// SIGKILL after its `KillWait`). A command that has just ended is no error.
    pub(crate) fn signal_all(&self, signal: Signal) {
        for &pid in self.pids.lock().expect("pids").values() {
            let _ = crate::process::signal_group(pid, signal);
        }
        for job in self.jobs.lock().expect("jobs").values() {
            super::slurm::cancel(job);
        }
    }
}

/// Worker: runs the stage's command (here, or as a Slurm job), then stores its outs.
pub(crate) fn execute(
    pipeline: &Pipeline,
    store: &Store,
    stage: &Stage,
    idx: usize,
    log: &std::path::Path,
    executor: &Executor,
    running: &Running,
) -> Result<BTreeMap<String, String>, String> {
    let file = fs_err::File::create(log).map_err(|e| e.to_string())?;
    let mut command = super::launch::stage_command(stage, &pipeline.root, file.file())
        .map_err(|e| format!("cannot prepare the command: {e}"))?;
    command.env(super::progress::ENV, super::progress::path_for(log));
    match executor {
        Executor::Local => run_here(&mut command, pipeline, stage, idx, running)?,
        Executor::Slurm(slurm) => on_slurm(&command, pipeline, stage, idx, log, slurm, running)?,
    }
    store_outs(store, stage)
}

/// Stores the outs of a stage whose command succeeded.
fn store_outs(store: &Store, stage: &Stage) -> Result<BTreeMap<String, String>, String> {
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
            Err(e) => {
                // The cause ("No space left on device") is the error's source; a message
                // without it says where but not why.
                let why = anyhow::Error::from(e);
                return Err(format!("cannot store out `{out}`: {why:#}"));
            }
        }
    }
    Ok(outs)
}

/// Worker for matrix siblings on Slurm: runs the `stages` (index and log) as one job
/// array ([`super::slurm::array`]) and reports each stage on `done` as its task ends.
pub(crate) fn execute_array(
    pipeline: &Pipeline,
    store: &Store,
    stages: &[(usize, PathBuf)],
    slurm: &super::slurm::SlurmOptions,
    running: &Running,
    done: &std::sync::mpsc::Sender<Finished>,
) {
    use super::slurm::{self, JobState, array};
    let start = std::time::Instant::now();
    let report = |idx: usize, result: Result<BTreeMap<String, String>, String>| {
        let _ = done.send(Finished {
            idx,
            result,
            duration: start.elapsed(),
        });
    };
    // A stage whose command cannot be prepared fails alone; the others still go.
    let mut tasks = Vec::with_capacity(stages.len());
    let mut members = Vec::with_capacity(stages.len());
    for (idx, log) in stages {
        let stage = &pipeline.stages[*idx];
        let prepared = fs_err::File::create(log)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                super::launch::stage_command(stage, &pipeline.root, file.file())
                    .map_err(|e| format!("cannot prepare the command: {e}"))
            });
        match prepared {
            Ok(mut command) => {
                command.env(super::progress::ENV, super::progress::path_for(log));
                tasks.push((
                    slurm::job_command(&command, slurm::ranks_of(stage)),
                    log.clone(),
                ));
                members.push((*idx, log));
            }
            Err(e) => report(*idx, Err(e)),
        }
    }
    let Some(&(first, _)) = members.first() else {
        return;
    };
    let first = &pipeline.stages[first];
    let placement = slurm::placement(first, &pipeline.root, &slurm.sbatch_args);
    let array = match array::submit(&pipeline.root, &first.base, &tasks, &placement) {
        Ok(array) => array,
        Err(e) => {
            for (idx, _) in members {
                report(idx, Err(e.clone()));
            }
            return;
        }
    };
    // As for a single job: each task's record lets a later run cancel it if this process
    // is killed, and `running` lets an interrupt cancel it.
    type Waiting<'l> = (
        usize,
        usize,
        &'l std::path::Path,
        String,
        Option<Registration>,
    );
    let mut waiting: Vec<Waiting> = members
        .iter()
        .enumerate()
        .map(|(task, &(idx, log))| {
            let stage = &pipeline.stages[idx];
            let id = array.task(task);
            note_job(log, &stage.name, &id);
            let outs: Vec<String> = stage.all_outs().cloned().collect();
            let what = format!("stage `{}`", stage.name);
            let registration =
                super::groups::register_slurm_job(&pipeline.root, &id, &what, &outs).ok();
            running.jobs.lock().expect("jobs").insert(idx, id.clone());
            (task, idx, log.as_path(), id, registration)
        })
        .collect();
    while !waiting.is_empty() {
        let mut still = Vec::with_capacity(waiting.len());
        for (task, idx, log, id, registration) in waiting {
            let state = match slurm::state(&id) {
                Ok(JobState::Active(_)) => {
                    still.push((task, idx, log, id, registration));
                    continue;
                }
                other => other,
            };
            // What went to the task's own output (the runner's errors, slurmstepd's
            // out-of-memory or time-limit notices) belongs in the stage's log, as for a
            // single job.
            let said = array.runner_output(task);
            if let Some(text) = &said {
                append_to_log(log, text);
            }
            let result = match state {
                Ok(JobState::Completed) => store_outs(store, &pipeline.stages[idx]),
                Ok(ended) => {
                    let mut error = ended.failure(&id).unwrap_or_default();
                    if let Some(said) = said {
                        error.push_str(&format!("\n  the task said: {said}"));
                    }
                    Err(error)
                }
                Err(e) => Err(e),
            };
            running.jobs.lock().expect("jobs").remove(&idx);
            drop(registration);
            report(idx, result);
        }
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(slurm.poll);
        }
    }
    array.remove();
}

/// Writes the job id at the head of a stage's log.
fn note_job(log: &std::path::Path, stage: &str, job: &str) {
    append_to_log(log, &format!("pipe: stage `{stage}` is Slurm job {job}"));
}

/// Appends a line to a stage's log; a log that cannot be written loses only the line.
fn append_to_log(log: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(file, "{line}");
    }
}

/// Runs `command` as a Slurm job and waits for it; the job id goes into the stage's `log`
/// and into `running`, so an interrupt cancels the job.
fn on_slurm(
    command: &std::process::Command,
    pipeline: &Pipeline,
    stage: &Stage,
    idx: usize,
    log: &std::path::Path,
    slurm: &super::slurm::SlurmOptions,
    running: &Running,
) -> Result<(), String> {
    let options = super::slurm::sbatch_options(stage, &pipeline.root, log, &slurm.sbatch_args);
    let outs: Vec<String> = stage.all_outs().cloned().collect();
    // The job outlives this process if it is killed: the record lets the next run cancel
    // it (`groups::reap`). Removed when the job has ended.
    let mut registration = None;
    let command = super::slurm::job_command(command, super::slurm::ranks_of(stage));
    let result = super::slurm::run_job(&command, &pipeline.root, &options, slurm.poll, |job| {
        note_job(log, &stage.name, job);
        registration = super::groups::register_slurm_job(
            &pipeline.root,
            job,
            &format!("stage `{}`", stage.name),
            &outs,
        )
        .ok();
        let mut jobs = running.jobs.lock().expect("jobs");
        jobs.insert(idx, job.to_owned());
    });
    running.jobs.lock().expect("jobs").remove(&idx);
    drop(registration);
    result
}

/// Runs `command` as a child process of this one and waits for it and its group.
fn run_here(
    command: &mut std::process::Command,
    pipeline: &Pipeline,
    stage: &Stage,
    idx: usize,
    running: &Running,
) -> Result<(), String> {
    let outs: Vec<String> = stage.all_outs().cloned().collect();
    let (mut child, registration) = super::launch::spawn_registered(
        command,
        &pipeline.root,
        &format!("stage `{}`", stage.name),
        &outs,
    )
    .map_err(|e| format!("cannot start the command: {e}"))?;
    running.pids.lock().expect("pids").insert(idx, child.id());
    // A stage is its command: whatever it left running in its group (a `&` job, a
    // grandchild of a killed shell) would go on writing outs that are about to be stored,
    // or removed as partial. The group dies with the command.
    let status = crate::process::wait_and_end_group(&mut child);
    running.pids.lock().expect("pids").remove(&idx);
    drop(registration);
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
    Ok(())
}

pub(crate) fn write_record(
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
    // A courtesy for `pipe show`: failing to write it must not fail the run.
    let _ = crate::atomic_write::write_json(path, &record);
}
