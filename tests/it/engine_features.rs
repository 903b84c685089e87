//! Spec features end to end: params_file, vars, argv commands, the stage environment,
//! always_run, frozen, needs ordering, and the shipped example pipeline.

use crate::support::{Ws, set};

#[test]
fn params_file_vars_and_argv_commands() {
    let ws = Ws::new();
    ws.file("conf/params.yaml", "train:\n  lr: 0.1\n  epochs: 2\n").pipeline(
        r#"
params_file: conf/params.yaml
params:
  train:
    epochs: 5
vars:
  out: "results/e{{ params.train.epochs }}"
stages:
  show:
    cmd: [sh, -c, 'echo "$PIPE_STAGE {{ params.train.lr }} {{ params.train.epochs }}" > {{ vars.out }}.txt']
    params: [train]
    outs: ["{{ vars.out }}.txt"]
"#,
    );
    ws.run_ok(&[]);
    assert_eq!(ws.read("results/e5.txt"), "show 0.1 5\n");
    // The whole `train` subtree is read: changing the file reruns the stage.
    ws.file("conf/params.yaml", "train:\n  lr: 0.2\n  epochs: 2\n");
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["show"]));
    assert_eq!(ws.read("results/e5.txt"), "show 0.2 5\n");
}

#[test]
fn commands_can_call_pipe_itself() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  v:\n    cmd: pipe --version > v.txt\n    outs: [v.txt]\n");
    ws.run_ok(&[]);
    assert!(ws.read("v.txt").starts_with("pipe "));
}

#[test]
fn always_run_and_frozen() {
    let ws = Ws::new();
    ws.file("in.txt", "1\n").pipeline(
        r#"
stages:
  stamp:
    cmd: cat in.txt > stamp.txt
    deps: [in.txt]
    outs: [stamp.txt]
    always_run: true
  keep:
    cmd: cat in.txt > keep.txt
    deps: [in.txt]
    outs: [keep.txt]
"#,
    );
    ws.run_ok(&[]);
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["stamp"]));
    assert_eq!(
        r.event("stage-start", "stamp")["reasons"][0]["reason"],
        "always-run"
    );
    ws.pipeline(&ws.read("pipe.yaml").replace(
        "    outs: [keep.txt]\n",
        "    outs: [keep.txt]\n    frozen: true\n",
    ));
    ws.file("in.txt", "2\n");
    let r = ws.run_ok(&[]);
    assert!(!r.started().contains("keep"));
    assert_eq!(ws.read("keep.txt"), "1\n");
    assert!(
        r.events
            .iter()
            .any(|e| e["event"] == "stage-cached" && e["frozen"] == true)
    );
}

#[test]
fn needs_orders_stages_without_data() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  second:
    cmd: test -f first.txt && echo ok > second.txt
    outs: [second.txt]
    needs: [first]
  first:
    cmd: echo 1 > first.txt
    outs: [first.txt]
"#,
    );
    let r = ws.run_ok(&["-j", "4"]);
    assert_eq!(ws.read("second.txt"), "ok\n");
    // The order of events, not a delay in `first`, shows that `second` waited.
    let at = |event: &str, stage: &str| {
        r.events
            .iter()
            .position(|e| e["event"] == event && e["stage"] == stage)
            .unwrap_or_else(|| panic!("no {event} for {stage}"))
    };
    assert!(at("stage-finish", "first") < at("stage-start", "second"));
}

#[test]
fn a_stage_that_forgets_an_out_fails() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  lazy:\n    cmd: 'true'\n    outs: [never.txt]\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1);
    let err = r.event("stage-failed", "lazy")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(err.contains("did not write out `never.txt`"), "{err}");
}

#[test]
fn the_example_pipeline_runs() {
    let ws = Ws::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(repo.join("pipelines/examples/cmd-basics.yaml")).unwrap();
    let words = std::fs::read_to_string(repo.join("pipelines/examples/data/words.txt")).unwrap();
    ws.file("pipelines/examples/cmd-basics.yaml", &example)
        .file("pipelines/examples/data/words.txt", &words);
    let r = ws.run_ok(&["pipelines/examples/cmd-basics.yaml"]);
    assert_eq!(r.ran().len(), 5);
    assert!(ws.exists("pipelines/examples/cmd-basics.lock"));
    assert!(ws.read("reports/cmd-basics/top1.txt").contains("apple"));
    assert!(
        ws.run_ok(&["pipelines/examples/cmd-basics.yaml"])
            .started()
            .is_empty()
    );
}

#[test]
fn root_option_separates_pipeline_and_workspace() {
    let ws = Ws::new();
    ws.file("work/in.txt", "x\n").file(
        "defs/p.yaml",
        "stages:\n  a:\n    cmd: cat in.txt > out.txt\n    deps: [in.txt]\n    outs: [out.txt]\n",
    );
    let r = ws.run_ok(&["defs/p.yaml", "--root", "work"]);
    assert_eq!(r.ran(), set(&["a"]));
    assert_eq!(ws.read("work/out.txt"), "x\n");
    assert!(ws.exists("defs/p.lock") && ws.exists("work/cache/v1/objects"));
    assert!(
        ws.run_ok(&["defs/p.yaml", "--root", "work"])
            .started()
            .is_empty()
    );
}
