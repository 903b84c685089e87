//! `pipe push` and `pipe pull`: share a pipeline's computed outs through a remote cache
//! (an S3-compatible bucket or a folder), so another machine restores instead of running.

use super::output::Printer;
use super::workspace::WorkspaceArgs;
use super::{Failure, UsageError};
use pipe_engine::cache::Store;
use pipe_engine::exec::lock;
use pipe_engine::exec::lockfile::LockFile;
use pipe_engine::remote::{self, PullReport, PushReport, Remote};
use pipe_schema::remote::{RemoteConfig, RemoteSettings};
use std::path::Path;

/// Choosing the remote.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// The remote cache: `s3://bucket/prefix` or a folder (default: the pipeline's
    /// `remote:`).
    #[arg(long, env = "PIPE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
}

impl RemoteArgs {
    /// The remote's settings: `--remote` (or `PIPE_REMOTE`), else the pipeline's `remote:`.
    pub fn settings(&self, configured: Option<&RemoteConfig>) -> anyhow::Result<RemoteSettings> {
        if let Some(url) = &self.remote {
            pipe_schema::remote::check_url(url)
                .map_err(|m| UsageError(format!("--remote: {m}")))?;
            // The pipeline's endpoint and profile still apply to the same bucket elsewhere.
            let mut settings = configured
                .map(RemoteConfig::settings)
                .unwrap_or(RemoteSettings {
                    url: url.clone(),
                    endpoint: None,
                    region: None,
                    profile: None,
                });
            settings.url = url.clone();
            return Ok(settings);
        }
        configured.map(RemoteConfig::settings).ok_or_else(|| {
            UsageError(
                "no remote cache is configured\nhint: add `remote: s3://BUCKET/PREFIX` (or a folder) to the pipeline, set PIPE_REMOTE, or pass --remote"
                    .into(),
            )
            .into()
        })
    }

    /// Opens the remote (`create`: a missing folder remote is made, for pushing).
    pub fn open(
        &self,
        configured: Option<&RemoteConfig>,
        root: &Path,
        create: bool,
    ) -> anyhow::Result<Remote> {
        let settings = self.settings(configured)?;
        Remote::open(&settings, root, create).map_err(|e| Failure(e.to_string()).into())
    }
}

/// Arguments of `pipe push` and `pipe pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    ws: WorkspaceArgs,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The help after `pipe push --help`.
pub const PUSH_HELP: &str = "Uploads every object the pipeline's lock file names (the outs of its last successful run),\nthen their run-cache entries, and every finished tune trial and study journal of the workspace\n(a second machine resumes the study without rerunning them). Objects are named by their hash, so pushing twice, or from two\nmachines at once, is safe and sends only what the remote lacks.\n\nS3 credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and\n~/.aws/credentials); a server other than AWS needs AWS_ENDPOINT_URL or `remote: endpoint:`.\n\nExamples:\n  pipe push pipelines/quickstart.yaml\n  pipe push pipe.yaml --remote s3://team-bucket/pipe-cache\n  PIPE_REMOTE=/mnt/share/pipe-cache pipe push pipe.yaml --json";

/// The help after `pipe pull --help`.
pub const PULL_HELP: &str = "Downloads what the pipeline's lock file names (commit the lock file, as with dvc.lock),\nchecks every object against its hash, records the run-cache entries and restores outs that\nare missing from the workspace (existing files are never overwritten), and the tune trials and\nstudy journals the workspace lacks (a study then resumes from them). A corrupt remote\nobject is refused (exit 1).\n\nWithout a lock file, `pipe run --pull` does the same stage by stage: each stage whose outs\nare on the remote is restored instead of run.\n\nExamples:\n  pipe pull pipelines/quickstart.yaml && pipe run pipelines/quickstart.yaml\n  pipe run pipelines/quickstart.yaml --pull";

fn lock_workspace(printer: &Printer, root: &Path) -> anyhow::Result<lock::WorkspaceLock> {
    lock::acquire(root, None, |holder| {
        printer.status(&format!("waiting for {holder} to finish..."));
    })
    .map_err(|e| Failure(format!("{e:#}")).into())
}

fn load_lock(path: &Path) -> anyhow::Result<LockFile> {
    LockFile::load(path).map_err(|e| Failure(e.to_string()).into())
}

/// The error of a push or pull that had nothing to move: no finished stage in the lock
/// file and no tune trial.
fn nothing_recorded(path: &Path) -> anyhow::Error {
    Failure(format!(
        "{} records no finished stage yet, and there is no tune trial to move\nhint: `pipe run` the pipeline first (or use `pipe run --pull` on a machine without the lock file)",
        path.display()
    ))
    .into()
}

pub fn push(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, _) = args.ws.load_with(true)?;
    let remote = args
        .remote
        .open(pipeline.remote.as_ref(), &pipeline.root, true)?;
    let _guard = lock_workspace(printer, &pipeline.root)?;
    let store = Store::open(&pipeline.root);
    let lock = load_lock(&pipeline.lock_path())?;
    let mut report = match lock.stages.is_empty() {
        true => PushReport {
            remote: remote.location().to_string(),
            ..Default::default()
        },
        false => remote::push_lock(&remote, &store, &lock).map_err(|e| Failure(e.to_string()))?,
    };
    remote::push_trials(&remote, &store, &mut report).map_err(|e| Failure(e.to_string()))?;
    if report.stages.is_empty() {
        return Err(nothing_recorded(&pipeline.lock_path()));
    }
    print_push(printer, &report, args.json)
}

pub fn pull(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, _) = args.ws.load_with(true)?;
    let remote = args
        .remote
        .open(pipeline.remote.as_ref(), &pipeline.root, false)?;
    let _guard = lock_workspace(printer, &pipeline.root)?;
    let store = Store::open(&pipeline.root);
    let lock = load_lock(&pipeline.lock_path())?;
    let mut report = match lock.stages.is_empty() {
        true => PullReport {
            remote: remote.location().to_string(),
            ..Default::default()
        },
        false => remote::pull_lock(&remote, &store, &lock).map_err(|e| Failure(e.to_string()))?,
    };
    remote::pull_trials(&remote, &store, &mut report).map_err(|e| Failure(e.to_string()))?;
    if report.stages.is_empty() {
        return Err(nothing_recorded(&pipeline.lock_path()));
    }
    print_pull(printer, &report, args.json)?;
    let absent: Vec<&str> = report
        .stages
        .iter()
        .filter(|s| s.state == "not-on-remote")
        .map(|s| s.stage.as_str())
        .collect();
    if !absent.is_empty() {
        return Err(Failure(format!(
            "not on {}: {} (push them from the machine that ran them)",
            report.remote,
            absent.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// "3 objects (1.2 MiB)": what a transfer moved.
fn moved(o: &remote::Counts) -> String {
    format!(
        "{} object{} ({:.1} MiB)",
        o.copied,
        if o.copied == 1 { "" } else { "s" },
        o.bytes as f64 / (1u64 << 20) as f64
    )
}

/// One status line per stage (or data version) of a transfer.
fn print_stages(printer: &Printer, stages: &[remote::StageTransfer]) {
    for s in stages {
        printer.status(&format!("{}: {}", s.stage, s.state));
    }
}

/// Prints a push report (also `pipe data push`'s).
pub fn print_push(printer: &Printer, report: &PushReport, json: bool) -> anyhow::Result<()> {
    if json {
        return printer.json(report);
    }
    print_stages(printer, &report.stages);
    printer.result(&format!(
        "pushed {} to {}; {} already there",
        moved(&report.objects),
        report.remote,
        report.objects.present
    ));
    Ok(())
}

/// Prints a pull report (also `pipe data pull`'s).
pub fn print_pull(printer: &Printer, report: &PullReport, json: bool) -> anyhow::Result<()> {
    if json {
        return printer.json(report);
    }
    print_stages(printer, &report.stages);
    let restored = match report.restored.is_empty() {
        true => String::new(),
        false => format!("; restored {}", report.restored.join(", ")),
    };
    printer.result(&format!(
        "pulled {} from {}, each checked against its hash; {} already here{restored}",
        moved(&report.objects),
        report.remote,
        report.objects.present
    ));
    Ok(())
}
