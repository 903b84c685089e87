//! Dataset versions through the CLI: a `version` stage records a content-addressed id
//! (stable across runs and workspaces, new when a row changes), `pipe data log` lists
//! versions newest first, `pipe data checkout` restores byte-identical files, and a stage
//! pinned to `version: ID` uses the recorded data whatever the current data is.

use crate::support::{Ws, set};
use serde_json::Value;

fn rows(edit: Option<usize>) -> String {
    (0..40)
        .map(|i| {
            let answer = if edit == Some(i) {
                "edited".to_owned()
            } else {
                format!("a{i}")
            };
            format!("{{\"prompt\":\"q{i}\",\"completion\":\"{answer}\"}}\n")
        })
        .collect()
}

const PIPELINE: &str = r#"stages:
  ingest:
    kind: ingest
    with: {source: raw/qa.jsonl, out: data}
  version:
    kind: version
    with: {data: data, out: version.json}
"#;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.file("raw/qa.jsonl", &rows(None)).pipeline(PIPELINE);
    ws
}

fn record(ws: &Ws) -> Value {
    serde_json::from_str(&ws.read("version.json")).unwrap()
}

/// `pipe data log --json`, parsed.
fn log(ws: &Ws) -> Vec<Value> {
    let out = ws.pipe().args(["data", "log", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file under `dir` as (relative path, bytes), sorted.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn version_ids_are_stable_and_change_with_a_row() {
    let ws = workspace();
    let first = ws.run_ok(&[]);
    assert_eq!(first.ran(), set(&["ingest", "version"]));
    let v1 = record(&ws);
    let id1 = v1["id"].as_str().unwrap().to_owned();
    assert_eq!(id1.len(), 64);
    let rows_total: u64 = ["train", "valid", "test"]
        .iter()
        .map(|s| v1["rows"][s].as_u64().unwrap())
        .sum();
    assert_eq!(rows_total, 40);
    assert_eq!(v1["data"], "data");
    assert_eq!(v1["sources"][0]["path"], "raw/qa.jsonl");
    assert!(v1["created"].as_str().unwrap().ends_with('Z'));

    // Forced, and in another workspace: same bytes, same id.
    let forced = ws.run_ok(&["--force"]);
    assert!(forced.ran().contains("version"));
    assert_eq!(record(&ws)["id"], id1.as_str());
    let other = workspace();
    other.run_ok(&[]);
    assert_eq!(
        record(&other)["id"],
        id1.as_str(),
        "ids do not depend on where"
    );
    assert_eq!(log(&ws).len(), 1, "one content, one log line");

    // One row changes: a new id, and the log lists both, newest first.
    ws.file("raw/qa.jsonl", &rows(Some(7)));
    let edited = ws.run_ok(&[]);
    assert_eq!(edited.ran(), set(&["ingest", "version"]));
    let id2 = record(&ws)["id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id1);
    let listed: Vec<String> = log(&ws)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [id2.clone(), id1.clone()]);
    let text = ws.pipe().args(["data", "log"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&id2[..12]) && lines[1].starts_with(&id1[..12]),
        "{text}"
    );
    assert!(
        lines[0].contains("  data  ") && lines[0].contains("train "),
        "{text}"
    );
}

#[test]
fn checkout_restores_byte_identical_files() {
    let ws = workspace();
    ws.run_ok(&[]);
    let id1 = record(&ws)["id"].as_str().unwrap().to_owned();
    let original = files(&ws.path("data"));
    ws.file("raw/qa.jsonl", &rows(Some(3)));
    ws.run_ok(&[]);
    assert_ne!(files(&ws.path("data")), original);
    // Nothing but the versions log refers to the first data now; gc must keep it.
    ws.pipe()
        .args(["gc", "--keep-runs", "0"])
        .assert()
        .success();

    let out = ws
        .pipe()
        .args(["data", "checkout", &id1[..10], "--to", "old"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("restored data version {}", &id1[..12]))
    );
    assert_eq!(files(&ws.path("old")), original);
    // Plain files: a checked-out dataset can be edited.
    std::fs::write(ws.path("old/train.jsonl"), "edited\n").unwrap();

    // Without --to, the version goes back where it was taken from.
    ws.pipe()
        .args(["data", "checkout", &id1])
        .assert()
        .success();
    assert_eq!(files(&ws.path("data")), original);

    // Into a non-empty folder of something else only with --force.
    ws.file("elsewhere/keep.txt", "mine");
    let refused = ws
        .pipe()
        .args(["data", "checkout", &id1, "--to", "elsewhere"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(ws.exists("elsewhere/keep.txt"));
}

#[test]
fn unknown_ambiguous_and_malformed_ids_are_usage_errors() {
    let ws = workspace();
    let none = ws
        .pipe()
        .args(["data", "checkout", "abc"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no data versions are recorded"));
    ws.run_ok(&[]);
    let id = record(&ws)["id"].as_str().unwrap().to_owned();
    let other = if id.starts_with('f') { "0" } else { "f" };
    let missing = ws
        .pipe()
        .args(["data", "checkout", other])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains(&format!("no data version `{other}`")), "{err}");
    assert!(err.contains("hint: `pipe data log` lists them"), "{err}");
    let bad = ws
        .pipe()
        .args(["data", "checkout", "v1.0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a version id"));
    // Add versions until two ids share a first digit; that digit is then ambiguous.
    for i in 0..40 {
        ws.file("raw/qa.jsonl", &rows(Some(i)));
        ws.run_ok(&[]);
        let ids: Vec<String> = log(&ws)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        let first = &ids[0][..1];
        if ids[1..].iter().any(|i| i.starts_with(first)) {
            let out = ws
                .pipe()
                .args(["data", "checkout", first])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("is ambiguous"), "{err}");
            assert!(err.contains(&ids[0][..16]), "{err}");
            return;
        }
    }
    panic!("41 versions and no shared first digit");
}

#[test]
fn a_pinned_version_is_used_instead_of_the_current_data() {
    let ws = workspace();
    ws.run_ok(&[]);
    let id1 = record(&ws)["id"].as_str().unwrap().to_owned();
    let original = files(&ws.path("data"));
    ws.file("raw/qa.jsonl", &rows(Some(5)));
    ws.file(
        "pipe.yaml",
        &format!(
            r#"{PIPELINE}  pinned:
    kind: version
    with: {{version: "{}", to: pinned, out: pinned.json}}
  use:
    cmd: cat pinned/train.jsonl pinned/valid.jsonl pinned/test.jsonl > used.txt
    deps: [pinned]
    outs: [used.txt]
"#,
            &id1[..12]
        ),
    );
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["ingest", "version", "pinned", "use"]));
    assert_eq!(files(&ws.path("pinned")), original);
    let pinned: Value = serde_json::from_str(&ws.read("pinned.json")).unwrap();
    assert_eq!(pinned["id"], id1.as_str());
    assert!(!ws.read("used.txt").contains("edited"));
    assert_ne!(record(&ws)["id"], id1.as_str(), "the current data moved on");

    // The pin is the content: more edits to the current data leave it alone.
    ws.file("raw/qa.jsonl", &rows(Some(9)));
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["ingest", "version"]));
    assert_eq!(files(&ws.path("pinned")), original);
}

#[test]
fn version_with_is_checked_at_load() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  v:\n    kind: version\n    with: {data: d, to: x, out: v.json}\n");
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pipe.yaml:4:"), "{err}");
    assert!(err.contains("`to` goes with `version`"), "{err}");
}

#[test]
fn a_pin_to_an_unrecorded_version_fails_the_stage_with_a_hint() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  pinned:\n    kind: version\n    with: {version: \"0123abcd\", to: pinned, out: pinned.json}\n",
    );
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no data versions are recorded in this workspace"),
        "{err}"
    );
    assert!(!ws.exists("pinned") && !ws.exists("pinned.json"));
}
