//! The run history through the CLI: every `pipe run` leaves a record; `pipe runs list`,
//! `show`, `diff` (across two pipelines) and `compare --html` read it; an up-to-date rerun
//! names the run that produced its outs.

use crate::support::Ws;
use serde_json::Value;

const FIRST: &str = r#"name: baseline
params: {lr: 0.1}
stages:
  train:
    cmd: >-
      mkdir -p out && echo '{"loss": 0.5, "exact_match": 0.6}' > out/a.json
    params: [lr]
    outs: [out/a.json]
    metrics: [out/a.json]
"#;

const SECOND: &str = r#"name: sweep
params: {lr: 0.3}
stages:
  train:
    cmd: >-
      mkdir -p out2 && echo '{"loss": 0.25, "exact_match": 0.9}' > out2/a.json
    params: [lr]
    outs: [out2/a.json]
    metrics: [out2/a.json]
"#;

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn runs_are_listed_shown_diffed_across_pipelines_and_compared() {
    let ws = Ws::new();
    ws.file("first.yaml", FIRST).file("second.yaml", SECOND);
    ws.run_ok(&["first.yaml"]);
    ws.run_ok(&["second.yaml"]);
    ws.run_ok(&["first.yaml"]);

    let list = ws.pipe().args(["runs", "list", "--json"]).output().unwrap();
    let runs = json_lines(&list.stdout);
    assert_eq!(runs.len(), 3);
    let pipelines: Vec<&str> = runs
        .iter()
        .map(|r| r["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(pipelines, ["baseline", "sweep", "baseline"], "newest first");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));

    // The up-to-date rerun says which run produced its outs.
    let (newest, oldest) = (&runs[0], &runs[2]);
    assert_eq!(newest["stages"][0]["status"], "cached");
    assert_eq!(newest["stages"][0]["produced_by"], oldest["id"]);
    assert_eq!(newest["stages"][0]["metrics"]["exact_match"], 0.6);

    let page = ws
        .pipe()
        .args(["runs", "list", "--json", "--limit", "1", "--page", "2"])
        .output()
        .unwrap();
    assert_eq!(json_lines(&page.stdout)[0]["pipeline"], "sweep");

    let show = ws
        .pipe()
        .args(["runs", "show", "latest~1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("sweep") && text.contains("exact_match = 0.9000"),
        "{text}"
    );

    let diff = ws
        .pipe()
        .args(["runs", "diff", "latest~2", "latest~1", "--json"])
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&diff.stdout).unwrap();
    let row = |rows: &Value, key: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {key} in {rows:#}"))
    };
    let lr = row(&d["params"], "train.params.lr");
    assert_eq!((&lr["a"], &lr["b"]), (&0.1.into(), &0.3.into()));
    assert_eq!(row(&d["params"], "pipeline")["b"], "sweep");
    let em = row(&d["metrics"], "train.exact_match");
    assert!((em["delta"].as_f64().unwrap() - 0.3).abs() < 1e-12);

    ws.pipe()
        .args([
            "runs", "compare", "latest~2", "latest~1", "--html", "cmp.html",
        ])
        .assert()
        .success();
    let html = ws.read("cmp.html");
    assert!(html.contains("train.exact_match") && html.contains("0.9000"));
    assert!(
        !html.contains("<script"),
        "the page is self-contained and static"
    );

    let unknown = ws.pipe().args(["runs", "show", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("pipe runs list"));
}
