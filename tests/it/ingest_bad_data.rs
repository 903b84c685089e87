//! Bad datasets through `pipe run` on an ingest stage: each validation error fails the stage
//! with the file and line of the bad row (exit 1) and leaves nothing cached for it; with
//! `on_error: skip` the bad rows are left out and counted.

use crate::support::Ws;

const GOOD: &str = "{\"prompt\":\"q1\",\"completion\":\"a1\"}";

/// Runs an ingest of `rows` (written as `raw/data.jsonl`) and returns stderr, asserting
/// that the stage failed and that nothing of it was kept.
fn fails(rows: &str, extra_with: &str) -> String {
    let ws = Ws::new();
    ws.file("raw/data.jsonl", rows).pipeline(&format!(
        "stages:\n  ingest:\n    kind: ingest\n    with: {{source: raw/data.jsonl, out: clean{extra_with}}}\n"
    ));
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stage ingest failed"), "{err}");
    assert!(!ws.exists("clean"), "a failed ingest leaves no outs");
    let runs = ws.path("cache/v1/runs");
    let entries = std::fs::read_dir(&runs).map_or(0, |d| d.count());
    assert_eq!(entries, 0, "no run-cache entry for a failed stage");
    let lock = std::fs::read_to_string(ws.path("pipe.lock")).unwrap_or_default();
    assert!(!lock.contains("ingest"), "no lock entry: {lock}");
    // The next run tries again rather than trusting anything from the failure.
    let again = ws.run(&[]);
    assert_eq!(again.code, 1);
    assert!(again.started().contains("ingest"));
    err
}

#[test]
fn bad_json_names_file_and_line() {
    let err = fails(&format!("{GOOD}\n{{\"prompt\": \"q2\",\n"), "");
    assert!(err.contains("raw/data.jsonl:2: invalid JSON"), "{err}");
    assert!(
        err.contains("hint: fix the row, or set `on_error: skip`"),
        "{err}"
    );
}

#[test]
fn missing_field_names_the_field() {
    let err = fails(&format!("{GOOD}\n\n{{\"prompt\":\"q3\"}}\n"), "");
    assert!(
        err.contains(
            "raw/data.jsonl:3: missing field `completion` (the completions format needs it"
        ),
        "{err}"
    );
}

#[test]
fn empty_text_is_refused() {
    let err = fails("{\"text\":\"fine\"}\n{\"text\":\"   \"}\n", "");
    assert!(
        err.contains("raw/data.jsonl:2: field `text` is empty"),
        "{err}"
    );
}

#[test]
fn unknown_role_is_named() {
    let chat = |role: &str| {
        format!(
            "{{\"messages\":[{{\"role\":\"{role}\",\"content\":\"hi\"}},{{\"role\":\"assistant\",\"content\":\"hello\"}}]}}\n"
        )
    };
    let err = fails(&format!("{}{}", chat("user"), chat("wizard")), "");
    assert!(
        err.contains(
            "raw/data.jsonl:2: unknown role `wizard` (expected system, user, assistant or tool)"
        ),
        "{err}"
    );
}

#[test]
fn over_long_example_is_refused() {
    let long = "x".repeat(50);
    let err = fails(
        &format!("{GOOD}\n{{\"prompt\":\"q\",\"completion\":\"{long}\"}}\n"),
        ", max_chars: 20",
    );
    assert!(
        err.contains("raw/data.jsonl:2: the example has 51 characters, more than max_chars = 20"),
        "{err}"
    );
}

#[test]
fn skip_policy_leaves_bad_rows_out_and_counts_them() {
    let ws = Ws::new();
    let mut rows = String::new();
    for i in 0..20 {
        rows.push_str(&format!(
            "{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n"
        ));
    }
    rows.push_str("{\"prompt\": \"broken\"\n"); // line 21: bad JSON
    rows.push_str("{\"prompt\":\"q\"}\n"); // 22: missing completion
    rows.push_str("{\"prompt\":\"q\",\"completion\":\" \"}\n"); // 23: empty
    rows.push_str(&format!(
        "{{\"prompt\":\"q\",\"completion\":\"{}\"}}\n",
        "y".repeat(80)
    )); // 24: too long
    ws.file("raw/data.jsonl", &rows).pipeline(
        "stages:\n  ingest:\n    kind: ingest\n    with: {source: raw/data.jsonl, out: clean, on_error: skip, max_chars: 40}\n",
    );
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("ingest"));
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("clean/metrics.json")).unwrap();
    assert_eq!(metrics["skipped"], 4);
    assert_eq!(metrics["rows_read"], 24);
    let kept = ["train", "valid", "test"]
        .iter()
        .map(|s| ws.read(&format!("clean/{s}.jsonl")).lines().count())
        .sum::<usize>();
    assert_eq!(kept, 20);
    let stats: serde_json::Value = serde_json::from_str(&ws.read("clean/stats.json")).unwrap();
    let skipped: Vec<&str> = stats["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 4);
    let expected = [
        "raw/data.jsonl:21: invalid JSON",
        "raw/data.jsonl:22: missing field `completion`",
        "raw/data.jsonl:23: field `completion` is empty",
        "raw/data.jsonl:24: the example has 81 characters",
    ];
    for (got, want) in skipped.iter().zip(expected) {
        assert!(got.starts_with(want), "{got} vs {want}");
    }
}

#[test]
fn unknown_role_under_skip_is_counted_not_fatal() {
    let ws = Ws::new();
    let mut rows = String::new();
    for (i, role) in ["user", "wizard", "user"].iter().enumerate() {
        rows.push_str(&format!(
            "{{\"messages\":[{{\"role\":\"{role}\",\"content\":\"q{i}\"}},{{\"role\":\"assistant\",\"content\":\"a{i}\"}}]}}\n"
        ));
    }
    ws.file("chat.jsonl", &rows).pipeline(
        "stages:\n  ingest:\n    kind: ingest\n    with: {source: chat.jsonl, out: clean, on_error: skip}\n",
    );
    ws.run_ok(&[]);
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("clean/metrics.json")).unwrap();
    assert_eq!(metrics["skipped"], 1);
    let stats = ws.read("clean/stats.json");
    assert!(
        stats.contains("chat.jsonl:2: unknown role `wizard`"),
        "{stats}"
    );
}
