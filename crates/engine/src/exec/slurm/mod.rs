//! The Slurm executor (`pipe run --executor slurm`): each stage that must run becomes a
//! batch job, submitted with `sbatch` once its upstream stages are done, and watched with
//! `scontrol` until it ends. Everything else is the local executor's: pipe decides what is
//! stale (early cutoff and run-cache restores happen before anything is queued), stores
//! the outs in the cache, and writes the lock file and the run history, so a Slurm run
//! leaves exactly what a local run leaves.
//!
//! Why submit on readiness instead of queueing the whole DAG at once with
//! `--dependency=afterok`: a stage whose upstream reran with byte-identical outs is up to
//! date, and one whose outs are in the run cache is restored; neither should take a node.
//! Only pipe knows that, and only once the upstream jobs have ended.
//!
//! Matrix expansions that become ready together are submitted as one job array instead
//! ([`array`]).
//!
//! The workspace must be on a filesystem the nodes share (the job runs in it, with
//! `--chdir`), as it is on every cluster with home or project directories on NFS/Lustre.

use crate::spec::Stage;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub mod array;

/// How stages are run.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// Child processes on this machine (the default).
    #[default]
    Local,
    /// Batch jobs on a Slurm cluster.
    Slurm(SlurmOptions),
}

/// Options of the Slurm executor.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Extra `sbatch` options, passed as given (`--partition=gpu`, `--time=2:00:00`), after
    /// the ones pipe derives from the stage, so they win.
    pub sbatch_args: Vec<String>,
    /// How often a job's state is read.
    pub poll: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            sbatch_args: Vec::new(),
            poll: Duration::from_millis(500),
        }
    }
}

/// The batch script every stage job runs: the stage's own argv, passed to `sbatch` after
/// the script, so no word of it is ever re-parsed by a shell.
const JOB_SCRIPT: &str =
    "#!/bin/sh\n# Written by pipe: runs the stage command given as arguments.\nexec \"$@\"\n";

/// The `sbatch` options for `stage`, from what the stage declares:
/// - `mem_gb: N` → `--mem=NG` (memory per node);
/// - the `mlx` slot (MLX kinds, or `resources: {mlx: 1}`) → `--exclusive`: one machine has
///   one accelerator, so a node runs one MLX stage at a time, as `mlx: 1` does locally;
/// - `cpus: N` → `--cpus-per-task=N`;
/// - `distributed: {ranks: N}` (train and tune stages) → `--ntasks=N` on as many nodes as
///   Slurm chooses (the job runs the stage under `srun`, one rank per task; see
///   [`ranks_of`]), where other stages get one task on one node;
///
/// after the job's name and log, and before the user's `extra` options, which come last so
/// they win.
pub fn sbatch_options(stage: &Stage, root: &Path, log: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_owned(),
        format!("--job-name=pipe:{}", stage.name),
        format!("--output={}", log.display()),
        // pipe writes the job id into the log first.
        "--open-mode=append".to_owned(),
    ];
    args.extend(placement(stage, root, extra));
    args
}

/// What a stage's job asks of the cluster, apart from its name and log (see
/// [`sbatch_options`]). Matrix siblings with equal placements share one job array.
pub fn placement(stage: &Stage, root: &Path, extra: &[String]) -> Vec<String> {
    let ranks = ranks_of(stage);
    let mut args = vec![
        format!("--chdir={}", root.display()),
        "--export=ALL".to_owned(),
    ];
    if ranks > 1 {
        args.push(format!("--ntasks={ranks}"));
    } else {
        args.extend(["--nodes=1".to_owned(), "--ntasks=1".to_owned()]);
    }
    if let Some(gb) = stage.resources.get("mem_gb") {
        args.push(format!("--mem={gb}G"));
    }
    if let Some(cpus) = stage.resources.get("cpus") {
        args.push(format!("--cpus-per-task={cpus}"));
    }
    if stage.uses_mlx || stage.resources.get("mlx").is_some_and(|&n| n > 0) {
        args.push("--exclusive".to_owned());
    }
    args.extend(extra.iter().cloned());
    args
}

/// The ranks a train or tune stage asks for with `distributed: {ranks: N}` (1 otherwise).
/// A train stage's resolved config keeps its options under `options`; a tune stage's is
/// its `with:` as written.
pub fn ranks_of(stage: &Stage) -> u64 {
    ["/options/distributed/ranks", "/distributed/ranks"]
        .iter()
        .find_map(|p| stage.config.pointer(p).and_then(serde_json::Value::as_u64))
        .unwrap_or(1)
}

/// The command a job runs for `command`: as it is, or under `srun` for a stage with ranks,
/// so that each of the job's tasks is one rank (pipe reads its rank from `SLURM_PROCID` and
/// writes the ring hostfile from the step's nodes). A failed rank ends the step.
pub fn job_command(command: &Command, ranks: u64) -> Command {
    if ranks <= 1 {
        let mut same = Command::new(command.get_program());
        copy_setup(command, &mut same);
        return same;
    }
    let mut srun = Command::new("srun");
    srun.arg("--kill-on-bad-exit=1")
        .arg("--export=ALL")
        .arg(command.get_program());
    copy_setup(command, &mut srun);
    srun
}

/// Copies `from`'s arguments, environment and directory onto `to`.
fn copy_setup(from: &Command, to: &mut Command) {
    to.args(from.get_args());
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
    for (key, value) in from.get_envs() {
        match value {
            Some(v) => to.env(key, v),
            None => to.env_remove(key),
        };
    }
}

/// A job's state as `scontrol show job -o` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued, running or completing.
    Active(String),
    /// Ended with exit status 0.
    Completed,
    /// Ended otherwise: Slurm's state (`FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`,
    /// `OUT_OF_MEMORY`, ...), the exit status and the signal that ended it (0 for none).
    Ended {
        /// Slurm's word for it.
        state: String,
        /// The exit status (-1 when Slurm gave none).
        code: i32,
        /// The signal, 0 for none.
        signal: i32,
    },
}

impl JobState {
    /// Reads the one-line record of `scontrol show job -o ID`; `None` when it has no
    /// `JobState`.
    pub fn parse(record: &str) -> Option<JobState> {
        let field = |key: &str| {
            record
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        };
        // `CANCELLED by 0` prints as `JobState=CANCELLED Reason=...`: the first word is it.
        let state = field("JobState")?.to_owned();
        let (code, signal) = field("ExitCode")
            .and_then(|e| e.split_once(':'))
            .map(|(c, s)| (c.parse().unwrap_or(-1), s.parse().unwrap_or(0)))
            .unwrap_or((-1, 0));
        Some(match state.as_str() {
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
            | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" | "STOPPED" => JobState::Active(state),
            "COMPLETED" if code == 0 && signal == 0 => JobState::Completed,
            _ => JobState::Ended {
                state,
                code,
                signal,
            },
        })
    }

    /// The message of a job that did not complete.
    pub fn failure(&self, job: &str) -> Option<String> {
        let JobState::Ended {
            state,
            code,
            signal,
        } = self
        else {
            return None;
        };
        Some(match state.as_str() {
            "OUT_OF_MEMORY" => format!(
                "Slurm job {job} ran out of memory (OUT_OF_MEMORY)\n  hint: raise the \
                 stage's `resources: {{mem_gb: N}}`, which pipe passes as `--mem=NG`"
            ),
            "TIMEOUT" => format!(
                "Slurm job {job} reached its time limit (TIMEOUT)\n  hint: give a longer \
                 one with `--sbatch=--time=HH:MM:SS`"
            ),
            "CANCELLED" => format!("Slurm job {job} was cancelled"),
            "FAILED" | "COMPLETED" if *signal != 0 => {
                format!("Slurm job {job} was killed by signal {signal}")
            }
            "FAILED" | "COMPLETED" => format!("Slurm job {job} exited with status {code}"),
            _ => format!("Slurm job {job} ended {state} (exit status {code})"),
        })
    }
}

/// Submits `command` (built by [`super::launch::stage_command`], with its environment,
/// which `--export=ALL` carries into the job) as a batch job with `options`, calls
/// `submitted` with the job id, and waits for the job to end.
pub fn run_job(
    command: &Command,
    root: &Path,
    options: &[String],
    poll: Duration,
    submitted: impl FnOnce(&str),
) -> Result<(), String> {
    let job = submit(command, root, options)?;
    submitted(&job);
    loop {
        match state(&job)? {
            JobState::Active(_) => std::thread::sleep(poll),
            JobState::Completed => return Ok(()),
            ended => return Err(ended.failure(&job).unwrap_or_default()),
        }
    }
}

/// Submits the fixed job script with `command`'s argv as its arguments, `options` and
/// `command`'s environment; returns the job id.
fn submit(command: &Command, root: &Path, options: &[String]) -> Result<String, String> {
    let script = root.join("cache").join("slurm").join("job.sh");
    if fs_err::read_to_string(&script).ok().as_deref() != Some(JOB_SCRIPT) {
        crate::atomic_write::write_atomic(&script, JOB_SCRIPT.as_bytes())
            .map_err(|e| format!("cannot write the Slurm job script: {e}"))?;
    }
    let mut sbatch = Command::new("sbatch");
    sbatch.args(options).arg(&script).arg(command.get_program());
    copy_setup(command, &mut sbatch);
    let out = sbatch.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "`sbatch` is not on PATH\n  hint: run on a Slurm \
                                         login node, or drop `--executor slurm`"
            .to_owned(),
        _ => format!("cannot run sbatch: {e}"),
    })?;
    if !out.status.success() {
        return Err(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| format!("sbatch printed no job id: {stdout:?}"))
}

/// The state of a job, or of one task of an array (`ID_TASK`).
pub(crate) fn state(job: &str) -> Result<JobState, String> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .output()
        .map_err(|e| format!("cannot run scontrol: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Jobs are forgotten `MinJobAge` (300 s by default) after they end; pipe reads far
        // more often, so this is a controller that lost its state.
        return Err(format!(
            "Slurm no longer knows job {job}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    JobState::parse(&text).ok_or_else(|| format!("scontrol printed no state for job {job}"))
}

/// How long a leftover job may take to end once cancelled (its processes get SIGTERM,
/// then SIGKILL after Slurm's `KillWait`, 30 s by default).
const LEFTOVER_WAIT: Duration = Duration::from_secs(60);

/// Cancels the job of a killed run, if it is still queued or running, and waits for it to
/// end: returns (1 if it was cancelled, else 0; whether it may still run). A job Slurm no
/// longer knows ended long ago; a controller that cannot be asked leaves the answer open.
pub fn cancel_leftover(job: &str) -> (usize, bool) {
    match state(job) {
        Ok(JobState::Active(_)) => {}
        Ok(_) => return (0, false),
        Err(e) if e.starts_with("cannot run scontrol") => return (0, true),
        Err(_) => return (0, false),
    }
    cancel(job);
    let start = std::time::Instant::now();
    while start.elapsed() < LEFTOVER_WAIT {
        match state(job) {
            Ok(JobState::Active(_)) => std::thread::sleep(Duration::from_millis(200)),
            _ => return (1, false),
        }
    }
    (1, true)
}

/// Cancels a job; one that has ended is no error.
pub fn cancel(job: &str) {
    let _ = Command::new("scancel")
        .arg(job)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_asks_for_what_it_declares_and_user_options_come_last() {
        let mut stage = Stage::bare("train@lr=1e-4");
        stage.resources.insert("mem_gb".into(), 12);
        stage.resources.insert("cpus".into(), 4);
        stage.uses_mlx = true;
        let args = sbatch_options(
            &stage,
            Path::new("/ws"),
            Path::new("/ws/cache/logs/p/train.log"),
            &["--partition=gpu".to_owned()],
        );
        for want in [
            "--parsable",
            "--job-name=pipe:train@lr=1e-4",
            "--chdir=/ws",
            "--output=/ws/cache/logs/p/train.log",
            "--mem=12G",
            "--cpus-per-task=4",
            "--exclusive",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        assert_eq!(args.last().unwrap(), "--partition=gpu");
        let plain = sbatch_options(&Stage::bare("a"), Path::new("/ws"), Path::new("/l"), &[]);
        assert!(
            !plain
                .iter()
                .any(|a| a.starts_with("--mem") || a == "--exclusive")
        );
    }

    #[test]
    fn a_stage_with_ranks_asks_for_that_many_tasks_and_runs_under_srun() {
        let mut train = Stage::bare("train");
        train.config = serde_json::json!({"options": {"distributed": {"ranks": 3}}});
        let mut tune = Stage::bare("tune");
        tune.config = serde_json::json!({"distributed": {"ranks": 2}});
        assert_eq!((ranks_of(&train), ranks_of(&tune)), (3, 2));
        assert_eq!(ranks_of(&Stage::bare("plain")), 1);
        let args = sbatch_options(&train, Path::new("/ws"), Path::new("/l"), &[]);
        assert!(args.contains(&"--ntasks=3".to_owned()), "{args:?}");
        assert!(!args.iter().any(|a| a == "--nodes=1" || a == "--ntasks=1"));
        let plain = sbatch_options(&Stage::bare("a"), Path::new("/ws"), Path::new("/l"), &[]);
        assert!(
            plain.contains(&"--ntasks=1".to_owned()) && plain.contains(&"--nodes=1".to_owned())
        );

        let mut stage_cmd = Command::new("pipe");
        stage_cmd
            .args(["__run-stage", "train"])
            .env("A", "1")
            .current_dir("/ws");
        let wrapped = job_command(&stage_cmd, 3);
        assert_eq!(wrapped.get_program(), "srun");
        let args: Vec<_> = wrapped.get_args().collect();
        assert_eq!(
            args,
            [
                "--kill-on-bad-exit=1",
                "--export=ALL",
                "pipe",
                "__run-stage",
                "train"
            ]
        );
        assert_eq!(wrapped.get_current_dir(), Some(Path::new("/ws")));
        assert!(
            wrapped
                .get_envs()
                .any(|(k, v)| k == "A" && v == Some("1".as_ref()))
        );
        assert_eq!(job_command(&stage_cmd, 1).get_program(), "pipe");
    }

    #[test]
    fn job_records_are_read_for_their_state_and_exit() {
        let record = |state: &str, exit: &str| {
            format!(
                "JobId=7 JobName=pipe:a UserId=root(0) Priority=1 JobState={state} \
                 Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode={exit} \
                 RunTime=00:00:01 Command=/ws/cache/slurm/job.sh"
            )
        };
        assert_eq!(
            JobState::parse(&record("RUNNING", "0:0")),
            Some(JobState::Active("RUNNING".into()))
        );
        assert_eq!(
            JobState::parse(&record("COMPLETED", "0:0")),
            Some(JobState::Completed)
        );
        let failed = JobState::parse(&record("FAILED", "3:0")).unwrap();
        assert_eq!(
            failed.failure("7").unwrap(),
            "Slurm job 7 exited with status 3"
        );
        let killed = JobState::parse(&record("FAILED", "0:9")).unwrap();
        assert!(killed.failure("7").unwrap().contains("signal 9"));
        let cancelled = JobState::parse(&record("CANCELLED", "0:15")).unwrap();
        assert!(cancelled.failure("7").unwrap().contains("cancelled"));
        let oom = JobState::parse(&record("OUT_OF_MEMORY", "0:125")).unwrap();
        assert!(oom.failure("7").unwrap().contains("mem_gb"));
        assert_eq!(
            JobState::parse("slurm_load_jobs error: Invalid job id"),
            None
        );
    }
}
