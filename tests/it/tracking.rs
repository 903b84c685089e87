//! Tracking against a real MLflow server (PyPI `mlflow`, in a venv in the user cache;
//! SQLite backend, `--serve-artifacts`): what `pipe run` sends is read back through the
//! REST API. A run made while the server is down waits in the outbox and `pipe runs sync`
//! sends it exactly once; cached stages add no runs; tune trials nest under their stage;
//! the quickstart's adapter becomes a registered version with the `champion` alias, and
//! `pipe model pull` brings back the same bytes.

use crate::support::Ws;
use pipe_engine::tracking::client::Client;
use pipe_engine::tracking::multipart::Policy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MLFLOW: &str = "3.17.2";

/// A running `mlflow server` (or another server a test starts), stopped on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) uri: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server runs uvicorn workers in its process group.
        let _ =
            pipe_engine::process::signal_group(self.child.id(), pipe_engine::process::Signal::Kill);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(port: u16) -> Server {
    let python = crate::python::venv(&format!("mlflow-{MLFLOW}"), &[("mlflow", MLFLOW)], &[]);
    start_server_with(&python, port, None, &[])
}

/// An `mlflow server` run by `python`, storing artifacts in `destination` (a folder of
/// its own when `None`), with `env` added to its environment.
pub(crate) fn start_server_with(
    python: &std::path::Path,
    port: u16,
    destination: Option<&str>,
    env: &[(&str, &str)],
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:///{}", dir.path().join("mlflow.db").display());
    let destination = destination.map_or_else(
        || dir.path().join("artifacts").into_os_string(),
        std::ffi::OsString::from,
    );
    let mut cmd = Command::new(python);
    cmd.envs(env.iter().copied());
    cmd.args([
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        &db,
        "--serve-artifacts",
    ])
    .arg("--artifacts-destination")
    .arg(destination)
    .args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--workers",
        "1",
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("start mlflow server");
    let uri = format!("http://127.0.0.1:{port}");
    let server = Server {
        child,
        uri,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Client::new(&server.uri)
                .without_retries()
                .model_versions("probe")
                .is_ok();
        if up {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "mlflow server did not start: {}",
            std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every run of `experiment`, by the `pipe.level` tag, as `(info, tags)`.
pub(crate) fn runs(
    client: &Client,
    experiment: &str,
) -> Vec<(Value, BTreeMap<String, String>, Value)> {
    client
        .search_runs(experiment, "")
        .unwrap()
        .into_iter()
        .map(|r| {
            let tags = r["data"]["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap().to_owned(),
                        t["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (r["info"].clone(), tags, r["data"].clone())
        })
        .collect()
}

pub(crate) fn level<'a>(
    all: &'a [(Value, BTreeMap<String, String>, Value)],
    level: &str,
) -> Vec<&'a (Value, BTreeMap<String, String>, Value)> {
    all.iter()
        .filter(|r| r.1.get("pipe.level").map(String::as_str) == Some(level))
        .collect()
}

const OBJECTIVE: &str = r#"
import json, os
p = json.load(open(os.environ["PIPE_TRIAL_PARAMS"]))
value = (p["x"] - 0.3) ** 2
for s in range(1, 4):
    with open(os.path.join(os.environ["PIPE_TRIAL_DIR"], "intermediate.jsonl"), "a") as f:
        f.write(json.dumps({"step": s, "value": value + 1.0 / s}) + "\n")
json.dump({"loss": value}, open(os.path.join(os.environ["PIPE_TRIAL_DIR"], "metrics.json"), "w"))
"#;

fn pipeline(port: u16) -> String {
    format!(
        r#"name: demo
tracking: {{mlflow: "http://127.0.0.1:{port}", register: false}}
stages:
  make:
    cmd: >-
      mkdir -p out && echo '{{"score": 0.75, "nested": {{"n": 3}}}}' > out/m.json && echo data > out/d.txt
    outs: [out/d.txt]
    metrics: [out/m.json]
  search:
    kind: tune
    with:
      out: tune/x
      space:
        x: {{float: [0.0, 1.0]}}
      objective: {{metric: loss, mode: min}}
      budget: {{n_trials: 4}}
      seed: 1
      trial:
        cmd: python3 objective.py
        deps: [objective.py]
"#
    )
}

#[test]
fn a_run_made_while_mlflow_is_down_is_sent_once_by_sync_and_cached_runs_add_no_stage_runs() {
    let port = free_port();
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE).pipeline(&pipeline(port));
    let first = ws.run_ok(&[]);
    assert!(
        first.stderr.contains("outbox"),
        "a dead server is reported, not fatal: {}",
        first.stderr
    );

    let server = start_server(port);
    ws.pipe().args(["runs", "sync"]).assert().success();
    let client = Client::new(&server.uri);
    let experiment = client.experiment_id("demo").unwrap();
    let all = runs(&client, &experiment);
    let parents = level(&all, "run");
    assert_eq!(parents.len(), 1, "one parent run per pipe run");
    let parent_id = parents[0].0["run_id"].as_str().unwrap();
    assert_eq!(parents[0].0["status"], "FINISHED");
    let stages = level(&all, "stage");
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s.0["run_name"].as_str().unwrap())
        .collect();
    assert_eq!(stages.len(), 2, "{names:?}");
    for s in &stages {
        assert_eq!(s.1["mlflow.parentRunId"], parent_id);
        assert!(s.1.contains_key("pipe.fingerprint") && s.1.contains_key("pipe.host.chip"));
    }
    let make = stages.iter().find(|s| s.0["run_name"] == "make").unwrap();
    let metrics: BTreeMap<&str, f64> = make.2["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        metrics,
        BTreeMap::from([("score", 0.75), ("nested.n", 3.0)])
    );
    // The metrics file is an artifact with the local bytes.
    let make_uri = make.0["artifact_uri"].as_str().unwrap();
    let got = ws.path("downloaded.json");
    client.download(make_uri, "m.json", &got).unwrap();
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(ws.path("out/m.json")).unwrap()
    );
    // MLflow 3's UI opens the experiment as model training (a runs table), not GenAI.
    assert_eq!(
        client.experiment_tags("demo").unwrap()["mlflow.experimentKind"],
        "custom_model_development"
    );
    // A store that takes no parts (this server's local folder) gets a large file in one PUT.
    let big = ws.path("big.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &bytes).unwrap();
    Client::new(&server.uri)
        .with_multipart(Policy {
            min_bytes: 1,
            part_bytes: 100_000,
        })
        .upload(make_uri, "extra/big.bin", &big)
        .unwrap();
    client
        .download(make_uri, "extra/big.bin", &ws.path("big.back"))
        .unwrap();
    assert_eq!(std::fs::read(ws.path("big.back")).unwrap(), bytes);

    // Trials nest under the tune stage's run, with their intermediate values as steps.
    let search = stages.iter().find(|s| s.0["run_name"] == "search").unwrap();
    let search_params: Vec<&str> = search.2["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert!(
        search_params.contains(&"budget.n_trials"),
        "{search_params:?}"
    );
    let trials = level(&all, "trial");
    assert_eq!(trials.len(), 4);
    for t in &trials {
        assert_eq!(
            t.1["mlflow.parentRunId"],
            search.0["run_id"].as_str().unwrap()
        );
        assert_eq!(t.0["status"], "FINISHED");
        let history = client
            .metric_history(t.0["run_id"].as_str().unwrap(), "objective")
            .unwrap();
        let steps: Vec<u64> = history
            .iter()
            .map(|m| m["step"].as_u64().unwrap())
            .collect();
        assert!(steps.contains(&1) && steps.contains(&3), "{steps:?}");
    }

    // Nothing is sent twice.
    let again = ws.pipe().args(["runs", "sync"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to send"));
    assert_eq!(runs(&client, &experiment).len(), all.len());

    // A cached run is a parent run that says so, with no stage runs.
    let cached = ws.run_ok(&[]);
    assert!(cached.ran().is_empty());
    let after = runs(&client, &experiment);
    assert_eq!(level(&after, "run").len(), 2);
    assert_eq!(level(&after, "stage").len(), 2);
    assert_eq!(level(&after, "trial").len(), 4);
    let newest = level(&after, "run")
        .into_iter()
        .find(|r| r.0["run_id"] != parent_id)
        .unwrap();
    assert_eq!(newest.1["pipe.stage.make"], "cached");
    assert_eq!(
        newest.1["pipe.stage.make.mlflow_run"],
        make.0["run_id"].as_str().unwrap()
    );
}

#[test]
fn the_tracked_quickstart_registers_its_adapter_as_champion_and_pull_brings_it_back() {
    let server = start_server(free_port());
    let ws = Ws::new();
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/quickstart.yaml"
    ))
    .unwrap();
    ws.file("pipelines/quickstart.yaml", &yaml);
    let run_small = || {
        ws.pipe()
            .env("MLFLOW_TRACKING_URI", &server.uri)
            .args([
                "run",
                "pipelines/quickstart.yaml",
                "--set",
                "train.iters=4",
                "--set",
                "eval.examples=4",
            ])
            .output()
            .unwrap()
    };
    let out = run_small();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tracked on MLflow"), "{stderr}");

    let client = Client::new(&server.uri);
    let experiment = client.experiment_id("quickstart").unwrap();
    let all = runs(&client, &experiment);
    let stages: Vec<&str> = level(&all, "stage")
        .iter()
        .map(|s| s.0["run_name"].as_str().unwrap())
        .collect();
    for s in [
        "fetch", "ingest", "version", "tokenize", "train", "evaluate", "compare", "report",
    ] {
        assert!(stages.contains(&s), "no run for {s}: {stages:?}");
    }
    let train = level(&all, "stage")
        .into_iter()
        .find(|s| s.0["run_name"] == "train")
        .unwrap();
    let train_id = train.0["run_id"].as_str().unwrap();
    let loss = client.metric_history(train_id, "loss").unwrap();
    assert_eq!(loss.len(), 4, "one loss point per step");
    assert!(train.1.contains_key("pipe.data_version"));
    assert_eq!(train.1["pipe.method"], "lora");

    let champion = client.version_by_alias("quickstart", "champion").unwrap();
    let listed = ws
        .pipe()
        .env("MLFLOW_TRACKING_URI", &server.uri)
        .args(["model", "versions", "quickstart"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&format!("v{} @champion", champion.version)),
        "{listed}"
    );
    assert_eq!(champion.run_id, train_id);
    assert_eq!(champion.tag("pipe.rank"), Some("8"));

    let pulled = ws
        .pipe()
        .env("MLFLOW_TRACKING_URI", &server.uri)
        .env("PIPE_CACHE_DIR", ws.path("user-cache"))
        .args(["model", "pull", "quickstart@champion"])
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&pulled.stdout).trim());
    for file in ["adapters.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(ws.path("runs/quickstart/lora").join(file)).unwrap(),
            "{file} differs after the round trip"
        );
    }

    // A second, cached run registers nothing new.
    let again = run_small();
    assert!(again.status.success());
    assert_eq!(client.model_versions("quickstart").unwrap().len(), 1);
    assert_eq!(
        level(&runs(&client, &experiment), "stage").len(),
        stages.len()
    );

    // A deploy stage of the registry's champion releases exactly that adapter.
    ws.file(
        "pipelines/deploy-champion.yaml",
        "name: deploy-champion\nstages:\n  deploy:\n    kind: deploy\n    with: \
         {registry: quickstart@champion, model: assistant, mode: config, out: runs/release}\n",
    );
    let deployed = ws
        .pipe()
        .env("MLFLOW_TRACKING_URI", &server.uri)
        .env("PIPE_CACHE_DIR", ws.path("user-cache"))
        .args(["run", "pipelines/deploy-champion.yaml"])
        .output()
        .unwrap();
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let record: Value = serde_json::from_str(&ws.read("runs/release/deploy.json")).unwrap();
    let source = record["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("version {}", champion.version)),
        "{source}"
    );
    let release = ws
        .path("runs/release/adapters")
        .join(record["version"].as_str().unwrap());
    for file in ["adapters.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(release.join(file)).unwrap(),
            std::fs::read(ws.path("runs/quickstart/lora").join(file)).unwrap(),
            "the released {file} is not the champion's"
        );
    }
}
