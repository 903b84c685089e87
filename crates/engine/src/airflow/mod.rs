//! Airflow DAG files for pipelines (`pipe export airflow`): one Airflow task per stage,
//! each running `pipe run PIPELINE -s STAGE` in the workspace, wired as the stage graph
//! ([`crate::dag`]) is, with the pipeline's schedule.
//!
//! Why a task shells out to `pipe run` rather than doing the stage's work itself: pipe's
//! content cache decides whether a stage is stale, so a retried or re-triggered task whose
//! inputs have not changed restores or skips instead of redoing the work, and Airflow's
//! retries are safe. Parallel tasks of one DAG run wait for each other on the workspace
//! lock, as two `pipe run`s do.
//!
//! The file is generated, never edited: the same inputs give the same bytes (tasks in the
//! graph's order, the environment sorted, no timestamps), so it can be committed and
//! diffed. Everything that varies (paths, stage names, `--set` values, the environment) is
//! a Python string literal ([`python::str_literal`]); the task runs `pipe` from an argument
//! list, not a shell line, and the operator has no Jinja template fields, so no path or
//! value can be reinterpreted.

pub mod python;

use crate::dag::Dag;
use crate::spec::Pipeline;
use python::{str_list, str_literal};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What goes into a DAG file besides the pipeline's stages and graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagFile {
    /// The DAG's id (an Airflow id: see [`python::is_airflow_id`]).
    pub dag_id: String,
    /// The absolute path of the `pipe` binary the tasks run.
    pub pipe: PathBuf,
    /// The absolute workspace root (tasks run there, with `--root`).
    pub root: PathBuf,
    /// The absolute pipeline file.
    pub pipeline_file: PathBuf,
    /// `--set` overrides every task passes.
    pub sets: Vec<String>,
    /// The environment the tasks run `pipe` with (as `pipe schedule` captures it:
    /// [`crate::schedule::capture_env`]), in place of the worker's.
    pub env: BTreeMap<String, String>,
    /// The five cron fields, or `None` for a DAG that runs only when triggered.
    pub schedule: Option<String>,
    /// The IANA time zone the cron fields are read in (cron reads them in local time).
    pub timezone: String,
    /// How often Airflow retries a failed task.
    pub retries: u32,
}

/// Why a DAG file cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path is not UTF-8: a DAG file is text, and Python would see another path.
    #[error("{what} {} is not valid UTF-8; Airflow DAG files hold paths as text", path.display())]
    NotUtf8 {
        /// Which path (`the workspace root`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
}

/// The DAG's file name in the dags folder.
pub fn file_name(dag_id: &str) -> String {
    format!("{dag_id}.py")
}

/// The default DAG id of a pipeline: its name as an Airflow id.
pub fn default_dag_id(pipeline: &Pipeline) -> String {
    python::airflow_id(&pipeline.name, "pipe")
}

/// One Airflow task id per stage (index = stage index): the stage name as an Airflow id,
/// made unique with `_2`, `_3`... when two names map to the same id.
pub fn task_ids(pipeline: &Pipeline) -> Vec<String> {
    let mut taken = BTreeSet::new();
    pipeline
        .stages
        .iter()
        .map(|s| {
            let base = python::airflow_id(&s.name, "stage");
            let mut id = base.clone();
            let mut n = 2;
            while !taken.insert(id.clone()) {
                id = format!("{base}_{n}");
                n += 1;
            }
            id
        })
        .collect()
}

fn text<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, Error> {
    path.to_str().ok_or_else(|| Error::NotUtf8 {
        what,
        path: path.to_owned(),
    })
}

/// The DAG file for `pipeline`, whose stage graph is `dag`.
pub fn render(file: &DagFile, pipeline: &Pipeline, dag: &Dag) -> Result<String, Error> {
    let pipe = text("the pipe binary", &file.pipe)?;
    let root = text("the workspace root", &file.root)?;
    let pipeline_file = text("the pipeline file", &file.pipeline_file)?;
    let ids = task_ids(pipeline);
    let mut s = String::new();
    s.push_str(HEADER);
    let _ = writeln!(
        s,
        "\"\"\"Airflow DAG of the pipe pipeline {}: one task per stage.\"\"\"",
        // An escaped literal never holds `"""`, so it cannot end the docstring.
        str_literal(&pipeline.name),
    );
    s.push_str(IMPORTS);
    let _ = writeln!(s, "PIPE = {}", str_literal(pipe));
    let _ = writeln!(s, "ROOT = {}", str_literal(root));
    let _ = writeln!(s, "PIPELINE = {}", str_literal(pipeline_file));
    let _ = writeln!(s, "SETS = {}", str_list(&file.sets, ""));
    s.push_str(
        "# The environment pipe runs with, captured at export as `pipe schedule` captures it\n\
         # (no credentials): a worker's own environment is not the one the pipeline was set up in.\n",
    );
    if file.env.is_empty() {
        s.push_str("ENV = {}\n");
    } else {
        s.push_str("ENV = {\n");
        for (k, v) in &file.env {
            let _ = writeln!(s, "    {}: {},", str_literal(k), str_literal(v));
        }
        s.push_str("}\n");
    }
    s.push_str(OPERATOR);
    let schedule = file
        .schedule
        .as_deref()
        .map_or_else(|| "None".to_owned(), str_literal);
    let _ = write!(
        s,
        "\n\nwith DAG(\n    dag_id={dag_id},\n    description={description},\n    schedule={schedule},\n    \
         start_date=pendulum.datetime(2024, 1, 1, tz={tz}),\n    catchup=False,\n    \
         max_active_runs=1,\n    default_args={{\"retries\": {retries}, \"retry_delay\": datetime.timedelta(minutes=5)}},\n    \
         tags=[\"pipe\"],\n) as dag:\n",
        dag_id = str_literal(&file.dag_id),
        description = str_literal(&format!("pipe pipeline {}", pipeline.name)),
        tz = str_literal(&file.timezone),
        retries = file.retries,
    );
    for &i in dag.order() {
        let _ = writeln!(
            s,
            "    t{i} = PipeStage(task_id={}, stage={})",
            str_literal(&ids[i]),
            str_literal(&pipeline.stages[i].name)
        );
    }
    let mut wired = false;
    for &i in dag.order() {
        let ups: Vec<String> = dag.upstream(i).map(|(u, _)| format!("t{u}")).collect();
        if ups.is_empty() {
            continue;
        }
        if !wired {
            s.push_str(
                "\n    # The stage graph: each task waits for the stages whose outs it reads.\n",
            );
            wired = true;
        }
        let _ = match ups.as_slice() {
            [one] => writeln!(s, "    {one} >> t{i}"),
            many => writeln!(s, "    [{}] >> t{i}", many.join(", ")),
        };
    }
    Ok(s)
}

const HEADER: &str = "\
# Generated by `pipe export airflow`; do not edit. Regenerate it after changing the
# pipeline's stages, and copy it into Airflow's dags folder.
";

const IMPORTS: &str = r#"
import datetime
import shlex
import signal
import subprocess

import pendulum
from airflow.sdk import DAG, BaseOperator

"#;

const OPERATOR: &str = r##"

class PipeStage(BaseOperator):
    """Runs one stage: `pipe run PIPELINE -s STAGE` in the workspace.

    pipe's content cache decides whether the stage is stale, so a retry of a stage that
    already finished restores or skips it instead of redoing the work. Tasks that Airflow
    runs at once wait for each other on the workspace lock. pipe's output goes to the
    task's log.
    """

    # Paths, stage names and --set values are passed as they are, never as templates.
    template_fields = ()
    ui_color = "#e3ecfa"

    def __init__(self, *, stage, **kwargs):
        super().__init__(**kwargs)
        self.stage = stage
        self._process = None

    def execute(self, context):
        argv = [PIPE, "run", PIPELINE, "--root", ROOT, "-s", self.stage]
        for value in SETS:
            argv += ["--set", value]
        self.log.info("running %s", shlex.join(argv))
        self._process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for line in self._process.stdout:
            self.log.info("%s", line.rstrip("\n"))
        code = self._process.wait()
        if code != 0:
            raise RuntimeError(f"pipe run -s {self.stage} exited with status {code}")

    def on_kill(self):
        # SIGTERM lets pipe stop its stage's processes and record the run as interrupted.
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
"##;

/// The IANA name of this machine's time zone, which cron reads schedules in: `TZ` when it
/// names a zone in the system database, else the zone `/etc/localtime` links to, else
/// Debian's `/etc/timezone`, else `UTC`.
pub fn local_timezone() -> String {
    let zoneinfo = Path::new("/usr/share/zoneinfo");
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':');
        if is_zone_name(tz) && zoneinfo.join(tz).is_file() {
            return tz.to_owned();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime")
        && let Some(zone) = target
            .to_str()
            .and_then(|t| t.split_once("zoneinfo/"))
            .map(|(_, z)| z)
        && is_zone_name(zone)
    {
        return zone.to_owned();
    }
    if let Ok(text) = std::fs::read_to_string("/etc/timezone")
        && is_zone_name(text.trim())
    {
        return text.trim().to_owned();
    }
    "UTC".to_owned()
}

/// Checks a time zone a user names (`--timezone`): an IANA name in the system's zone
/// database, as Airflow (pendulum) expects.
pub fn check_timezone(name: &str) -> Result<(), String> {
    if is_zone_name(name) && Path::new("/usr/share/zoneinfo").join(name).is_file() {
        Ok(())
    } else {
        Err(format!(
            "unknown time zone `{name}`: give an IANA name such as `Europe/Berlin` or `UTC` (see /usr/share/zoneinfo)"
        ))
    }
}

/// Whether `name` looks like an IANA zone name (`Europe/Berlin`, `UTC`), not a path or a
/// POSIX rule.
fn is_zone_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

#[cfg(test)]
mod tests;
