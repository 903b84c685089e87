//! `pipe show STAGE`: a stage's definition, outs, metrics, last run and log file.

use super::UsageError;
use super::output::Printer;
use super::workspace::WorkspaceArgs;
use pipe_engine::exec::lockfile::LockFile;
use pipe_engine::exec::worker::{LastRun, log_paths};
use pipe_engine::spec::Cmd;
use serde_json::Value;

/// Arguments of `pipe show`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe show train pipelines/train.yaml\n  pipe show 'train@rank=8' pipe.yaml --json"
)]
pub struct Args {
    /// The stage.
    stage: String,
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Out {
    path: String,
    hash: Option<String>,
    exists: bool,
}

#[derive(serde::Serialize)]
struct Report {
    stage: String,
    kind: &'static str,
    cmd: Option<Cmd>,
    deps: Vec<String>,
    params: std::collections::BTreeMap<String, Value>,
    outs: Vec<Out>,
    metrics: std::collections::BTreeMap<String, Value>,
    last_run: Option<LastRun>,
    log: std::path::PathBuf,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, _dag) = args.ws.load_with(true)?;
    let Some(stage) = pipeline.stage(&args.stage) else {
        let mut msg = format!(
            "no stage named `{}` in {}",
            args.stage,
            pipeline.file.display()
        );
        if let Some(s) = pipe_engine::spec::diag::did_you_mean(
            &args.stage,
            pipeline.stages.iter().map(|s| s.name.as_str()),
        ) {
            msg.push_str(&format!("\n  hint: did you mean `{s}`?"));
        }
        return Err(UsageError(msg).into());
    };
    let lock = LockFile::load(&pipeline.lock_path())?;
    let entry = lock.stages.get(&stage.name);
    let outs = stage
        .all_outs()
        .map(|o| Out {
            path: o.clone(),
            hash: entry.and_then(|e| e.outs.get(o).cloned()),
            exists: pipeline.root.join(o).exists(),
        })
        .collect();
    let metrics = stage
        .metrics
        .iter()
        .map(|m| {
            let v = std::fs::read(pipeline.root.join(m))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            (m.clone(), v)
        })
        .collect();
    let (log, record) = log_paths(&pipeline, &stage.name);
    let last_run = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let report = Report {
        stage: stage.name.clone(),
        kind: stage.kind.name(),
        cmd: stage.cmd.clone(),
        deps: stage.deps.clone(),
        params: stage.params.clone(),
        outs,
        metrics,
        last_run,
        log,
    };
    if args.json {
        return printer.json(&report);
    }
    printer.result(&format!("stage    {}", report.stage));
    printer.result(&format!("kind     {}", report.kind));
    match &report.cmd {
        Some(Cmd::Shell(s)) => printer.result(&format!("cmd      {s}")),
        Some(Cmd::Argv(a)) => printer.result(&format!("cmd      {a:?}")),
        None => {}
    }
    for d in &report.deps {
        printer.result(&format!("dep      {d}"));
    }
    for (k, v) in &report.params {
        printer.result(&format!("param    {k} = {v}"));
    }
    for o in &report.outs {
        let state = match (&o.hash, o.exists) {
            (_, false) => "missing".to_owned(),
            (Some(h), true) => h[..12.min(h.len())].to_owned(),
            (None, true) => "not recorded".to_owned(),
        };
        printer.result(&format!("out      {} ({state})", o.path));
    }
    for (m, v) in &report.metrics {
        printer.result(&format!("metrics  {m}: {v}"));
    }
    match &report.last_run {
        Some(r) => printer.result(&format!(
            "last run {} at {} ({:.1}s){}",
            r.status,
            r.started,
            r.duration_ms as f64 / 1000.0,
            r.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
        None => printer.result("last run never (in this workspace)"),
    }
    printer.result(&format!("log      {}", report.log.display()));
    Ok(())
}
