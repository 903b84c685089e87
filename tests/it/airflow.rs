//! `pipe export airflow` with the real Airflow (PyPI `apache-airflow` 3.1.8 in a virtual
//! environment in the user cache; a fresh install took 104 s here): the generated DAG
//! parses with no import error, has one task per stage wired as the stage graph, carries
//! the schedule, and `airflow dags test` runs a fan-out/fan-in pipeline to success in a
//! workspace whose path holds a space and quotes, with outs byte-identical to `pipe run`'s.
//! A second DAG run runs no stage again (the cache makes retries and reruns no-ops).

use crate::python::{run, venv};
use crate::support::Ws;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PIPELINE: &str = r#"name: airflow it
stages:
  prepare:
    cmd: mkdir -p data && seq 1 40 > data/numbers.txt
    outs: [data/numbers.txt]
  square:
    matrix:
      k: [2, 3]
    cmd: awk '{ print $1 ^ {{ matrix.k }} }' data/numbers.txt > data/pow{{ matrix.k }}.txt
    deps: [data/numbers.txt]
    outs: ["data/pow{{ matrix.k }}.txt"]
  count:
    cmd: wc -l < data/numbers.txt > data/count.txt
    deps: [data/numbers.txt]
    outs: [data/count.txt]
  total:
    cmd: cat data/pow2.txt data/pow3.txt data/count.txt | awk '{ s += $1 } END { print s }' > total.txt
    deps: [data/pow2.txt, data/pow3.txt, data/count.txt]
    outs: [total.txt]
"#;

/// The outs both runs must agree on.
const OUTS: [&str; 5] = [
    "data/numbers.txt",
    "data/pow2.txt",
    "data/pow3.txt",
    "data/count.txt",
    "total.txt",
];

/// An Airflow installation with its own home (SQLite database, config, logs) and dags
/// folder, run as `python -m airflow` (a venv's console scripts name the folder it was
/// built in, which the cache renames).
struct Airflow {
    python: PathBuf,
    home: tempfile::TempDir,
}

impl Airflow {
    fn new() -> Self {
        let python = venv("airflow-3.1.8", &[("apache-airflow", "3.1.8")], &[]);
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("dags")).unwrap();
        let airflow = Self { python, home };
        airflow.ok(&["db", "migrate"]);
        airflow
    }

    fn dags(&self) -> PathBuf {
        self.home.path().join("dags")
    }

    /// The environment's Python, set up for this Airflow.
    fn python(&self) -> Command {
        let mut c = Command::new(&self.python);
        c.current_dir(self.home.path())
            .env("AIRFLOW_HOME", self.home.path())
            .env("AIRFLOW__CORE__DAGS_FOLDER", self.dags())
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("NO_COLOR", "1")
            .env("TERM", "dumb");
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.python();
        c.args(["-m", "airflow"]).args(args);
        c
    }

    /// Runs `airflow ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        run(
            &mut self.command(args),
            &format!("airflow {}", args.join(" ")),
        )
    }

    /// The JSON array an `-o json` listing printed (log lines around it are skipped).
    fn json_list(&self, args: &[&str]) -> Vec<Value> {
        let out = self.ok(args);
        let line = out
            .lines()
            .rfind(|l| l.starts_with('['))
            .unwrap_or_else(|| panic!("no JSON list from airflow {args:?}:\n{out}"));
        serde_json::from_str::<Vec<Value>>(line).unwrap()
    }
}

/// For each stage, how many runs of the workspace's history ran it (not cached), and how
/// many runs there were.
fn ran_per_stage(root: &Path) -> (BTreeMap<String, usize>, usize) {
    let mut ran = BTreeMap::new();
    let mut runs = 0;
    for entry in std::fs::read_dir(root.join("runs/history")).unwrap() {
        let record = entry.unwrap().path().join("run.json");
        let Ok(text) = std::fs::read_to_string(&record) else {
            continue;
        };
        runs += 1;
        let record: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["status"], "succeeded", "{record:#}");
        for stage in record["stages"].as_array().unwrap() {
            let n = ran
                .entry(stage["name"].as_str().unwrap().to_owned())
                .or_insert(0);
            if stage["status"] == "ran" {
                *n += 1;
            }
        }
    }
    (ran, runs)
}

#[test]
fn exported_dag_parses_and_runs_the_pipeline_in_airflow_as_pipe_run_does() {
    let airflow = Airflow::new();
    let ws = Ws::new();
    // Tasks get the root and pipeline as Python literals and pipe as an argument list, so
    // a space, quotes and Jinja braces in the path reach pipe unchanged.
    let root = ws.path("work it's \"odd\" {{ ds }}");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("pipe.yaml"), PIPELINE).unwrap();

    let out = ws
        .pipe()
        .args(["export", "airflow"])
        .arg(root.join("pipe.yaml"))
        .arg("--root")
        .arg(&root)
        .arg("--out")
        .arg(airflow.dags())
        .args(["--daily", "02:30", "--timezone", "Europe/Berlin", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(written["dag_id"], "airflow_it");
    assert_eq!(written["schedule"], "30 2 * * *");
    let file = airflow.dags().join("airflow_it.py");
    assert_eq!(written["file"], file.to_str().unwrap());
    // Exporting again gives the same bytes.
    let first = std::fs::read(&file).unwrap();
    ws.pipe()
        .args(["export", "airflow"])
        .arg(root.join("pipe.yaml"))
        .arg("--root")
        .arg(&root)
        .arg("--out")
        .arg(airflow.dags())
        .args(["--daily", "02:30", "--timezone", "Europe/Berlin"])
        .assert()
        .success();
    assert_eq!(std::fs::read(&file).unwrap(), first);

    // Airflow parses the folder into its database: no import error, the DAG listed.
    airflow.ok(&["dags", "reserialize"]);
    let errors = airflow.json_list(&["dags", "list-import-errors", "-o", "json"]);
    assert!(errors.is_empty(), "import errors: {errors:#?}");
    let dags = airflow.json_list(&["dags", "list", "-o", "json"]);
    assert!(
        dags.iter().any(|d| d["dag_id"] == "airflow_it"),
        "not listed: {dags:#?}"
    );

    // As Airflow loaded it: the tasks' upstreams are the stage graph's edges, and the
    // schedule is the cron line in the given zone.
    let shape = run(airflow.python().args(["-c", SHAPE]), "DAG shape");
    let shape: Value = serde_json::from_str(shape.lines().last().unwrap()).unwrap();
    assert_eq!(
        shape,
        serde_json::json!({
            "schedule": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "tasks": {
                "prepare": [],
                "square_k_2": ["prepare"],
                "square_k_3": ["prepare"],
                "count": ["prepare"],
                "total": ["count", "square_k_2", "square_k_3"],
            },
        })
    );

    // One DAG run: every task runs its stage, in the graph's order.
    airflow.ok(&["dags", "test", "airflow_it"]);
    let reference = Ws::new();
    reference.pipeline(PIPELINE);
    reference.run_ok(&[]);
    for out in OUTS {
        assert_eq!(
            std::fs::read(root.join(out)).unwrap(),
            std::fs::read(reference.path(out)).unwrap(),
            "{out} differs from pipe run's"
        );
    }
    let (ran, runs) = ran_per_stage(&root);
    assert_eq!(runs, 5, "one pipe run per task");
    let once: BTreeMap<String, usize> = ["prepare", "square@k=2", "square@k=3", "count", "total"]
        .iter()
        .map(|s| (s.to_string(), 1))
        .collect();
    assert_eq!(ran, once);

    // A second DAG run (as a retry would) succeeds and runs nothing again.
    airflow.ok(&["dags", "test", "airflow_it"]);
    let (ran, runs) = ran_per_stage(&root);
    assert_eq!(runs, 10);
    assert_eq!(ran, once, "a stage ran again");
}

/// Prints the exported DAG as Airflow's own loader sees it (`DagBag` of the dags folder).
const SHAPE: &str = r#"
import json
from airflow.models.dagbag import DagBag
bag = DagBag(include_examples=False)
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("airflow_it")
print(json.dumps({
    "schedule": dag.timetable.summary,
    "timezone": str(dag.timezone),
    "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
}))
"#;
