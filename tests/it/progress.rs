//! Live progress of running stages: a stage writes `$PIPE_PROGRESS`, and `pipe run` shows
//! it as periodic plain lines without a terminal (cron) and as `stage-progress` events
//! with `--json`. (The terminal display renders the same events; its formatting is unit
//! tested in `cli::progress`.)

use crate::support::Ws;

/// A command that reports four steps, each only once `pipe run` has shown the one before:
/// it waits (30 s at most) for that step's `stage-progress` line in the run's event stream
/// (`runs/history/<id>/events.jsonl`), so the test depends on no poll interval. A rerun
/// finds the first run's stream there and does not wait.
const PIPELINE: &str = r#"
stages:
  work:
    cmd: >-
      for i in 1 2 3 4; do
      printf '{"step":%s,"total":4,"loss":1.5,"tokens_per_second":20}' $i > "$PIPE_PROGRESS.tmp" &&
      mv "$PIPE_PROGRESS.tmp" "$PIPE_PROGRESS";
      n=0; until grep -qs "\"step\":$i[,}]" runs/history/*/events.jsonl; do
      n=$((n+1)); [ $n -lt 3000 ] || { echo "step $i never shown" >&2; exit 3; }; sleep 0.01; done;
      done; echo done > out.txt
    outs: [out.txt]
"#;

#[test]
fn without_a_terminal_progress_is_plain_lines() {
    let ws = Ws::new();
    ws.pipeline(PIPELINE);
    let out = ws.pipe().arg("run").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("stage work step"))
        .collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    for (line, step) in lines.iter().zip(1..) {
        assert!(
            line.ends_with(&format!("stage work step {step}/4 loss 1.5000 20.0 tok/s")),
            "{line}"
        );
        assert!(
            line.starts_with("20"),
            "timestamped like every plain line: {line}"
        );
    }
    assert!(
        !ws.exists("cache/logs/pipe/work.progress"),
        "the progress file goes with the stage"
    );
    let journal = ws.read("cache/v1/journal.jsonl");
    assert!(
        !journal.contains("stage-progress"),
        "not part of the record"
    );

    let quiet = ws
        .pipe()
        .args(["run", "--force", "--quiet"])
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("step"),
        "--quiet hides progress"
    );
}

#[test]
fn json_has_stage_progress_events_before_the_finish() {
    let ws = Ws::new();
    ws.pipeline(PIPELINE);
    let run = ws.run_ok(&[]);
    let kinds: Vec<(String, Option<u64>)> = run
        .events
        .iter()
        .filter(|e| e["stage"] == "work")
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["step"].as_u64()))
        .collect();
    let expected: Vec<(String, Option<u64>)> = std::iter::once(("stage-start".into(), None))
        .chain((1..=4).map(|s| ("stage-progress".to_owned(), Some(s))))
        .chain(std::iter::once(("stage-finish".into(), None)))
        .collect();
    assert_eq!(kinds, expected);
    let last = run
        .events
        .iter()
        .rfind(|e| e["event"] == "stage-progress")
        .unwrap();
    assert_eq!(last["total"], 4);
    assert_eq!(last["loss"], 1.5);
    assert_eq!(last["tokens_per_second"], 20.0);
}
