//! `pipe gc`: delete cache objects nothing refers to any more, activation cache files
//! unused for long or over their budget, and kept base-model scores unused for as long.

use super::Failure;
use super::output::Printer;
use pipe_engine::cache::Store;
use pipe_engine::cache::activations::{self, DEFAULT_DISK_MB, DEFAULT_MAX_AGE_DAYS, GcPolicy};
use pipe_engine::cache::eval_base;
use pipe_engine::exec::lock;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Arguments of `pipe gc`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Keeps every object referenced by a lock file written in this workspace, by the newest\nrun-cache entries and by a recorded data version (`pipe data log`); deletes the rest.\n\nThe activation cache (cache/activations/, frozen-block states that training recomputes when\nmissing) loses files unused for --activation-max-age days, then the least recently used until\nit fits --activation-budget-mb, and temporary files of writers that are gone. The base-model\nscores evaluate stages keep (cache/eval-base/) go when unused for --activation-max-age days too.\n\nExamples:\n  pipe gc --dry-run\n  pipe gc --keep-runs 10\n  pipe gc --activation-max-age 7 --activation-budget-mb 1024"
)]
pub struct Args {
    /// Workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// How many of the newest run-cache entries keep their outs.
    #[arg(long, default_value_t = 50, value_name = "N")]
    keep_runs: usize,
    /// Delete activation cache files, and kept base-model scores, not used for this many
    /// days.
    #[arg(long, default_value_t = DEFAULT_MAX_AGE_DAYS, value_name = "DAYS")]
    activation_max_age: u64,
    /// Then delete the least recently used activation cache files until the rest fit.
    #[arg(long, default_value_t = DEFAULT_DISK_MB, value_name = "MIB")]
    activation_budget_mb: u64,
    /// Report what would be deleted, delete nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What `pipe gc --json` prints: the object store's report, plus the activation cache's.
#[derive(Debug, serde::Serialize)]
struct Report {
    #[serde(flatten)]
    objects: pipe_engine::cache::GcReport,
    activations: activations::GcReport,
    eval_base: eval_base::GcReport,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let root = match args.root {
        Some(r) => r,
        None => std::env::current_dir()?,
    };
    // gc must not delete objects a running `pipe run` is about to reference.
    let _lock = lock::acquire(&root, None, |holder| {
        printer.status(&format!("waiting for {holder} to finish..."));
    })
    .map_err(|e| Failure(format!("{e:#}")))?;
    let store = Store::open(&root);
    let max_age = Duration::from_secs(args.activation_max_age.saturating_mul(24 * 3600));
    let now = SystemTime::now();
    let report = Report {
        objects: store.gc(args.keep_runs, args.dry_run)?,
        activations: activations::gc(
            &activations::dir(&root),
            GcPolicy {
                max_age,
                budget_bytes: args.activation_budget_mb.saturating_mul(1 << 20),
            },
            now,
            args.dry_run,
        )?,
        eval_base: eval_base::gc(&eval_base::dir(&root), max_age, now, args.dry_run)?,
    };
    if args.json {
        return printer.json(&report);
    }
    let verb = if args.dry_run { "would free" } else { "freed" };
    let (o, a, e) = (&report.objects, &report.activations, &report.eval_base);
    printer.result(&format!(
        "{verb} {} in {} objects ({} kept, {} old run-cache entries dropped)",
        human_bytes(o.bytes_freed),
        o.objects_removed,
        o.objects_kept,
        o.runs_removed
    ));
    for (what, r) in [("activation cache", a), ("base-model scores", e)] {
        if r.entries_removed + r.temp_removed + r.entries_kept > 0 {
            printer.result(&format!(
                "{what}: {verb} {} in {} files ({} unused for over {} days, {} temporary); {} files kept ({})",
                human_bytes(r.bytes_freed),
                r.entries_removed + r.temp_removed,
                r.expired,
                args.activation_max_age,
                r.temp_removed,
                r.entries_kept,
                human_bytes(r.bytes_kept)
            ));
        }
    }
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
