//! `pipe runs`: the run history of a workspace (`runs/history/`), kept by every `pipe run`
//! without any server: list, show, diff and compare runs, and send them to MLflow.

use super::output::Printer;
use super::{Failure, UsageError};
use pipe_engine::history::page::{RunCurves, compare_page, format_number};
use pipe_engine::history::record::RunRecord;
use pipe_engine::history::{diff, read};
use std::path::{Path, PathBuf};

/// Subcommands of `pipe runs`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  pipe runs list\n  pipe runs list --pipeline quickstart --limit 5\n  pipe runs list --page 2 --json"
    )]
    List {
        #[command(flatten)]
        root: RootArg,
        /// Only runs of this pipeline (its `name:`).
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// Runs per page.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Which page (1 is the newest runs).
        #[arg(long, default_value_t = 1, value_name = "N")]
        page: usize,
        /// One JSON object per run (the full record), one per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its stages, what each did, metrics and artifacts.
    #[command(
        after_help = "RUN is an id, a unique part of one (its start or its random end), or `latest` / `latest~1`.\n\nExamples:\n  pipe runs show latest\n  pipe runs show 3f2a9c --json"
    )]
    Show {
        #[command(flatten)]
        root: RootArg,
        /// The run.
        run: String,
        /// The full record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two runs' configurations and metrics side by side, across pipelines.
    #[command(
        after_help = "Stages are matched by name, so `train` of one pipeline lines up with `train` of another.\n\nExamples:\n  pipe runs diff latest~1 latest\n  pipe runs diff 3f2a9c 9e01bb --all --json"
    )]
    Diff {
        #[command(flatten)]
        root: RootArg,
        /// The first run.
        a: String,
        /// The second run.
        b: String,
        /// Also list configuration that is the same in both.
        #[arg(long)]
        all: bool,
        /// The comparison as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Compare several runs: their metrics, or one HTML page with overlaid loss curves.
    #[command(
        after_help = "Examples:\n  pipe runs compare latest~2 latest~1 latest\n  pipe runs compare 3f2a9c 9e01bb --html reports/lr-sweep.html"
    )]
    Compare {
        #[command(flatten)]
        root: RootArg,
        /// The runs (two or more).
        #[arg(required = true, num_args = 2..)]
        runs: Vec<String>,
        /// Write a self-contained HTML page (default `reports/runs-compare.html`).
        #[arg(long, value_name = "FILE", num_args = 0..=1,
              default_missing_value = "reports/runs-compare.html")]
        html: Option<PathBuf>,
    },
    /// Send tracked runs that MLflow has not fully received yet (the outbox).
    #[command(
        after_help = "A run is tracked when its pipeline has `tracking: {mlflow: URI}` or MLFLOW_TRACKING_URI was set when it ran. Sending is idempotent: a run already on the server is not sent twice.\n\nExamples:\n  pipe runs sync\n  MLFLOW_TRACKING_TOKEN=... pipe runs sync latest --json\n\nExit status: 0 everything sent, 1 the server failed (what was sent is kept)."
    )]
    Sync(SyncArgs),
}

/// `--root`, shared by the subcommands.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    root: RootArg,
    /// Runs to send (default: every tracked run not yet complete on its server).
    runs: Vec<String>,
    /// One JSON object per run: what was sent.
    #[arg(long)]
    json: bool,
}

/// `--root`, shared by the subcommands.
#[derive(Debug, clap::Args)]
pub struct RootArg {
    /// Workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

impl RootArg {
    fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.root {
            Some(r) => r.clone(),
            None => std::env::current_dir()?,
        })
    }
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List {
            root,
            pipeline,
            limit,
            page,
            json,
        } => list(
            printer,
            &root.path()?,
            pipeline.as_deref(),
            limit,
            page,
            json,
        ),
        Command::Show { root, run, json } => {
            let root = root.path()?;
            let record = find(&root, &run)?;
            if json {
                return printer.json(&record);
            }
            show(printer, &record);
            Ok(())
        }
        Command::Diff {
            root,
            a,
            b,
            all,
            json,
        } => {
            let root = root.path()?;
            let d = diff::diff(&find(&root, &a)?, &find(&root, &b)?);
            if json {
                return printer.json(&d);
            }
            print_diff(printer, &d, all);
            Ok(())
        }
        Command::Sync(args) => sync(printer, args),
        Command::Compare { root, runs, html } => {
            let root = root.path()?;
            let records = runs
                .iter()
                .map(|q| find(&root, q))
                .collect::<anyhow::Result<Vec<_>>>()?;
            match html {
                Some(out) => {
                    let curves: Vec<RunCurves> = records
                        .into_iter()
                        .map(|run| RunCurves {
                            curves: run
                                .stages
                                .iter()
                                .filter(|s| !s.series.is_empty())
                                .map(|s| (s.name.clone(), read::series(&root, &run.id, &s.name)))
                                .collect(),
                            run,
                        })
                        .collect();
                    let path = if out.is_absolute() {
                        out
                    } else {
                        root.join(out)
                    };
                    pipe_engine::atomic_write::write_atomic(
                        &path,
                        compare_page(&curves).as_bytes(),
                    )
                    .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
                    printer.result(&path.display().to_string());
                }
                None => print_metrics(printer, &records),
            }
            Ok(())
        }
    }
}

fn find(root: &Path, query: &str) -> anyhow::Result<RunRecord> {
    let id = read::resolve(root, query).map_err(|e| UsageError(e.to_string()))?;
    read::load(root, &id).map_err(|e| Failure(e.to_string()).into())
}

fn list(
    printer: &Printer,
    root: &Path,
    pipeline: Option<&str>,
    limit: usize,
    page: usize,
    json: bool,
) -> anyhow::Result<()> {
    if limit == 0 || page == 0 {
        return Err(UsageError("--limit and --page start at 1".into()).into());
    }
    let all = read::list(root, pipeline);
    let shown: Vec<&RunRecord> = all.iter().skip((page - 1) * limit).take(limit).collect();
    if json {
        for r in &shown {
            printer.json(r)?;
        }
        return Ok(());
    }
    if all.is_empty() {
        printer.status("no runs recorded yet: `pipe run` records every run here");
        return Ok(());
    }
    printer.result(&format!(
        "{:<28} {:<18} {:<12} {:<20} {}",
        "RUN", "PIPELINE", "STATUS", "STARTED", "STAGES"
    ));
    for r in &shown {
        printer.result(&format!(
            "{:<28} {:<18} {:<12} {:<20} {}",
            r.id,
            r.pipeline,
            r.effective_status().as_str(),
            r.started,
            r.stage_counts()
        ));
    }
    let pages = all.len().div_ceil(limit);
    if pages > 1 {
        printer.status(&format!(
            "page {page} of {pages} ({} runs); --page N for more",
            all.len()
        ));
    }
    Ok(())
}

fn show(printer: &Printer, r: &RunRecord) {
    printer.result(&format!(
        "run {}  {} ({})  {}",
        r.id,
        r.pipeline,
        r.pipeline_file,
        r.effective_status().as_str()
    ));
    printer.result(&format!(
        "started {}  ended {}",
        r.started,
        r.ended.as_deref().unwrap_or("-")
    ));
    if let Some(g) = &r.git {
        printer.result(&format!(
            "git {}{}",
            g.commit,
            if g.dirty {
                " (uncommitted changes)"
            } else {
                ""
            }
        ));
    }
    if !r.sets.is_empty() {
        printer.result(&format!("--set {}", r.sets.join(" --set ")));
    }
    let h = &r.host;
    let mut host = format!(
        "host {} ({} {}), {} cores, {}",
        h.chip,
        h.os,
        h.arch,
        h.cores,
        pipe_engine::hardware::gib(h.memory_bytes)
    );
    if let Some(mlx) = &h.mlx {
        host.push_str(&format!(
            ", MLX {mlx} ({})",
            h.backend.as_deref().unwrap_or("?")
        ));
    }
    printer.result(&host);
    printer.result("stages:");
    for s in &r.stages {
        let mut line = format!("  {:<28} {:<9}", s.name, s.status.as_str());
        if let Some(ms) = s.duration_ms {
            line.push_str(&format!(" {:>8}", format!("{:.1}s", ms as f64 / 1000.0)));
        }
        if let Some(p) = s.produced_by.as_ref().filter(|p| *p != &r.id) {
            line.push_str(&format!("  produced by run {p}"));
        }
        if let Some(e) = &s.error {
            line.push_str(&format!("  {e}"));
        }
        printer.result(&line);
        for (k, v) in &s.metrics {
            printer.result(&format!("      {k} = {}", format_number(*v)));
        }
        for a in &s.artifacts {
            printer.result(&format!("      artifact {} ({} bytes)", a.path, a.bytes));
        }
        if !s.trials.is_empty() {
            printer.result(&format!("      {} trials", s.trials.len()));
        }
    }
}

fn print_diff(printer: &Printer, d: &diff::Diff, all: bool) {
    let text = |v: &Option<serde_json::Value>| match v {
        None => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    printer.result(&format!("{:<48} {:<30} {}", "CONFIG", d.a, d.b));
    let mut same = 0;
    for row in &d.params {
        if !row.differs() && !all {
            same += 1;
            continue;
        }
        let mark = if row.differs() { "*" } else { " " };
        printer.result(&format!(
            "{mark}{:<47} {:<30} {}",
            row.key,
            text(&row.a),
            text(&row.b)
        ));
    }
    if same > 0 {
        printer.result(&format!(
            "  ({same} settings are the same in both; --all lists them)"
        ));
    }
    printer.result("");
    printer.result(&format!(
        "{:<48} {:<14} {:<14} {}",
        "METRIC", "A", "B", "B - A"
    ));
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), format_number);
    for row in &d.metrics {
        printer.result(&format!(
            "{:<48} {:<14} {:<14} {}",
            row.key,
            num(row.a),
            num(row.b),
            row.delta.map_or_else(String::new, |x| format!(
                "{}{}",
                if x > 0.0 { "+" } else { "" },
                format_number(x)
            ))
        ));
    }
}

fn print_metrics(printer: &Printer, runs: &[RunRecord]) {
    let metrics: Vec<_> = runs.iter().map(diff::metrics_of).collect();
    let keys: std::collections::BTreeSet<&String> = metrics.iter().flat_map(|m| m.keys()).collect();
    let mut header = format!("{:<48}", "METRIC");
    for r in runs {
        header.push_str(&format!(" {:<28}", r.id));
    }
    printer.result(&header);
    for key in keys {
        let mut line = format!("{key:<48}");
        for m in &metrics {
            line.push_str(&format!(
                " {:<28}",
                m.get(key)
                    .map_or_else(|| "-".to_owned(), |v| format_number(*v))
            ));
        }
        printer.result(&line);
    }
}

fn sync(printer: &Printer, args: SyncArgs) -> anyhow::Result<()> {
    use pipe_engine::tracking::sync;
    let root = args.root.path()?;
    let ids = if args.runs.is_empty() {
        sync::pending(&root)
    } else {
        args.runs
            .iter()
            .map(|q| read::resolve(&root, q).map_err(|e| UsageError(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?
    };
    if ids.is_empty() && !args.json {
        printer.status("nothing to send: every tracked run is on its server");
    }
    let mut failed = 0;
    for id in &ids {
        match sync::sync_run(&root, id, true) {
            Ok(report) => {
                if args.json {
                    printer.json(&report)?;
                    continue;
                }
                let server = read::load(&root, id)
                    .ok()
                    .and_then(|r| r.tracking)
                    .map_or_else(|| "-".to_owned(), |t| t.mlflow);
                printer.result(&format!(
                    "{id}: {} on {server} ({} runs created, {} files uploaded, {} versions registered)",
                    if report.complete { "complete" } else { "sent so far" },
                    report.runs_created,
                    report.artifacts_uploaded,
                    report.versions_registered
                ));
                for w in &report.warnings {
                    printer.warn(w);
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    printer.json(&serde_json::json!({"run": id, "error": e.to_string()}))?;
                } else {
                    printer.error(&format!("{id}: {e}"));
                }
            }
        }
    }
    if failed > 0 {
        return Err(Failure(format!(
            "{failed} run{} not sent; they stay in the outbox",
            if failed == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(())
}
