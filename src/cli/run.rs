//! `pipe run`: bring a pipeline's outs up to date, running only what changed.

use super::output::Printer;
use super::progress::Human;
use super::tracking::Background;
use super::workspace::{WorkspaceArgs, select};
use super::{Busy, Failure, Interrupted};
use pipe_engine::cache::Store;
use pipe_engine::exec::events::Stamped;
use pipe_engine::exec::{self, Event, RunOptions, describe, lock, plan};
use pipe_engine::history::record::{Host, RunStatus};
use pipe_engine::history::recorder::Recorder;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the SIGINT/SIGTERM handler; the scheduler polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Arguments of `pipe run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe run pipelines/examples/cmd-basics.yaml\n  pipe run pipe.yaml --set train.lr=3e-4\n  pipe run pipe.yaml -s train --downstream --dry-run\n  pipe run pipe.yaml --quiet            # for cron\n  pipe run pipe.yaml --pull --push      # share outs through the remote cache\n  pipe run pipe.yaml --executor slurm --sbatch=--partition=gpu   # each stage a Slurm job\n\nExit status: 0 success or nothing to do, 1 a stage failed, 2 invalid pipeline or usage, 75 skipped (--skip-if-running and another run holds the workspace), 130 interrupted."
)]
pub struct Args {
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// Stages to run at once (default: the number of cores).
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Rerun stages even when up to date, and do not restore from the run cache.
    #[arg(short, long)]
    force: bool,
    /// Run only this stage (repeatable; a matrix stage's base name selects all expansions).
    #[arg(short, long = "stage", value_name = "STAGE")]
    stages: Vec<String>,
    /// With -s: also run every stage downstream of the selected ones.
    #[arg(long)]
    downstream: bool,
    /// Print what would run and why, and run nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// After a stage fails, keep running stages that do not depend on it.
    #[arg(short, long)]
    keep_going: bool,
    /// Print JSON Lines events instead of text (see `pipe::exec::events`); with --dry-run,
    /// one JSON array of stage statuses.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for another run in this workspace to finish (default: wait forever).
    #[arg(long, value_name = "SECS")]
    wait_timeout: Option<u64>,
    /// If another run holds this workspace, exit at once with status 75 (EX_TEMPFAIL)
    /// instead of waiting (scheduled runs do this, so runs never pile up).
    #[arg(long, conflicts_with = "wait_timeout")]
    skip_if_running: bool,
    /// Before running a stage this cache cannot restore, fetch its outs from the remote
    /// cache if another machine pushed them (checked against their hashes).
    #[arg(long)]
    pull: bool,
    /// After the run, push the pipeline's outs to the remote cache (as `pipe push`).
    #[arg(long)]
    push: bool,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// Where stages run: `local` (processes on this machine) or `slurm` (each stage that
    /// must run becomes a batch job, submitted with sbatch once its upstream is done; the
    /// workspace must be on a filesystem the nodes share).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    executor: ExecutorKind,
    /// With --executor slurm: an sbatch option for every job, after the ones pipe derives
    /// from the stage (repeatable), e.g. --sbatch=--partition=gpu --sbatch=--time=2:00:00.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch: Vec<String>,
}

/// `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorKind {
    Local,
    Slurm,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    if !args.sbatch.is_empty() && args.executor != ExecutorKind::Slurm {
        return Err(super::UsageError("--sbatch needs --executor slurm".into()).into());
    }
    let (pipeline, dag) = args.ws.load()?;
    let selected = select(&pipeline, &dag, &args.stages, args.downstream)?;
    let store = Store::open(&pipeline.root);
    if args.dry_run {
        let statuses = plan::status(&pipeline, &dag, &store, args.force, selected.as_ref())?;
        if args.json {
            return printer.json(&statuses);
        }
        let mut any = false;
        for s in statuses.iter().filter(|s| !s.reasons.is_empty()) {
            any = true;
            let verb = if s.state == "restorable" {
                "would restore"
            } else {
                "would run"
            };
            printer.result(&format!("{verb} {}: {}", s.stage, describe(&s.reasons)));
        }
        if !any {
            printer.result("nothing to do: every stage is up to date");
        }
        return Ok(());
    }
    let timeout = match args.skip_if_running {
        true => Some(Duration::ZERO),
        false => args.wait_timeout.map(Duration::from_secs),
    };
    let _lock = lock::acquire(&pipeline.root, timeout, |holder| {
        if !args.skip_if_running {
            printer.status(&format!(
                "waiting for {holder} in this workspace to finish..."
            ));
        }
    })
    .map_err(|e| match e {
        lock::LockError::Timeout { holder, .. } if args.skip_if_running => {
            anyhow::Error::from(Busy(format!(
                "skipped: {holder} is running in this workspace (--skip-if-running)"
            )))
        }
        e => Failure(format!("{e:#}")).into(),
    })?;
    if let Some(pid) = _lock.stale_pid {
        printer.warn(&format!(
            "a previous pipe run (pid {pid}) was killed; its interrupted stages will rerun"
        ));
    }
    for message in exec::groups::reap(&store)
        .iter()
        .filter_map(leftover_message)
    {
        printer.warn(&message);
    }
    // A second handler cannot be installed in the same process (tests call run twice).
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let mut capacity = BTreeMap::from([("mlx".to_owned(), 1u64)]);
    // Detecting the machine spawns `sysctl` on macOS: only when a stage asks for memory.
    if pipeline
        .stages
        .iter()
        .any(|s| s.resources.contains_key("mem_gb"))
    {
        let mem = pipe_engine::hardware::Machine::detect().memory_total_bytes >> 30;
        capacity.insert("mem_gb".into(), mem.max(1));
    }
    let remote = match args.pull || args.push {
        true => Some(std::sync::Arc::new(args.remote.open(
            pipeline.remote.as_ref(),
            &pipeline.root,
            args.push,
        )?)),
        false => None,
    };
    let executor = match args.executor {
        ExecutorKind::Local => exec::Executor::Local,
        ExecutorKind::Slurm => exec::Executor::Slurm(exec::SlurmOptions {
            sbatch_args: args.sbatch.clone(),
            ..Default::default()
        }),
    };
    // Local stages share this machine's cores; Slurm jobs, the cluster's.
    let default_jobs = match args.executor {
        ExecutorKind::Local => std::thread::available_parallelism().map_or(1, |n| n.get()),
        ExecutorKind::Slurm => usize::MAX,
    };
    let options = RunOptions {
        jobs: args.jobs.unwrap_or(default_jobs),
        force: args.force,
        selected,
        keep_going: args.keep_going,
        capacity,
        remote: remote.clone().filter(|_| args.pull),
        executor,
    };
    let started = Instant::now();
    let target = pipe_engine::tracking::sync::target(&pipeline.name, pipeline.tracking.as_ref());
    let mut recorder =
        match Recorder::start(&pipeline, &args.ws.sets, host(&pipeline), target.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                printer.warn(&format!(
                    "cannot write the run history (runs/history): {e}; running without it"
                ));
                None
            }
        };
    let mut history_failed = false;
    let background = match (&recorder, &target) {
        (Some(r), Some(_)) => Some(Background::start(pipeline.root.clone(), r.id().to_owned())),
        _ => None,
    };
    let reads_registry: std::collections::BTreeSet<&str> = pipeline
        .stages
        .iter()
        .filter(|s| s.config.get("registry").is_some_and(|r| !r.is_null()))
        .map(|s| s.name.as_str())
        .collect();
    let mut human = Human::new(printer);
    // A nested run (a monitor's retraining) keeps its own journal: the parent's is still
    // being written, and the parent's report reads it.
    let nested_journal = _lock
        .nested
        .then(|| exec::journal::nested_journal_path(&pipeline.root, std::process::id()));
    // Gone with the run: a later run whose PID happens to match must not read it.
    let _remove_nested_journal = RemoveOnDrop(nested_journal.clone());
    let mut journal = match &nested_journal {
        Some(path) => exec::journal::Journal::create_at(path, &pipeline, &dag),
        None => exec::journal::Journal::create(&pipeline, &dag),
    }
    .map_err(|e| anyhow::anyhow!("cannot start the run journal: {e}"))?;
    let mut emit = |event: &Event| {
        let stamped = Stamped {
            ts: exec::events::utc_now(),
            event,
        };
        // The journal is for stages that describe the run; losing a line must not stop it.
        // Progress is for watching, not for the record.
        if !matches!(event, Event::StageProgress { .. }) {
            let _ = journal.record(&stamped);
        }
        // The history must never stop a run: one warning, then the run goes on without it.
        if let Some(r) = recorder.as_mut()
            && let Err(e) = r.event(event)
            && !std::mem::replace(&mut history_failed, true)
        {
            printer.warn(&format!("cannot update the run history: {e}"));
        }
        // The registry changes in the background sync (a compare stage moves the alias):
        // a stage that reads it waits until what ran before it is on the server.
        if let (Some(b), Event::StageStart { stage, .. }) = (&background, event)
            && reads_registry.contains(stage.as_str())
        {
            b.flush(printer, stage);
        }
        if let Some(b) = &background
            && !matches!(
                event,
                Event::StageProgress { .. } | Event::StageStart { .. }
            )
        {
            b.changed();
        }
        if args.json {
            let _ = printer.json(&stamped);
        } else {
            human.event(event);
        }
    };
    let summary = match exec::run(&pipeline, &dag, &store, &options, &INTERRUPTED, &mut emit) {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(r) = recorder.as_mut() {
                let _ = r.finish(RunStatus::Failed);
            }
            super::notify::after_run(printer, &pipeline, recorder.as_ref().map(|r| r.record()));
            return Err(e.into());
        }
    };
    emit(&Event::Summary {
        ran: summary.ran,
        restored: summary.restored,
        cached: summary.cached,
        failed: summary.failed,
        skipped: summary.skipped,
        interrupted: summary.interrupted,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    if let Some(r) = recorder.as_mut() {
        let status = if summary.interrupted {
            RunStatus::Interrupted
        } else if summary.failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        if let Err(e) = r.finish(status) {
            printer.warn(&format!("cannot finish the run record: {e}"));
        }
        super::notify::after_run(printer, &pipeline, Some(r.record()));
        if !args.json {
            printer.status(&format!(
                "run {} recorded (pipe runs show {})",
                r.id(),
                r.id()
            ));
        }
    }
    if let (Some(b), Some(t)) = (background, &target) {
        b.finish(printer, &t.mlflow);
    }
    if !args.json {
        // Reports are what a run is for: say where they are.
        for stage in pipeline
            .stages
            .iter()
            .filter(|s| s.kind == pipe_engine::stages::Kind::REPORT)
        {
            for out in &stage.outs {
                let path = pipeline.root.join(out);
                if path.is_file() {
                    printer.result(&format!("report: {}", path.display()));
                }
            }
        }
    }
    if summary.interrupted {
        return Err(Interrupted.into());
    }
    if let Some(remote) = remote.filter(|_| args.push && summary.failed == 0) {
        let lock = exec::lockfile::LockFile::load(&pipeline.lock_path())
            .map_err(|e| Failure(e.to_string()))?;
        let report = pipe_engine::remote::push_lock(&remote, &store, &lock)
            .map_err(|e| Failure(format!("the run succeeded but the push failed: {e}")))?;
        if !args.json {
            super::remote::print_push(printer, &report, false)?;
        }
    }
    if summary.failed > 0 {
        return Err(Failure(format!(
            "{} stage{} failed",
            summary.failed,
            if summary.failed == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(())
}

/// The machine and, when the pipeline uses MLX, the MLX runtime `pipe-mlx` runs.
fn host(pipeline: &pipe_engine::spec::Pipeline) -> Host {
    let machine = pipe_engine::hardware::Machine::detect();
    let runtime = pipeline
        .stages
        .iter()
        .any(|s| s.uses_mlx)
        .then(super::handoff::runtime_info)
        .flatten()
        .unwrap_or_default();
    Host {
        os: machine.os.to_owned(),
        arch: machine.arch.to_owned(),
        chip: machine.chip,
        cores: machine.logical_cores,
        memory_bytes: machine.memory_total_bytes,
        pipe: super::BUILD_ID.to_owned(),
        mlx: runtime["mlx_version"].as_str().map(str::to_owned),
        backend: runtime["backend"].as_str().map(str::to_owned),
        metal: runtime["metal_available"].as_bool(),
    }
}

/// The warning for what a killed run left running, if it left anything.
fn leftover_message(left: &exec::groups::Leftover) -> Option<String> {
    if let Some(job) = &left.slurm_job {
        return slurm_leftover_message(left, job);
    }
    if left.still_running {
        return Some(format!(
            "processes of {} from a killed run may still be running (process group {}); \
             end them with `kill -KILL -- -{}`",
            left.what, left.pgid, left.pgid
        ));
    }
    if left.killed == 0 && left.removed.is_empty() {
        return None;
    }
    let mut message = format!("{} from a killed run", left.what);
    if left.killed > 0 {
        message = format!(
            "ended {} leftover process{} of {message} (process group {})",
            left.killed,
            if left.killed == 1 { "" } else { "es" },
            left.pgid
        );
    } else {
        message = format!("cleaned up after {message}");
    }
    message.push_str(&removed_outs(left));
    Some(message)
}

/// `; removed N partial outs`, or nothing when none was removed.
fn removed_outs(left: &exec::groups::Leftover) -> String {
    match left.removed.len() {
        0 => String::new(),
        1 => "; removed 1 partial out".to_owned(),
        n => format!("; removed {n} partial outs"),
    }
}

/// The warning for a Slurm job a killed run left queued or running.
fn slurm_leftover_message(left: &exec::groups::Leftover, job: &str) -> Option<String> {
    if left.still_running {
        return Some(format!(
            "Slurm job {job} of {} from a killed run may still be running; cancel it with \
             `scancel {job}`",
            left.what
        ));
    }
    if left.killed == 0 && left.removed.is_empty() {
        return None;
    }
    let mut message = match left.killed {
        0 => format!(
            "cleaned up after Slurm job {job} of {} from a killed run",
            left.what
        ),
        _ => format!(
            "cancelled Slurm job {job} of {} left running by a killed run",
            left.what
        ),
    };
    message.push_str(&removed_outs(left));
    Some(message)
}

/// Removes a file when dropped (a nested run's journal, on every way out of the run).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
