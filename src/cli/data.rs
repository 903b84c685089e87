//! `pipe data`: fetch known datasets into the user cache; list and check out the dataset
//! versions a workspace recorded (`version` stages), and share them through the remote cache.

use super::output::Printer;
use super::{Failure, UsageError};
use pipe_engine::cache::Store;
use pipe_engine::data::version::{self, VersionError};
use pipe_engine::exec::lock;
use pipe_engine::fetch::{self, FetchOutcome};
use std::path::{Path, PathBuf};

/// Subcommands of `pipe data`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download a known dataset into the user cache (a no-op when it is already there) and
    /// print its path.
    #[command(
        after_help = "Examples:\n  pipe data fetch agid-past-tense\n  cp \"$(pipe data fetch agid-past-tense)\" data/raw/"
    )]
    Fetch {
        /// The dataset id (see `pipe data list`).
        id: String,
    },
    /// List the datasets pipe can fetch.
    List,
    /// List the dataset versions recorded in this workspace, newest first.
    #[command(
        after_help = "Each line: the id (its first 12 digits; any unique prefix works), when it was recorded,\nthe folder it was taken from, and its rows per .jsonl file.\n\nExamples:\n  pipe data log\n  pipe data log --json | jq -r .id"
    )]
    Log {
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object per version (JSON Lines), newest first.
        #[arg(long)]
        json: bool,
    },
    /// Restore the files of a recorded dataset version.
    #[command(
        after_help = "Without --to, the version replaces the folder it was taken from. A folder is replaced\nwhole; files are plain copies (edit them freely), each checked against its hash first.\n\nExamples:\n  pipe data checkout 3fa2c1d9\n  pipe data checkout 3fa2c1d9 --to /tmp/old-data"
    )]
    Checkout {
        /// The version id, or a unique prefix of it (see `pipe data log`).
        id: String,
        /// Where to put the files (default: the folder the version was taken from).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Replace DIR even if it is a non-empty folder other than the version's own.
        #[arg(long)]
        force: bool,
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Upload recorded dataset versions to the remote cache (as `dvc push` does).
    #[command(
        after_help = "Sends the files of each version (all recorded ones unless ids are given) and its record.
The remote is --remote, PIPE_REMOTE, or the `remote:` of --pipeline.

Examples:
  pipe data push --remote s3://team-bucket/pipe-cache
  pipe data push 3fa2c1d9 --pipeline pipe.yaml"
    )]
    Push {
        /// Version ids or unique prefixes (default: every recorded version).
        ids: Vec<String>,
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
        /// Read `remote:` from this pipeline file.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Download dataset versions from the remote cache into this workspace's log.
    #[command(
        after_help = "Each file is checked against its hash; the versions then show in `pipe data log` and
`pipe data checkout ID` restores one.

Examples:
  pipe data pull --remote s3://team-bucket/pipe-cache
  pipe data pull 3fa2c1d9 --pipeline pipe.yaml && pipe data checkout 3fa2c1d9"
    )]
    Pull {
        /// Version ids or unique prefixes (default: every version on the remote).
        ids: Vec<String>,
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
        /// Read `remote:` from this pipeline file.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Fetch { id } => fetch_dataset(printer, &id),
        Command::List => list(printer),
        Command::Log { root, json } => log(printer, root, json),
        Command::Checkout {
            id,
            to,
            force,
            root,
        } => checkout(printer, root, &id, to, force),
        Command::Push {
            ids,
            remote,
            pipeline,
            root,
            json,
        } => push(printer, &ids, &remote, pipeline, root, json),
        Command::Pull {
            ids,
            remote,
            pipeline,
            root,
            json,
        } => pull(printer, &ids, &remote, pipeline, root, json),
    }
}

/// The remote of `pipe data push/pull`: the flag or variable, else the pipeline's.
fn open_remote(
    args: &super::remote::RemoteArgs,
    pipeline: Option<PathBuf>,
    root: &Path,
    create: bool,
) -> anyhow::Result<pipe_engine::remote::Remote> {
    let configured = match pipeline {
        Some(file) => {
            let ws = super::workspace::WorkspaceArgs {
                pipeline: file,
                root: Some(root.to_owned()),
                sets: Vec::new(),
            };
            ws.load_with(true)?.0.remote
        }
        None => None,
    };
    args.open(configured.as_ref(), root, create)
}

fn push(
    printer: &Printer,
    ids: &[String],
    remote: &super::remote::RemoteArgs,
    pipeline: Option<PathBuf>,
    root: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let root = workspace(root)?;
    let remote = open_remote(remote, pipeline, &root, true)?;
    let store = Store::open(&root);
    let records = if ids.is_empty() {
        version::read_log(&store)?
    } else {
        ids.iter()
            .map(|id| version::resolve(&store, id))
            .collect::<anyhow::Result<_>>()?
    };
    if records.is_empty() {
        return Err(Failure(
            "no data versions are recorded in this workspace (a `version` stage records one)"
                .into(),
        )
        .into());
    }
    let report = pipe_engine::remote::push_versions(&remote, &store, &records)
        .map_err(|e| Failure(e.to_string()))?;
    super::remote::print_push(printer, &report, json)
}

fn pull(
    printer: &Printer,
    ids: &[String],
    remote: &super::remote::RemoteArgs,
    pipeline: Option<PathBuf>,
    root: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let root = workspace(root)?;
    let remote = open_remote(remote, pipeline, &root, false)?;
    let store = Store::open(&root);
    let report = pipe_engine::remote::pull_versions(&remote, &store, ids)
        .map_err(|e| Failure(e.to_string()))?;
    super::remote::print_pull(printer, &report, json)?;
    if report.stages.is_empty() && !ids.is_empty() {
        return Err(Failure(format!(
            "no version {} on {}",
            ids.join(", "),
            report.remote
        ))
        .into());
    }
    Ok(())
}

fn fetch_dataset(printer: &Printer, id: &str) -> anyhow::Result<()> {
    let cache = pipe_engine::dirs::user_cache_dir()?;
    let dataset = fetch::find_dataset(id).ok_or_else(|| {
        let known: Vec<_> = fetch::KNOWN_DATASETS.iter().map(|d| d.id).collect();
        UsageError(format!(
            "unknown dataset `{id}`\nhint: known datasets: {}",
            known.join(", ")
        ))
    })?;
    let outcome = fetch::fetch(&cache, dataset)?;
    if let FetchOutcome::Installed(_) = outcome {
        printer.status(&format!(
            "downloaded {}; sha256 verified",
            dataset.requirement
        ));
    }
    printer.result(&outcome.path().display().to_string());
    Ok(())
}

fn list(printer: &Printer) -> anyhow::Result<()> {
    let cache = pipe_engine::dirs::user_cache_dir()?;
    for d in fetch::KNOWN_DATASETS {
        let fetched = fetch::artifact_path(&cache, d).is_file();
        let mark = if fetched { "fetched" } else { "not fetched" };
        printer.result(&format!("{}  {}  [{mark}]", d.id, d.description));
    }
    Ok(())
}

fn workspace(root: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let root = match root {
        Some(r) => r,
        None => std::env::current_dir()?,
    };
    if !root.is_dir() {
        return Err(UsageError(format!(
            "workspace root {} is not a directory",
            root.display()
        ))
        .into());
    }
    Ok(root)
}

fn log(printer: &Printer, root: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let store = Store::open(&workspace(root)?);
    let mut records = version::read_log(&store)?;
    records.reverse();
    if records.is_empty() && !json {
        printer.status("no data versions recorded yet (a `version` stage records one)");
    }
    for r in &records {
        if json {
            printer.json(r)?;
        } else {
            printer.result(&format!(
                "{}  {}  {}  {}",
                &r.id[..12],
                r.created,
                r.data,
                pipe_engine::stages::version::rows_summary(r)
            ));
        }
    }
    Ok(())
}

fn checkout(
    printer: &Printer,
    root: Option<PathBuf>,
    id: &str,
    to: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<()> {
    let root = workspace(root)?;
    let store = Store::open(&root);
    let record = version::resolve(&store, id).map_err(|e| match e.downcast::<VersionError>() {
        Ok(v) => UsageError(v.to_string()).into(),
        Err(e) => e,
    })?;
    let own = root.join(&record.data);
    let dest = match &to {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => std::env::current_dir()?.join(dir),
        None => own.clone(),
    };
    let same = |a: &Path, b: &Path| {
        std::fs::canonicalize(a)
            .ok()
            .is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
    };
    if same(&dest, &root) || dest.join("cache").join("run.lock").exists() {
        return Err(UsageError(format!(
            "{} is a workspace root; checking out there would replace the whole workspace\nhint: pass a data folder with --to",
            dest.display()
        ))
        .into());
    }
    let non_empty = std::fs::read_dir(&dest).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !force && !same(&dest, &own) {
        return Err(UsageError(format!(
            "{} is a folder that is not empty; it would be replaced\nhint: pass --force to replace it, or pick another --to",
            dest.display()
        ))
        .into());
    }
    if dest.is_file() && !force {
        return Err(UsageError(format!(
            "{} is a file; it would be replaced\nhint: pass --force to replace it",
            dest.display()
        ))
        .into());
    }
    // A run reading the folder while it is swapped would see a mix of versions.
    let _lock = lock::acquire(&root, None, |holder| {
        printer.status(&format!("waiting for {holder} to finish..."));
    })
    .map_err(|e| Failure(format!("{e:#}")))?;
    version::checkout(&store, &record, &dest)?;
    printer.status(&format!(
        "restored data version {} ({} files, {}) into {}",
        &record.id[..12],
        record.files,
        pipe_engine::stages::version::rows_summary(&record),
        dest.display()
    ));
    Ok(())
}
