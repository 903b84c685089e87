//! `pipe cache`: maintenance of the workspace cache (`verify`, `stats`).

use super::Failure;
use super::gc::human_bytes;
use super::output::Printer;
use pipe_engine::cache::{Store, StoreUsage, activations};
use std::path::PathBuf;

/// Subcommands of `pipe cache`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rehash every object; move corrupt ones to cache/v1/quarantine/ (exit 1 if any).
    /// Damaged activation cache files are deleted (training recomputes them).
    #[command(after_help = "Examples:\n  pipe cache verify\n  pipe cache verify --json")]
    Verify {
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// How much the cache holds: objects, run entries, activation cache files.
    #[command(after_help = "Examples:\n  pipe cache stats\n  pipe cache stats --json")]
    Stats {
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// What `pipe cache stats --json` prints.
#[derive(Debug, serde::Serialize)]
struct Stats {
    #[serde(flatten)]
    store: StoreUsage,
    activations: activations::Usage,
}

/// What `pipe cache verify --json` prints.
#[derive(Debug, serde::Serialize)]
struct Verified {
    #[serde(flatten)]
    objects: pipe_engine::cache::VerifyReport,
    activations: activations::VerifyReport,
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Verify { root, json } => verify(printer, root, json),
        Command::Stats { root, json } => stats(printer, root, json),
    }
}

fn root_or_cwd(root: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match root {
        Some(r) => r,
        None => std::env::current_dir()?,
    })
}

fn stats(printer: &Printer, root: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let root = root_or_cwd(root)?;
    let stats = Stats {
        store: Store::open(&root).usage(),
        activations: activations::usage(&activations::dir(&root)),
    };
    if json {
        return printer.json(&stats);
    }
    let (s, a) = (&stats.store, &stats.activations);
    printer.result(&format!(
        "objects: {} ({}), run-cache entries: {}",
        s.objects,
        human_bytes(s.object_bytes),
        s.runs
    ));
    printer.result(&format!(
        "activation cache: {} files ({}){}",
        a.entries,
        human_bytes(a.bytes),
        if a.temp_files > 0 {
            format!(
                ", {} temporary ({})",
                a.temp_files,
                human_bytes(a.temp_bytes)
            )
        } else {
            String::new()
        }
    ));
    Ok(())
}

fn verify(printer: &Printer, root: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let root = root_or_cwd(root)?;
    let store = Store::open(&root);
    let report = Verified {
        objects: store.verify()?,
        activations: activations::verify(&activations::dir(&root))?,
    };
    let corrupt = report.objects.corrupt.len();
    if json {
        printer.json(&report)?;
    } else {
        for hash in &report.objects.corrupt {
            printer.error(&format!(
                "object {hash} is corrupt; moved to {}",
                store.dir().join("quarantine").join(hash).display()
            ));
        }
        for (path, why) in &report.activations.removed {
            printer.error(&format!(
                "activation cache file {} was damaged ({why}); deleted",
                path.display()
            ));
        }
        printer.result(&format!(
            "checked {} objects: {corrupt} corrupt; {} activation cache files: {} damaged",
            report.objects.checked,
            report.activations.checked,
            report.activations.removed.len()
        ));
    }
    if corrupt > 0 {
        return Err(Failure(format!(
            "{corrupt} corrupt objects quarantined; rerun the stages that produced them (`pipe run --force -s STAGE`)"
        ))
        .into());
    }
    Ok(())
}
