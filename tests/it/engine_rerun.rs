//! Rerun behaviour of `pipe run`: only what changed reruns, reverts restore from the run
//! cache, params, early cutoff, --force, -s, --downstream, --dry-run, failures.

use crate::support::{Ws, set};

/// a.txt -> A -> a.out -> C -> c.out ; b.txt -> B -> b.out -> C
fn diamond() -> Ws {
    let ws = Ws::new();
    ws.file("a.txt", "a1\n").file("b.txt", "b1\n").pipeline(
        r#"
params:
  c:
    sep: "-"
  unused: 1
stages:
  A:
    cmd: cat a.txt > a.out
    deps: [a.txt]
    outs: [a.out]
  B:
    cmd: cat b.txt > b.out
    deps: [b.txt]
    outs: [b.out]
  C:
    cmd: cat a.out b.out > c.out && echo "{{ params.c.sep }}" >> c.out
    deps: [a.out, b.out]
    params: [c.sep]
    outs: [c.out]
"#,
    );
    ws
}

#[test]
fn first_run_runs_everything_then_nothing() {
    let ws = diamond();
    assert_eq!(ws.run_ok(&[]).ran(), set(&["A", "B", "C"]));
    assert_eq!(ws.read("c.out"), "a1\nb1\n-\n");
    let second = ws.run_ok(&[]);
    assert!(second.started().is_empty(), "{:#?}", second.events);
    assert!(ws.read("pipe.lock").contains("fingerprint:"));
}

#[test]
fn editing_an_input_reruns_exactly_its_dependents() {
    let ws = diamond();
    ws.run_ok(&[]);
    ws.file("a.txt", "a2\n");
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["A", "C"]));
    assert_eq!(
        r.event("stage-start", "A")["reasons"][0]["reason"],
        "dep-changed"
    );
    assert_eq!(
        r.event("stage-start", "C")["reasons"][0]["reason"],
        "upstream-changed"
    );
    assert_eq!(ws.read("c.out"), "a2\nb1\n-\n");
}

#[test]
fn reverting_an_input_restores_from_the_run_cache_without_running() {
    let ws = diamond();
    ws.run_ok(&[]);
    ws.file("a.txt", "a2\n");
    ws.run_ok(&[]);
    ws.file("a.txt", "a1\n");
    let r = ws.run_ok(&[]);
    assert!(
        r.started().is_empty(),
        "nothing may execute: {:#?}",
        r.events
    );
    assert_eq!(r.restored(), set(&["A", "C"]));
    assert_eq!(ws.read("a.out"), "a1\n");
    assert_eq!(ws.read("c.out"), "a1\nb1\n-\n");
    // And the human output says so.
    ws.file("a.txt", "a2\n");
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restored from the run cache"), "{err}");
}

#[test]
fn a_param_change_reruns_only_the_stages_that_read_it() {
    let ws = diamond();
    ws.run_ok(&[]);
    let r = ws.run_ok(&["--set", "c.sep=+"]);
    assert_eq!(r.ran(), set(&["C"]));
    let reasons = &r.event("stage-start", "C")["reasons"];
    assert!(
        reasons
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["reason"] == "param-changed"
                && x["name"] == "c.sep"
                && x["old"] == "-"
                && x["new"] == "+"),
        "{reasons}"
    );
    // A param no stage reads changes nothing.
    assert!(
        ws.run_ok(&["--set", "c.sep=+", "--set", "unused=2"])
            .started()
            .is_empty()
    );
    // Going back restores.
    let back = ws.run_ok(&[]);
    assert_eq!(back.restored(), set(&["C"]));
    assert!(back.started().is_empty());
}

#[test]
fn early_cutoff_when_upstream_output_is_byte_identical() {
    let ws = Ws::new();
    ws.file("in.txt", "hello\n").pipeline(
        r#"
stages:
  len:
    cmd: wc -c < in.txt > len.txt
    deps: [in.txt]
    outs: [len.txt]
  report:
    cmd: cat len.txt > report.txt
    deps: [len.txt]
    outs: [report.txt]
"#,
    );
    ws.run_ok(&[]);
    ws.file("in.txt", "jello\n"); // same length
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["len"]));
    assert_eq!(r.event("stage-finish", "len")["outs_changed"], false);
}

#[test]
fn missing_or_modified_outs_are_restored_and_force_reruns() {
    let ws = diamond();
    ws.run_ok(&[]);
    std::fs::remove_file(ws.path("c.out")).unwrap();
    let r = ws.run_ok(&[]);
    assert_eq!(r.restored(), set(&["C"]));
    assert_eq!(ws.read("c.out"), "a1\nb1\n-\n");
    ws.file("a.out", "tampered\n");
    let status = ws.pipe().args(["status", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let a = &status["stages"][0];
    assert_eq!(a["stage"], "A");
    assert_eq!(a["reasons"][0]["reason"], "out-modified");
    ws.run_ok(&[]);
    assert_eq!(ws.read("a.out"), "a1\n");
    let forced = ws.run_ok(&["--force"]);
    assert_eq!(forced.ran(), set(&["A", "B", "C"]));
}

#[test]
fn select_one_stage_and_downstream_and_dry_run() {
    let ws = diamond();
    ws.run_ok(&[]);
    ws.file("a.txt", "a3\n");
    ws.file("b.txt", "b3\n");
    let dry = ws.pipe().args(["run", "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("would run A: dep `a.txt` changed"), "{text}");
    assert!(text.contains("would run C: upstream `A` changed"), "{text}");
    assert_eq!(ws.read("a.out"), "a1\n", "dry run must not run anything");
    assert_eq!(ws.run_ok(&["-s", "A"]).ran(), set(&["A"]));
    assert_eq!(
        ws.run_ok(&["-s", "B", "--downstream"]).ran(),
        set(&["B", "C"])
    );
    let bad = ws.pipe().args(["run", "-s", "AA"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `A`"));
}

#[test]
fn a_failing_stage_exits_1_removes_partial_outs_and_keep_going_continues() {
    let ws = Ws::new();
    ws.file("in.txt", "x\n").pipeline(
        r#"
stages:
  bad:
    cmd: echo partial > bad.out; echo boom >&2; exit 3
    deps: [in.txt]
    outs: [bad.out]
  after:
    cmd: cat bad.out > after.out
    deps: [bad.out]
    outs: [after.out]
  good:
    cmd: cat in.txt > good.out
    deps: [in.txt]
    outs: [good.out]
"#,
    );
    let r = ws.run(&["-j", "1"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.failed(), set(&["bad"]));
    assert!(!ws.exists("bad.out"), "partial out must be removed");
    assert!(
        !ws.exists("good.out"),
        "without --keep-going nothing new starts"
    );
    let r = ws.run(&["--keep-going"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.ran(), set(&["good"]));
    assert!(
        r.events
            .iter()
            .any(|e| e["event"] == "stage-skipped" && e["stage"] == "after")
    );
    let human = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&human.stderr);
    assert!(err.contains("boom") && err.contains("bad.log"), "{err}");
}

/// `(event, stage)` of the start and finish events, in order.
fn starts_and_finishes(r: &crate::support::Run) -> Vec<(String, String)> {
    r.events
        .iter()
        .filter(|e| e["event"] == "stage-start" || e["event"] == "stage-finish")
        .map(|e| {
            let event = e["event"].as_str().unwrap().trim_start_matches("stage-");
            (event.to_owned(), e["stage"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn independent_stages_run_in_parallel() {
    let ws = Ws::new();
    // A rendezvous instead of a stopwatch: each stage marks that it started, then waits
    // (bounded) for the other two; run one after another, the first would give up and fail.
    let stage = |me: &str, a: &str, b: &str| {
        format!(
            "  {me}: {{cmd: \"touch {me}.started; i=0; until [ -f {a}.started ] && [ -f {b}.started ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.01; done; echo {me} > {me}.out\", outs: [{me}.out]}}\n"
        )
    };
    ws.pipeline(&format!(
        "stages:\n{}{}{}",
        stage("a", "b", "c"),
        stage("b", "a", "c"),
        stage("c", "a", "b")
    ));
    let r = ws.run_ok(&["-j", "3"]);
    let order = starts_and_finishes(&r);
    assert!(
        order[..3].iter().all(|(e, _)| e == "start"),
        "all three start before any finishes: {order:?}"
    );
}

#[test]
fn mlx_resource_serialises_stages() {
    let ws = Ws::new();
    // Each stage fails if the other is running while it runs.
    ws.pipeline(
        r#"
stages:
  a: {cmd: "touch a.running; [ ! -f b.running ] || exit 1; echo a > a.out; rm a.running", outs: [a.out], resources: {mlx: 1}}
  b: {cmd: "touch b.running; [ ! -f a.running ] || exit 1; echo b > b.out; rm b.running", outs: [b.out], resources: {mlx: 1}}
"#,
    );
    let r = ws.run_ok(&["-j", "2"]);
    let order = starts_and_finishes(&r);
    // start x, finish x, start y, finish y: the second starts only after the first ended.
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(
        (
            order[0].0.as_str(),
            order[1].0.as_str(),
            order[2].0.as_str()
        ),
        ("start", "finish", "start"),
        "{order:?}"
    );
    assert_eq!(order[0].1, order[1].1, "{order:?}");
}

#[test]
fn a_restore_never_brings_back_a_corrupted_object() {
    let ws = diamond();
    ws.run_ok(&[]);
    ws.file("a.txt", "a2\n");
    ws.run_ok(&[]);
    ws.file("a.txt", "a1\n");
    assert_eq!(ws.run_ok(&[]).restored(), set(&["A", "C"]));
    // a.out may now be a hardlink into the store; writing through it (as root, or after a
    // chmod) corrupts the object.
    let out = ws.path("a.out");
    let mut perms = std::fs::metadata(&out).unwrap().permissions();
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "the test makes a store object writable on purpose"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&out, perms).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"oops\n"))
        .unwrap();
    ws.file("a.txt", "a2\n");
    ws.run_ok(&[]);
    ws.file("a.txt", "a1\n");
    let r = ws.run_ok(&[]);
    assert!(
        r.ran().contains("A"),
        "the corrupt object must not be restored: {:#?}",
        r.events
    );
    assert_eq!(ws.read("a.out"), "a1\n");
    assert_eq!(ws.read("c.out"), "a1\nb1\n-\n");
}
