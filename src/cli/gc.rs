//! `pipe gc`: delete cache objects nothing refers to any more.

use super::Failure;
use super::output::Printer;
use crate::cache::Store;
use crate::exec::lock;
use std::path::PathBuf;

/// Arguments of `pipe gc`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Keeps every object referenced by a lock file written in this workspace, by the newest\nrun-cache entries and by a recorded data version (`pipe data log`); deletes the rest.\n\nExamples:\n  pipe gc --dry-run\n  pipe gc --keep-runs 10"
)]
pub struct Args {
    /// Workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// How many of the newest run-cache entries keep their outs.
    #[arg(long, default_value_t = 50, value_name = "N")]
    keep_runs: usize,
    /// Report what would be deleted, delete nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let root = match args.root {
        Some(r) => r,
        None => std::env::current_dir()?,
    };
    // gc must not delete objects a running `pipe run` is about to reference.
    let _lock = lock::acquire(&root, None, |pid| {
        let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        printer.status(&format!("waiting for a pipe run{who} to finish..."));
    })
    .map_err(|e| Failure(format!("{e:#}")))?;
    let store = Store::open(&root);
    let report = store.gc(args.keep_runs, args.dry_run)?;
    if args.json {
        return printer.json(&report);
    }
    let verb = if args.dry_run { "would free" } else { "freed" };
    printer.result(&format!(
        "{verb} {} in {} objects ({} kept, {} old run-cache entries dropped)",
        human_bytes(report.bytes_freed),
        report.objects_removed,
        report.objects_kept,
        report.runs_removed
    ));
    Ok(())
}

/// Bytes in the largest unit that keeps the number at least 1.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
