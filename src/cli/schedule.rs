//! `pipe schedule`: run a pipeline unattended from the system scheduler (cron on Linux,
//! launchd on macOS). The engine's `schedule` module holds the definitions, the crontab
//! block and the plist; this file is the command line and `schedule run`, the wrapper the
//! scheduler calls.

use super::output::Printer;
use super::workspace::WorkspaceArgs;
use super::{Busy, Failure, Interrupted, UsageError};
use pipe_engine::exec::events::utc;
use pipe_engine::schedule::{self, EXIT_BUSY, LastRun, Schedule, cron::CronExpr};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Subcommands of `pipe schedule`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a pipeline on a schedule (a crontab entry on Linux, a LaunchAgent on macOS).
    #[command(
        after_help = "The entry calls `pipe schedule run NAME` in the workspace, with this binary's absolute path and the environment captured now (PATH, HOME, LANG, TZ, PIPE_CACHE_DIR, XDG_CACHE_HOME, PIPE_PYTHON, MLFLOW_TRACKING_URI, OPENBLAS_NUM_THREADS; never credentials). A run that finds another one going in the workspace is skipped (exit 75). Output is appended to runs/schedules/NAME/log, rotated at 4 MiB.\n\nExamples:\n  pipe schedule add pipelines/quickstart.yaml --daily 02:30\n  pipe schedule add pipe.yaml --cron '0 */6 * * 1-5' --name six-hourly --set train.steps=200\n  pipe schedule add pipelines/nightly.yaml --daily 02:30 --notify-webhook-env ONCALL_WEBHOOK --notify-on failure,regression\n  pipe schedule status"
    )]
    Add(AddArgs),
    /// List the installed schedules.
    #[command(
        after_help = "Examples:\n  pipe schedule list\n  pipe schedule list --json | jq -r '.[].name'"
    )]
    List(ListArgs),
    /// Remove a schedule's entry (its log and last run stay in the workspace).
    #[command(after_help = "Examples:\n  pipe schedule remove quickstart")]
    Remove(RemoveArgs),
    /// Run a schedule now, exactly as the scheduler does (what the scheduler calls).
    #[command(
        after_help = "Exit status: that of `pipe run` (0 success, 1 a stage failed, 2 invalid pipeline), or 75 when another run holds the workspace lock (the run is skipped and recorded as such).\n\nExamples:\n  pipe schedule run quickstart\n  pipe schedule run quickstart --root /srv/proj"
    )]
    Run(RunArgs),
    /// Last start, duration, exit code, log and next time of each schedule.
    #[command(
        after_help = "Examples:\n  pipe schedule status\n  pipe schedule status nightly --json"
    )]
    Status(StatusArgs),
}

/// Arguments of `pipe schedule add`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["daily", "cron"])))]
pub struct AddArgs {
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// Every day at this local time (HH:MM, 24-hour clock).
    #[arg(long, value_name = "HH:MM")]
    daily: Option<String>,
    /// A cron expression: five fields (minute hour day month weekday) or @daily, @hourly...
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// The schedule's name (default: the pipeline's name); unique among your schedules.
    #[arg(long)]
    name: Option<String>,
    /// POST this schedule's outcomes to the webhook URL held by this environment variable
    /// (as `notify.webhook_env`; give the variable to the scheduler, e.g. a line in
    /// `crontab -e`), besides the pipeline's own `notify:`.
    #[arg(long, value_name = "VAR", conflicts_with = "notify_webhook")]
    notify_webhook_env: Option<String>,
    /// POST this schedule's outcomes to this webhook URL (kept in the workspace's
    /// `runs/schedules/`, never in the crontab or plist).
    #[arg(long, value_name = "URL")]
    notify_webhook: Option<String>,
    /// Show this schedule's outcomes as desktop notifications on this machine (macOS
    /// Notification Center; on Linux, `notify-send` to the session captured at `add`).
    #[arg(long)]
    notify_desktop: bool,
    /// The outcomes that notify, comma-separated: failure, regression, success.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "failure,regression", value_parser = parse_notify_on)]
    notify_on: Vec<pipe_schema::notify::NotifyOn>,
    /// Print the schedule as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pipe schedule list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

/// Arguments of `pipe schedule remove`.
#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The schedule to remove.
    name: String,
}

/// Arguments of `pipe schedule run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The schedule to run.
    name: String,
    /// The workspace the schedule lives in (default: the current directory).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

/// Arguments of `pipe schedule status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this schedule.
    name: Option<String>,
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(printer: &Printer, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Add(args) => add(printer, args),
        Command::List(args) => list(printer, &args),
        Command::Remove(args) => remove(printer, &args),
        Command::Run(args) => run_now(printer, &args),
        Command::Status(args) => status(printer, &args),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a cron expression fires next, in local time (as cron reads it).
fn next_time(cron: &str) -> Option<(i64, String)> {
    let expr = CronExpr::parse(cron).ok()?;
    let t = expr.next_after(now_unix(), schedule::cron::local_time)?;
    Some((t, schedule::cron::local_time(t).to_string()))
}

fn parse_notify_on(s: &str) -> Result<pipe_schema::notify::NotifyOn, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_owned()))
        .map_err(|_| format!("`{s}` is not an outcome: use failure, regression or success"))
}

/// `--notify-webhook(-env)`, `--notify-desktop` and `--notify-on` as a `notify:` mapping, checked as the
/// pipeline's would be.
fn notify_config(args: &AddArgs) -> anyhow::Result<Option<pipe_schema::notify::NotifyConfig>> {
    if args.notify_webhook.is_none() && args.notify_webhook_env.is_none() && !args.notify_desktop {
        return Ok(None);
    }
    let config = pipe_schema::notify::NotifyConfig {
        webhook: args.notify_webhook.clone(),
        webhook_env: args.notify_webhook_env.clone(),
        desktop: args.notify_desktop,
        on: args.notify_on.clone(),
    };
    config.check().map_err(|(key, message)| {
        let flag = match key {
            "webhook" => "--notify-webhook",
            "webhook_env" => "--notify-webhook-env",
            _ => "--notify-on",
        };
        UsageError(format!("{flag}: {message}"))
    })?;
    Ok(Some(config))
}

fn add(printer: &Printer, args: AddArgs) -> anyhow::Result<()> {
    let expr = match (&args.daily, &args.cron) {
        (Some(d), _) => CronExpr::daily(d),
        (None, Some(c)) => CronExpr::parse(c),
        (None, None) => unreachable!("clap requires one"),
    }
    .map_err(UsageError)?;
    // A schedule that cannot load its pipeline would fail every night: check it now.
    let (pipeline, _dag) = args.ws.load()?;
    let root = std::path::absolute(args.ws.root()?)?;
    let name = args.name.clone().unwrap_or_else(|| pipeline.name.clone());
    schedule::check_name(&name).map_err(|e| {
        UsageError(format!(
            "{e}\n  hint: pass --name NAME{}",
            if args.name.is_none() {
                " (the default is the pipeline's name)"
            } else {
                ""
            }
        ))
    })?;
    let scheduler = schedule::system();
    if let Some(other) = scheduler
        .installed()?
        .into_iter()
        .find(|i| i.name == name && i.root != root)
    {
        return Err(UsageError(format!(
            "a schedule named `{name}` already runs in {}\n  hint: pick another --name, or `pipe schedule remove {name}` first",
            other.root.display()
        ))
        .into());
    }
    let pipe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| anyhow::anyhow!("cannot find the path of this pipe binary: {e}"))?;
    let pipeline_arg = args.ws.pipeline.to_string_lossy().into_owned();
    let def = Schedule {
        name: name.clone(),
        pipeline: pipeline_arg,
        sets: args.ws.sets.clone(),
        cron: expr.as_str().to_owned(),
        pipe,
        root: root.clone(),
        env: schedule::capture_env(),
        notify: notify_config(&args)?,
    };
    schedule::write(&def).map_err(|e| anyhow::anyhow!("cannot save the schedule: {e}"))?;
    scheduler.install(&def)?;
    let next = next_time(&def.cron);
    if args.json {
        return printer.json(&Row::new(&def, scheduler.kind(), next));
    }
    printer.result(&format!(
        "scheduled {name}: `{}` ({}), next {}; log {}",
        def.cron,
        scheduler.kind(),
        next.map_or_else(|| "never".into(), |n| n.1),
        schedule::log_path(&root, &name).display()
    ));
    Ok(())
}

/// One schedule as `list` and `status` show it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    cron: String,
    scheduler: &'static str,
    root: PathBuf,
    pipeline: Option<String>,
    sets: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<pipe_schema::notify::NotifyConfig>,
    log: PathBuf,
    next: Option<String>,
    next_unix: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<LastRun>,
}

impl Row {
    fn new(def: &Schedule, scheduler: &'static str, next: Option<(i64, String)>) -> Self {
        Self {
            name: def.name.clone(),
            cron: def.cron.clone(),
            scheduler,
            root: def.root.clone(),
            pipeline: Some(def.pipeline.clone()),
            sets: def.sets.clone(),
            env: def.env.clone(),
            // Shown, so the secret part of a literal URL is left out.
            notify: def.notify.clone().map(|mut n| {
                n.webhook = n
                    .webhook
                    .as_deref()
                    .map(pipe_engine::notify::webhook::redact);
                n
            }),
            log: schedule::log_path(&def.root, &def.name),
            next_unix: next.as_ref().map(|n| n.0),
            next: next.map(|n| n.1),
            last: None,
        }
    }
}

/// Every installed schedule, with its definition where the workspace still has it.
fn rows() -> anyhow::Result<Vec<Row>> {
    let scheduler = schedule::system();
    let mut out = Vec::new();
    for inst in scheduler.installed()? {
        let next = next_time(&inst.cron);
        let row = match schedule::read(&inst.root, &inst.name) {
            Ok(def) => Row::new(&def, scheduler.kind(), next),
            Err(_) => Row {
                name: inst.name.clone(),
                cron: inst.cron.clone(),
                scheduler: scheduler.kind(),
                log: schedule::log_path(&inst.root, &inst.name),
                root: inst.root.clone(),
                pipeline: None,
                sets: vec![],
                env: Default::default(),
                notify: None,
                next_unix: next.as_ref().map(|n| n.0),
                next: next.map(|n| n.1),
                last: None,
            },
        };
        out.push(row);
    }
    Ok(out)
}

fn list(printer: &Printer, args: &ListArgs) -> anyhow::Result<()> {
    let rows = rows()?;
    if args.json {
        return printer.json(&rows);
    }
    if rows.is_empty() {
        printer.result("no schedules (add one with `pipe schedule add PIPELINE --daily HH:MM`)");
        return Ok(());
    }
    for r in &rows {
        let what = match &r.pipeline {
            Some(p) => {
                let sets: String = r.sets.iter().map(|s| format!(" --set {s}")).collect();
                format!("{p}{sets}")
            }
            None => "(definition missing from the workspace)".into(),
        };
        printer.result(&format!(
            "{}\t{}\t{}\t{}\tnext {}",
            r.name,
            r.cron,
            r.root.display(),
            what,
            r.next.as_deref().unwrap_or("never")
        ));
    }
    Ok(())
}

fn remove(printer: &Printer, args: &RemoveArgs) -> anyhow::Result<()> {
    let scheduler = schedule::system();
    let installed = scheduler.installed()?;
    let Some(inst) = installed.iter().find(|i| i.name == args.name) else {
        let mut msg = format!("no schedule named `{}`", args.name);
        let names = installed.iter().map(|i| i.name.as_str());
        if let Some(s) = pipe_engine::spec::diag::did_you_mean(&args.name, names) {
            msg.push_str(&format!("\n  hint: did you mean `{s}`?"));
        } else {
            msg.push_str("\n  hint: `pipe schedule list` shows them");
        }
        return Err(UsageError(msg).into());
    };
    scheduler.uninstall(&args.name)?;
    // The log and last run stay for reading; without its definition the name is free.
    let _ = std::fs::remove_file(schedule::definition_path(&inst.root, &inst.name));
    printer.result(&format!(
        "removed schedule {} ({}); its log stays in {}",
        args.name,
        scheduler.kind(),
        schedule::dir(&inst.root, &inst.name).display()
    ));
    Ok(())
}

/// Appends one line to the schedule's log (best effort: the log is for reading).
fn log_line(log: &mut std::fs::File, line: &str) {
    let _ = writeln!(log, "{line}");
}

fn run_now(printer: &Printer, args: &RunArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(match &args.root {
        Some(r) => r.clone(),
        None => std::env::current_dir()?,
    })?;
    let def = schedule::read(&root, &args.name).map_err(|e| {
        UsageError(format!(
            "no schedule `{}` in {}: {e:#}\n  hint: `pipe schedule list` shows each schedule's workspace (pass it with --root)",
            args.name,
            root.display()
        ))
    })?;
    let log_path = schedule::log_path(&root, &def.name);
    schedule::rotate(&log_path, schedule::LOG_ROTATE_BYTES, schedule::LOG_KEEP)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| anyhow::anyhow!("cannot open the log {}: {e}", log_path.display()))?;
    let started_unix = now_unix();
    let started = utc(started_unix as u64);
    let clock = Instant::now();
    log_line(
        &mut log,
        &format!(
            "=== pipe schedule run {} started {started} (pid {}) ===",
            def.name,
            std::process::id()
        ),
    );
    let mut record = LastRun {
        started: started.clone(),
        started_unix,
        finished: None,
        duration_s: None,
        exit_code: None,
        outcome: "running".into(),
        pid: std::process::id(),
        log: log_path.clone(),
    };
    let last_path = schedule::last_path(&root, &def.name);
    let _ = pipe_engine::atomic_write::write_json(&last_path, &record);
    // The binary that is running now (the one the scheduler called), with the environment
    // captured at `add` laid over whatever the scheduler provides.
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .arg(&def.pipeline)
        .arg("--root")
        .arg(&root)
        .arg("--skip-if-running")
        .current_dir(&root)
        .envs(&def.env)
        .env("PIPE_SCHEDULE", &def.name)
        .env_remove(schedule::NOTIFY_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    for s in &def.sets {
        cmd.arg("--set").arg(s);
    }
    if let Some(notify) = &def.notify {
        cmd.env(schedule::NOTIFY_ENV, serde_json::to_string(notify)?);
    }
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start `pipe run`: {e}"))?;
    let code = status.code();
    let outcome = match code {
        Some(0) => "succeeded",
        Some(EXIT_BUSY) => "skipped",
        _ => "failed",
    };
    let secs = clock.elapsed().as_secs_f64();
    record.finished = Some(utc(now_unix() as u64));
    record.duration_s = Some((secs * 10.0).round() / 10.0);
    record.exit_code = code;
    record.outcome = outcome.into();
    let code_text = code.map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"));
    log_line(
        &mut log,
        &format!(
            "=== pipe schedule run {} {outcome} after {secs:.1}s ({code_text}) ===",
            def.name
        ),
    );
    pipe_engine::atomic_write::write_json(&last_path, &record)
        .map_err(|e| anyhow::anyhow!("cannot record the run in {}: {e}", last_path.display()))?;
    match code {
        Some(0) => {
            printer.status(&format!(
                "schedule {}: succeeded in {secs:.1}s; log {}",
                def.name,
                log_path.display()
            ));
            Ok(())
        }
        Some(EXIT_BUSY) => Err(Busy(format!(
            "schedule {}: skipped, another pipe run holds the workspace lock in {}",
            def.name,
            root.display()
        ))
        .into()),
        Some(130) => Err(Interrupted.into()),
        _ => Err(Failure(format!(
            "schedule {}: pipe run failed ({code_text}); log {}",
            def.name,
            log_path.display()
        ))
        .into()),
    }
}

fn status(printer: &Printer, args: &StatusArgs) -> anyhow::Result<()> {
    let mut rows = rows()?;
    if let Some(name) = &args.name {
        rows.retain(|r| &r.name == name);
        if rows.is_empty() {
            return Err(UsageError(format!(
                "no schedule named `{name}`\n  hint: `pipe schedule list` shows them"
            ))
            .into());
        }
    }
    for r in &mut rows {
        r.last = schedule::read_last(&r.root, &r.name).map(|mut last| {
            // A run recorded as running whose process is gone crashed (or was killed).
            if last.outcome == "running" && !pipe_engine::process::is_alive(last.pid) {
                last.outcome = "crashed".into();
            }
            last
        });
    }
    if args.json {
        return printer.json(&rows);
    }
    if rows.is_empty() {
        printer.result("no schedules");
        return Ok(());
    }
    for r in &rows {
        printer.result(&format!("{} ({} `{}`)", r.name, r.scheduler, r.cron));
        printer.result(&format!("  workspace {}", r.root.display()));
        match &r.last {
            Some(l) => printer.result(&format!(
                "  last      {} {}{}{}",
                l.started,
                l.outcome,
                l.duration_s
                    .map(|d| format!(" in {d:.1}s"))
                    .unwrap_or_default(),
                l.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default()
            )),
            None => printer.result("  last      never ran"),
        }
        printer.result(&format!("  log       {}", r.log.display()));
        printer.result(&format!(
            "  next      {}",
            r.next
                .as_deref()
                .map_or("never".into(), |n| format!("{n} (local time)"))
        ));
    }
    Ok(())
}
