//! `pipe export airflow`: write a pipeline as an Airflow DAG file. The engine's `airflow`
//! module renders the file; this one gathers what goes into it (absolute paths, the
//! captured environment, the schedule) and writes it.

use super::UsageError;
use super::output::Printer;
use super::workspace::WorkspaceArgs;
use pipe_engine::airflow::{self, DagFile};
use pipe_engine::schedule::{self, cron::CronExpr};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `pipe export airflow`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("when").args(["daily", "cron", "no_schedule"])))]
pub struct Args {
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// The dags folder to write `DAG_ID.py` into (created if missing), or a `.py` file.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The DAG id (default: the pipeline's name, with characters Airflow refuses as `_`).
    #[arg(long, value_name = "ID")]
    dag_id: Option<String>,
    /// Run every day at this time (HH:MM, 24-hour clock, in --timezone).
    #[arg(long, value_name = "HH:MM")]
    daily: Option<String>,
    /// Run on this cron expression: five fields or @daily, @hourly...
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// No schedule, even if `pipe schedule` has one for this pipeline: the DAG runs when triggered.
    #[arg(long)]
    no_schedule: bool,
    /// The IANA time zone cron times are read in (default: this machine's, as cron reads them).
    #[arg(long, value_name = "ZONE")]
    timezone: Option<String>,
    /// How often Airflow retries a failed task (the cache makes a retry redo only what failed).
    #[arg(long, value_name = "N", default_value_t = 1)]
    retries: u32,
    /// Print one JSON object describing the DAG written.
    #[arg(long)]
    json: bool,
}

/// One task, as `--json` reports it.
#[derive(Debug, Serialize)]
struct Task {
    task_id: String,
    stage: String,
    upstream: Vec<String>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Written {
    file: PathBuf,
    dag_id: String,
    schedule: Option<String>,
    /// `option`, `schedule NAME` or `none`.
    schedule_from: String,
    timezone: String,
    tasks: Vec<Task>,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, dag) = args.ws.load()?;
    let root = std::path::absolute(args.ws.root()?)?;
    // `pipe run` reads the pipeline path relative to the current directory, not the root.
    let pipeline_file = std::path::absolute(&args.ws.pipeline)?;
    let dag_id = match &args.dag_id {
        Some(id) if airflow::python::is_airflow_id(id) => id.clone(),
        Some(id) => {
            return Err(UsageError(format!(
                "--dag-id `{id}`: Airflow ids are up to 250 letters, digits, `_`, `-` and `.`"
            ))
            .into());
        }
        None => airflow::default_dag_id(&pipeline),
    };
    let (cron, schedule_from) = schedule_of(&args, &root, &pipeline_file)?;
    let timezone = match &args.timezone {
        Some(tz) => {
            airflow::check_timezone(tz).map_err(UsageError)?;
            tz.clone()
        }
        None => airflow::local_timezone(),
    };
    let pipe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| anyhow::anyhow!("cannot find the path of this pipe binary: {e}"))?;
    let file = DagFile {
        dag_id: dag_id.clone(),
        pipe,
        root,
        pipeline_file,
        sets: args.ws.sets.clone(),
        env: schedule::capture_env(),
        schedule: cron.clone(),
        timezone: timezone.clone(),
        retries: args.retries,
    };
    let text = airflow::render(&file, &pipeline, &dag).map_err(|e| UsageError(e.to_string()))?;
    let out = if args.out.extension().is_some_and(|e| e == "py") {
        args.out.clone()
    } else {
        args.out.join(airflow::file_name(&dag_id))
    };
    pipe_engine::atomic_write::write_atomic(&out, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let ids = airflow::task_ids(&pipeline);
    if args.json {
        let tasks = dag
            .order()
            .iter()
            .map(|&i| Task {
                task_id: ids[i].clone(),
                stage: pipeline.stages[i].name.clone(),
                upstream: dag.upstream(i).map(|(u, _)| ids[u].clone()).collect(),
            })
            .collect();
        return printer.json(&Written {
            file: out,
            dag_id,
            schedule: cron,
            schedule_from,
            timezone,
            tasks,
        });
    }
    let when = match &cron {
        Some(c) => format!("schedule `{c}` ({timezone}, from {schedule_from})"),
        None => "no schedule (runs when triggered)".into(),
    };
    printer.result(&format!(
        "wrote {}: DAG `{dag_id}`, {} tasks, {when}",
        out.display(),
        pipeline.stages.len()
    ));
    Ok(())
}

/// The cron expression the DAG runs on, and where it came from: the options, else the
/// schedule `pipe schedule add` made for this pipeline with the same `--set` values.
fn schedule_of(
    args: &Args,
    root: &Path,
    pipeline_file: &Path,
) -> anyhow::Result<(Option<String>, String)> {
    let given = match (&args.daily, &args.cron) {
        (Some(d), _) => Some(CronExpr::daily(d)),
        (None, Some(c)) => Some(CronExpr::parse(c)),
        (None, None) => None,
    };
    if let Some(expr) = given {
        let expr = expr.map_err(UsageError)?;
        return Ok((Some(expr.as_str().to_owned()), "option".into()));
    }
    if args.no_schedule {
        return Ok((None, "none".into()));
    }
    let found = schedule::for_pipeline(root, pipeline_file, &args.ws.sets);
    let mut crons: Vec<&str> = found.iter().map(|s| s.cron.as_str()).collect();
    crons.sort_unstable();
    crons.dedup();
    match (found.first(), crons.len()) {
        (None, _) => Ok((None, "none".into())),
        (Some(s), 1) => Ok((Some(s.cron.clone()), format!("schedule {}", s.name))),
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|s| format!("{} (`{}`)", s.name, s.cron))
                .collect();
            Err(UsageError(format!(
                "several schedules run this pipeline: {}\n  hint: pick one with --cron EXPR, or pass --no-schedule",
                names.join(", ")
            ))
            .into())
        }
    }
}
