//! Training-only rows (`train_extra`) through `pipe run`: they join the train split and no
//! other, the held-out splits stay as they were without them, an edit of the extra file
//! reruns the ingest, and a bad row in it is named by its own file and line.

use crate::support::Ws;

fn rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n"))
        .collect()
}

fn pipeline(extra: Option<&str>) -> String {
    let extra = extra.map_or(String::new(), |f| format!(", train_extra: {f}"));
    format!(
        "stages:\n  ingest:\n    kind: ingest\n    with: {{source: qa.jsonl, out: clean{extra}}}\n"
    )
}

#[test]
fn extra_rows_join_train_only_and_an_edit_of_them_reruns_the_ingest() {
    let ws = Ws::new();
    ws.file("qa.jsonl", &rows(0..100)).pipeline(&pipeline(None));
    ws.run_ok(&[]);
    let held_out = || (ws.read("clean/valid.jsonl"), ws.read("clean/test.jsonl"));
    let without = held_out();
    let train_without = ws.read("clean/train.jsonl").lines().count();

    // 40 new rows and 10 that repeat the source (some of them held out).
    ws.file("more.jsonl", &rows(90..140))
        .pipeline(&pipeline(Some("more.jsonl")));
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("ingest"));
    assert_eq!(held_out(), without, "the extra rows moved a held-out one");
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("clean/metrics.json")).unwrap();
    assert_eq!(metrics["train_extra_rows"], 40);
    assert_eq!(metrics["duplicates_removed"], 10);
    assert_eq!(metrics["rows_read"], 150);
    assert_eq!(
        ws.read("clean/train.jsonl").lines().count(),
        train_without + 40
    );

    assert!(ws.run_ok(&[]).ran().is_empty(), "nothing changed");
    ws.file("more.jsonl", &rows(90..141));
    assert!(
        ws.run_ok(&[]).ran().contains("ingest"),
        "the extra file is a dependency"
    );
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("clean/metrics.json")).unwrap();
    assert_eq!(metrics["train_extra_rows"], 41);
}

#[test]
fn a_bad_extra_row_is_named_by_its_own_file_and_line() {
    let ws = Ws::new();
    ws.file("qa.jsonl", &rows(0..20))
        .file(
            "more.jsonl",
            &format!("{}{{\"prompt\": \"q\"}}\n", rows(50..52)),
        )
        .pipeline(&pipeline(Some("more.jsonl")));
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("more.jsonl:3: missing field `completion`"),
        "{err}"
    );
    assert!(!ws.exists("clean"), "a failed ingest leaves no outs");
}

#[test]
fn the_extra_past_tense_verbs_share_none_with_the_task() {
    let ws = Ws::new();
    let verbs = |id: &str| -> std::collections::BTreeSet<String> {
        let out = ws.pipe().args(["data", "fetch", id]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8(out.stdout).unwrap();
        let task: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path.trim()).unwrap()).unwrap();
        task["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["input"].as_str().unwrap().to_owned())
            .collect()
    };
    let (task, extra) = (verbs("agid-past-tense"), verbs("agid-past-tense-extra"));
    assert_eq!((task.len(), extra.len()), (1_775, 12_457));
    assert!(task.is_disjoint(&extra));
}
