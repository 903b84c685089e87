//! The `monitor` kind and the nightly loop on the real model (SmolLM2-135M-Instruct)
//! against a real MLflow registry: a champion trained by the quickstart, nights with
//! and without drift, the retraining a regression starts, the candidate's promotion by
//! the monitor's rules, and a deploy of `registry: NAME@ALIAS` in the same run as the
//! stage that moves the alias.

use crate::support::Ws;
use crate::tracking::{free_port, start_server_with};
use pipe_engine::tracking::client::Client;
use serde_json::Value;

fn mlflow() -> crate::tracking::Server {
    let python = crate::python::venv("mlflow-3.17.2", &[("mlflow", "3.17.2")], &[]);
    start_server_with(&python, free_port(), None, &[])
}

fn shipped(ws: &Ws, rel: &str) {
    let text = std::fs::read_to_string(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    ws.file(rel, &text);
}

/// The quickstart with a deploy of the registry's champion in the same run, after its
/// compare stage (`needs`): the deploy must release this run's adapter, not the champion
/// the previous run left (the alias moves in the background sync; a stage reading the
/// registry waits for it).
#[test]
fn a_deploy_of_the_alias_in_the_same_run_gets_the_new_champion() {
    let server = mlflow();
    let ws = Ws::new();
    shipped(&ws, "pipelines/quickstart.yaml");
    let mut yaml = ws.read("pipelines/quickstart.yaml");
    yaml.push_str(
        "\n  deploy:\n    kind: deploy\n    needs: [compare]\n    with: {registry: quickstart@champion, \
         model: assistant, mode: config, out: runs/release}\n",
    );
    ws.file("pipelines/quickstart.yaml", &yaml);
    let client = Client::new(&server.uri);
    for iters in ["3", "4"] {
        let out = ws
            .pipe()
            .env("MLFLOW_TRACKING_URI", &server.uri)
            .args(["run", "pipelines/quickstart.yaml", "--set"])
            .arg(format!("train.iters={iters}"))
            .args(["--set", "eval.examples=4"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let champion = client.version_by_alias("quickstart", "champion").unwrap();
        let record: Value = serde_json::from_str(&ws.read("runs/release/deploy.json")).unwrap();
        let source = record["source"].as_str().unwrap();
        assert!(
            source.contains(&format!("(version {} of", champion.version)),
            "iters={iters}: deployed {source}, champion is version {}",
            champion.version
        );
        let release = ws
            .path("runs/release/adapters")
            .join(record["version"].as_str().unwrap());
        assert_eq!(
            std::fs::read(release.join("adapters.safetensors")).unwrap(),
            std::fs::read(ws.path("runs/quickstart/lora/adapters.safetensors")).unwrap(),
            "iters={iters}: the released adapter is not this run's"
        );
    }
    assert_eq!(client.model_versions("quickstart").unwrap().len(), 2);
}

fn monitor_json(ws: &Ws) -> Value {
    serde_json::from_str(&ws.read("runs/nightly/monitor/monitor.json")).unwrap()
}

fn history_lines(ws: &Ws) -> usize {
    ws.read("monitor/nightly.jsonl").lines().count()
}

/// The loop: a champion from the quickstart; a first night (the baseline); a night
/// without drift (ok, nothing retrains; its rerun scores nothing again and reruns no
/// cached stage); then a night whose data is another AGID mapping (plural nouns
/// instead of past tenses): the monitor fires, the retraining runs on the new data, and
/// the candidate is promoted only because it beats the champion by the monitor's rules.
#[test]
fn the_nightly_loop_fires_on_drift_retrains_and_promotes() {
    let server = mlflow();
    let ws = Ws::new();
    for f in [
        "pipelines/quickstart.yaml",
        "pipelines/nightly.yaml",
        "pipelines/retrain.yaml",
        "pipelines/probes/past-tense.jsonl",
    ] {
        shipped(&ws, f);
    }
    // The nightly pipeline notifies on failure and regression (`notify.webhook_env`).
    let webhook = crate::notify::Receiver::start(&ws);
    let pipe = |args: &[&str]| {
        let out = ws
            .pipe()
            .env("MLFLOW_TRACKING_URI", &server.uri)
            .env("SLACK_WEBHOOK_URL", webhook.url("/hooks/nightly"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // With --json the failing stage's message is an event on stdout.
        assert!(out.status.success(), "pipe {args:?}: {stderr}\n{stdout}");
        (stdout, stderr)
    };
    // Small but real trainings: 30 steps for the champion; the retraining runs
    // pipelines/retrain.yaml's own recipe (60 steps) on twice the data.
    pipe(&[
        "run",
        "pipelines/quickstart.yaml",
        "--set",
        "train.iters=30",
        "--set",
        "eval.examples=20",
    ]);
    let client = Client::new(&server.uri);
    let champion = client.version_by_alias("quickstart", "champion").unwrap();
    let night = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "pipelines/nightly.yaml",
            "--json",
            "--set",
            "new_examples=40",
        ];
        args.extend(extra);
        pipe(&args)
    };

    // Night 1: the champion's first evaluation is its baseline.
    night(&[]);
    let m = monitor_json(&ws);
    assert_eq!(m["decision"]["decision"], "baseline", "{m:#}");
    let baseline = m["accuracy"].as_f64().unwrap();
    // The base model answers in sentences (0.00, README): 30 steps teach it the task.
    assert!(
        baseline > 0.5,
        "the champion should know past tenses: {m:#}"
    );
    assert_eq!(history_lines(&ws), 1);

    // Night 2, no drift (part of the same data: the test split lists verbs in the
    // table's alphabetical order, so more rows would be another stretch of the alphabet,
    // not more of the same): ok, nothing retrains.
    night(&["--set", "new_examples=30"]);
    let m = monitor_json(&ws);
    assert_eq!(m["decision"]["decision"], "ok", "{m:#}");
    assert!(m["promotion"].is_null());
    assert!(!ws.exists("runs/nightly/monitor/retrain.log"));
    assert_eq!(history_lines(&ws), 2);
    // Its rerun: nothing is scored or appended again, and only the stages that always run
    // (monitor and deploy read the registry) run; the rest is cached.
    let (stdout, _) = night(&["--set", "new_examples=30"]);
    let ran: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "stage-finish")
        .map(|e| e["stage"].as_str().unwrap().to_owned())
        .collect();
    // (the report's inputs are byte-identical, so it is cached too.)
    assert_eq!(ran, ["monitor", "deploy"], "{stdout}");
    assert_eq!(history_lines(&ws), 2);
    assert_eq!(monitor_json(&ws)["decision"]["decision"], "ok");
    assert_eq!(
        client
            .version_by_alias("quickstart", "champion")
            .unwrap()
            .version,
        champion.version
    );

    // Quiet nights send nothing.
    assert_eq!(webhook.received(), Vec::<Value>::new());

    // Night 3: the data drifted to another mapping.
    night(&[
        "--set",
        "source=agid-plural",
        "--set",
        "prompt=What is the plural of the noun '{{ input }}'? Answer with one word.",
    ]);
    let m = monitor_json(&ws);
    assert_eq!(m["decision"]["decision"], "fired", "{m:#}");
    // One regression notice reached the webhook, naming the monitor stage.
    let sent = webhook.received();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["path"], "/hooks/nightly");
    assert_eq!(sent[0]["body"]["event"], "regression", "{sent:#?}");
    assert!(
        sent[0]["body"]["text"]
            .as_str()
            .unwrap()
            .contains("found a regression in `monitor`"),
        "{sent:#?}"
    );
    assert!(m["judgement"]["regressed"].as_bool().unwrap(), "{m:#}");
    let promotion = &m["promotion"];
    assert_eq!(promotion["retrain"]["exit_code"], 0, "{m:#}");
    assert!(ws.exists("runs/retrain/lora/adapters.safetensors"));
    assert_eq!(promotion["promoted"], true, "{m:#}");
    let now = client.version_by_alias("quickstart", "champion").unwrap();
    let candidate = client.version_by_alias("quickstart", "candidate").unwrap();
    assert_eq!(now.version, candidate.version);
    assert_ne!(now.version, champion.version);
    let deployed: Value =
        serde_json::from_str(&ws.read("runs/nightly/deploy/deploy.json")).unwrap();
    assert!(
        deployed["source"]
            .as_str()
            .unwrap()
            .contains(&format!("(version {} of", now.version)),
        "{deployed:#}"
    );
    let metrics: Value =
        serde_json::from_str(&ws.read("runs/nightly/monitor/metrics.json")).unwrap();
    assert_eq!(metrics["regression"], 1);
    assert_eq!(metrics["promoted"], 1);
    let report = ws.read("reports/nightly.html");
    assert!(
        report.contains("id=\"monitoring\""),
        "no monitoring section"
    );
    assert!(report.contains("Promoted the retrained candidate"));

    // The UI's monitors page: the same history, charted, tonight's decision beside it.
    let ui = crate::ui::Ui::start(&ws, &[]);
    let (status, v) = ui.get("/api/monitors");
    assert_eq!(status, 200, "{v}");
    let monitors = v["monitors"].as_array().unwrap();
    assert_eq!(monitors.len(), 1, "{v:#}");
    let m = &monitors[0];
    assert_eq!(m["history"], "monitor/nightly.jsonl");
    assert_eq!(
        (m["pipeline"].as_str(), m["stage"].as_str()),
        (Some("nightly"), Some("monitor"))
    );
    assert_eq!(m["decision"], "fired", "{m:#}");
    let points = m["points"].as_array().unwrap();
    assert_eq!(points.len(), history_lines(&ws), "{m:#}");
    assert!(
        points.last().unwrap()["regressed"].as_bool().unwrap(),
        "{m:#}"
    );
    assert!(
        points.last().unwrap()["accuracy"].as_f64().unwrap() < baseline,
        "{m:#}"
    );
    let browser = crate::ui_browser::Browser::start();
    browser.open(&format!("{}/#/monitors", ui.base));
    let drawn = browser.wait_for(
        "the monitor chart",
        "const s = document.getElementById('monitor-chart-0'); return s ? s.dataset.points || null : null;",
        Value::is_string,
    );
    assert_eq!(drawn, points.len().to_string());
    browser.screenshots("monitors");
}
