//! `pipe status`: which stages are stale and why, without running anything.

use super::output::{Printer, Verbosity};
use super::workspace::{WorkspaceArgs, select};
use pipe_engine::cache::Store;
use pipe_engine::exec::{describe, plan};

/// Arguments of `pipe status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe status pipelines/train.yaml\n  pipe status --json | jq '.stages[] | select(.state != \"up-to-date\")'"
)]
pub struct Args {
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// Only these stages (repeatable).
    #[arg(short, long = "stage", value_name = "STAGE")]
    stages: Vec<String>,
    /// Print one JSON object: `{"pipeline": ..., "stages": [{"stage", "state", "reasons"}]}`.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    pipeline: &'a str,
    stages: Vec<plan::StageStatus>,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, dag) = args.ws.load()?;
    let selected = select(&pipeline, &dag, &args.stages, false)?;
    let store = Store::open(&pipeline.root);
    let stages = plan::status(&pipeline, &dag, &store, false, selected.as_ref())?;
    if args.json {
        return printer.json(&Report {
            pipeline: &pipeline.name,
            stages,
        });
    }
    let stale = stages.iter().filter(|s| !s.reasons.is_empty()).count();
    for s in &stages {
        if s.reasons.is_empty() {
            if printer.verbosity() >= Verbosity::Verbose {
                printer.result(&format!("{}: {}", s.stage, s.state));
            }
            continue;
        }
        let label = if s.state == "restorable" {
            printer.paint("stale (restorable from the run cache)", "33")
        } else {
            printer.paint("stale", "33")
        };
        printer.result(&format!("{}: {label}: {}", s.stage, describe(&s.reasons)));
    }
    if stale == 0 {
        printer.status(&format!(
            "{}: all {} stages up to date",
            pipeline.name,
            stages.len()
        ));
    }
    Ok(())
}
