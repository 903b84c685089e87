//! `pipe status`, `pipe dag`, `pipe show`: reporting without running.

use crate::support::Ws;

fn chain() -> Ws {
    let ws = Ws::new();
    ws.file("in.txt", "1\n").pipeline(
        r#"
name: chain
stages:
  prep:
    cmd: cat in.txt > mid.txt
    deps: [in.txt]
    outs: [mid.txt]
  score:
    cmd: echo '{"acc":0.9}' > score.json
    deps: [mid.txt]
    metrics: [score.json]
"#,
    );
    ws
}

#[test]
fn status_lists_stale_stages_with_reasons() {
    let ws = chain();
    let out = ws.pipe().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("prep: stale: never ran"), "{text}");
    assert!(
        text.contains("score: stale: never ran; upstream `prep` changed"),
        "{text}"
    );
    ws.run_ok(&[]);
    let out = ws.pipe().arg("status").output().unwrap();
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("all 2 stages up to date"));
    ws.file("in.txt", "2\n");
    let json = ws.pipe().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["pipeline"], "chain");
    assert_eq!(v["stages"][0]["state"], "stale");
    assert_eq!(
        v["stages"][0]["reasons"][0],
        serde_json::json!({"reason": "dep-changed", "path": "in.txt"})
    );
    assert_eq!(
        v["stages"][1]["reasons"][0],
        serde_json::json!({"reason": "upstream-changed", "stage": "prep"})
    );
}

#[test]
fn an_edited_stage_says_which_part_of_its_definition_changed() {
    let ws = chain();
    ws.run_ok(&[]);
    let yaml = ws.read("pipe.yaml");
    ws.file(
        "pipe.yaml",
        &yaml
            .replace("cat in.txt > mid.txt", "cat in.txt in.txt > mid.txt")
            .replace("metrics: [score.json]", "outs: [score.json]"),
    );
    let out = ws.pipe().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prep: stale: definition changed: `cmd`"),
        "{text}"
    );
    assert!(
        text.contains("score: stale: definition changed: `metrics`, `outs`"),
        "{text}"
    );
    let json = ws.pipe().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["stages"][0]["reasons"][0],
        serde_json::json!({"reason": "definition-changed", "parts": ["cmd"]})
    );
}

#[test]
fn dag_renders_text_dot_and_mermaid() {
    let ws = chain();
    let text = ws.pipe().arg("dag").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        "prep\nscore <- prep (mid.txt)\n"
    );
    let dot = ws.pipe().args(["dag", "--dot"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&dot.stdout).contains("\"prep\" -> \"score\" [label=\"mid.txt\"];")
    );
    let mermaid = ws.pipe().args(["dag", "--mermaid"]).output().unwrap();
    assert!(String::from_utf8_lossy(&mermaid.stdout).contains("s0 -->|mid.txt| s1"));
}

#[test]
fn show_points_at_outs_metrics_last_run_and_log() {
    let ws = chain();
    ws.run_ok(&[]);
    let out = ws
        .pipe()
        .args(["show", "score", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metrics"]["score.json"]["acc"], 0.9);
    assert_eq!(v["last_run"]["status"], "ok");
    assert!(
        v["log"]
            .as_str()
            .unwrap()
            .ends_with("cache/logs/chain/score.log")
    );
    let human = ws.pipe().args(["show", "scor"]).output().unwrap();
    assert_eq!(human.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&human.stderr).contains("did you mean `score`?"));
}

#[test]
fn nothing_to_do_is_quiet_and_runs_nothing() {
    let ws = chain();
    ws.run_ok(&[]);
    let out = ws.pipe().args(["run", "--quiet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    // What makes it quick, checked without a stopwatch: no stage starts or is restored,
    // every one is found up to date.
    let r = ws.run_ok(&[]);
    assert!(
        r.started().is_empty() && r.restored().is_empty(),
        "{:#?}",
        r.events
    );
    let cached = r
        .events
        .iter()
        .filter(|e| e["event"] == "stage-cached")
        .count();
    assert_eq!(cached, 2, "{:#?}", r.events);
}

#[test]
fn dag_works_before_the_data_is_there() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  prep:\n    cmd: cat raw.csv > clean.csv\n    deps: [raw.csv]\n    outs: [clean.csv]\n");
    let dag = ws.pipe().arg("dag").output().unwrap();
    assert_eq!(dag.status.code(), Some(0));
    let run = ws.pipe().arg("run").output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .contains("dep `raw.csv` of stage `prep` does not exist")
    );
}
