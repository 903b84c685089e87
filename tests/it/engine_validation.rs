//! Validation errors: each is located (`file:line:col`), explained, hinted, exits 2, and
//! nothing runs.

use crate::support::Ws;

/// Runs `pipe run` on `yaml`, expects exit 2 and returns stderr.
fn invalid(yaml: &str) -> String {
    let ws = Ws::new();
    ws.file("in.txt", "x\n").pipeline(yaml);
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!ws.exists("pipe.lock"), "nothing may run");
    assert!(!ws.exists("never.out"), "nothing may run");
    err
}

#[test]
fn unknown_key_with_did_you_mean_and_caret() {
    let err = invalid(
        "stages:\n  a:\n    cmd: echo hi > never.out\n    dpes: [in.txt]\n    outs: [never.out]\n",
    );
    assert!(err.contains("unknown key `dpes` in stage `a`"), "{err}");
    assert!(err.contains("pipe.yaml:4:5"), "{err}");
    assert!(err.contains("4 |     dpes: [in.txt]"), "{err}");
    assert!(err.contains("|     ^^^^"), "{err}");
    assert!(err.contains("hint: did you mean `deps`?"), "{err}");
}

#[test]
fn unknown_top_level_key() {
    let err = invalid("stage:\n  a:\n    cmd: echo\n");
    assert!(err.contains("unknown key `stage`"), "{err}");
    assert!(err.contains("did you mean `stages`?"), "{err}");
}

#[test]
fn unknown_stage_in_needs() {
    let err = invalid(
        "stages:\n  prepare:\n    cmd: echo > never.out\n    outs: [never.out]\n  train:\n    cmd: echo\n    needs: [prepar]\n",
    );
    assert!(
        err.contains("stage `train` needs `prepar`, which is not a stage"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:7:13"), "{err}");
    assert!(err.contains("did you mean `prepare`?"), "{err}");
}

#[test]
fn cycle_prints_the_cycle_path() {
    let err = invalid(
        "stages:\n  a:\n    cmd: cat c > a\n    deps: [c]\n    outs: [a]\n  b:\n    cmd: cat a > b\n    deps: [a]\n    outs: [b]\n  c:\n    cmd: cat b > c\n    deps: [b]\n    outs: [c]\n",
    );
    assert!(
        err.contains("the pipeline has a cycle: a -> b -> c -> a"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:2:3"), "{err}");
    assert!(
        err.contains("hint: `b` reads `a`, which `a` writes"),
        "{err}"
    );
}

#[test]
fn two_stages_writing_one_out_and_nested_outs() {
    let err = invalid(
        "stages:\n  a:\n    cmd: echo\n    outs: [data/x]\n  b:\n    cmd: echo\n    outs: [data/x]\n  c:\n    cmd: echo\n    outs: [data/x/y.txt]\n",
    );
    assert!(
        err.contains("two stages write `data/x`: `a` and `b`"),
        "{err}"
    );
    assert!(
        err.contains("out `data/x/y.txt` of stage `c` is inside out `data/x` of stage `a`"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:7:12"), "{err}");
    assert!(err.contains("pipe.yaml:10:12"), "{err}");
}

#[test]
fn missing_dep_nobody_produces() {
    let err = invalid("stages:\n  a:\n    cmd: echo\n    deps: [in.tx]\n");
    assert!(
        err.contains("dep `in.tx` of stage `a` does not exist and no stage produces it"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:4:12"), "{err}");
}

#[test]
fn bad_matrix() {
    let err = invalid("stages:\n  a:\n    cmd: echo\n    matrix:\n      rank: []\n");
    assert!(
        err.contains("bad matrix: `rank` must be a non-empty list"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:5:7"), "{err}");
    let err = invalid("stages:\n  a:\n    cmd: echo\n    matrix: [1, 2]\n");
    assert!(err.contains("bad matrix"), "{err}");
}

#[test]
fn template_errors_and_undefined_names() {
    let err = invalid("params:\n  lr: 1\nstages:\n  a:\n    cmd: echo {{ params.lrr }}\n");
    assert!(
        err.contains("template error in `echo {{ params.lrr }}`"),
        "{err}"
    );
    assert!(err.contains("pipe.yaml:5:5"), "{err}");
    let err = invalid("stages:\n  a:\n    cmd: echo {{ oops\n");
    assert!(err.contains("template error"), "{err}");
}

#[test]
fn unknown_kinds_get_a_suggestion() {
    let err = invalid("stages:\n  t:\n    kind: cmdd\n    cmd: echo\n");
    assert!(err.contains("unknown stage kind `cmdd`"), "{err}");
    assert!(err.contains("did you mean `cmd`?"), "{err}");
}

#[test]
fn built_in_kinds_check_their_with_before_running() {
    let err = invalid("stages:\n  t:\n    kind: tune\n");
    assert!(err.contains("stage `t`: missing field `out`"), "{err}");
    let err = invalid("stages:\n  t:\n    kind: train\n");
    assert!(err.contains("stage `t`: `model`: is missing"), "{err}");
    let err = invalid(
        "stages:\n  t:\n    kind: train\n    with:\n      model: m\n      train_data: in.txt\n      out_dir: never.out\n      lerning_rate: 1\n",
    );
    assert!(err.contains("pipe.yaml:8:7"), "{err}");
    assert!(err.contains("`lerning_rate`: unknown key"), "{err}");
    assert!(err.contains("did you mean `learning_rate`?"), "{err}");
    let err = invalid("stages:\n  i:\n    kind: ingest\n    with: {source: in.txt}\n");
    assert!(err.contains("missing field `out`"), "{err}");
}

/// A train stage whose `with:` holds `line` at line 9, after the required keys.
fn train_with(line: &str) -> String {
    format!(
        "stages:\n  t:\n    kind: train\n    with:\n      model: m\n      train_data: in.txt\n      out_dir: never.out\n      batch_size: 4\n{line}\n"
    )
}

#[test]
fn bad_options_deep_inside_a_train_stage_are_reported_at_their_own_line() {
    // (the line at line 9, the position, the message, the caret's line)
    let cases = [
        (
            "      lora:\n        num_layers: 4\n        rank: 0",
            "pipe.yaml:11:9",
            "`lora.rank`: must be at least 1",
            "11 |         rank: 0",
        ),
        (
            "      lora:\n        rnak: 8",
            "pipe.yaml:10:9",
            "`lora.rnak`: unknown key",
            "10 |         rnak: 8",
        ),
        (
            "      method: qlora\n      quantize_bits: 3",
            "pipe.yaml:10:7",
            "`quantize_bits`: must be 4 or 8, got 3",
            "10 |       quantize_bits: 3",
        ),
        (
            "      learning_rate: -0.001",
            "pipe.yaml:9:7",
            "`learning_rate`: must be positive",
            "9 |       learning_rate: -0.001",
        ),
        (
            "      micro_batch: 3",
            "pipe.yaml:9:7",
            "does not divide the effective batch of 4 rows",
            "9 |       micro_batch: 3",
        ),
        (
            "      optimizer:\n        betas: [0.9, 1.5]",
            "pipe.yaml:10:9",
            "`optimizer.betas`: both must be in [0, 1)",
            "10 |         betas: [0.9, 1.5]",
        ),
        (
            "      activation_cache:\n        enabled: yes-please",
            "pipe.yaml:10:9",
            "`activation_cache.enabled`",
            "10 |         enabled: yes-please",
        ),
    ];
    for (line, at, message, quoted) in cases {
        let err = invalid(&train_with(line));
        assert!(err.contains(at), "{line}: {err}");
        assert!(err.contains(message), "{line}: {err}");
        assert!(err.contains(quoted), "{line}: {err}");
        assert!(err.contains("| "), "a caret line: {err}");
    }
    let err = invalid(&train_with("      lora:\n        rnak: 8"));
    assert!(err.contains("did you mean `rank`?"), "{err}");
}

#[test]
fn a_template_rendered_inside_with_keeps_its_position() {
    let err = invalid(
        "params:\n  rank: 0\nstages:\n  t:\n    kind: train\n    params: [rank]\n    with:\n      model: m\n      train_data: in.txt\n      out_dir: never.out\n      lora:\n        rank: \"{{ params.rank }}\"\n",
    );
    assert!(err.contains("pipe.yaml:12:9"), "{err}");
    assert!(err.contains("`lora.rank`: must be at least 1"), "{err}");
}

#[test]
fn pipe_train_config_reports_bad_options_at_their_line() {
    let ws = Ws::new();
    ws.file(
        "job.yaml",
        "model: m\ntrain_data: in.txt\nout_dir: never.out\nlora:\n  dropout: 1.5\n",
    );
    let out = ws
        .pipe()
        .args(["train", "--config", "job.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("job.yaml:5:3"), "{err}");
    assert!(
        err.contains("`lora.dropout`: must be in [0, 1), got 1.5"),
        "{err}"
    );
}

#[test]
fn unknown_param_and_bad_set() {
    let err = invalid(
        "params:\n  train:\n    lr: 1\nstages:\n  a:\n    cmd: echo\n    params: [train.rl]\n",
    );
    assert!(
        err.contains("reads param `train.rl`, which is not defined"),
        "{err}"
    );
    assert!(err.contains("did you mean `train.lr`?"), "{err}");
    let ws = Ws::new();
    ws.pipeline("params:\n  train:\n    lr: 1\nstages:\n  a:\n    cmd: echo\n");
    let out = ws
        .pipe()
        .args(["run", "--set", "train.lrr=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `train.lr`?"));
}

#[test]
fn all_problems_are_listed_at_once() {
    let err = invalid(
        "stages:\n  a:\n    cmd: echo\n    dpes: [x]\n  b:\n    cmd: echo\n    needs: [zz]\n",
    );
    assert!(err.contains("dpes") && err.contains("zz"), "{err}");
    assert!(err.contains("2 problems found; nothing was run"), "{err}");
}

#[test]
fn extends_merges_a_preset() {
    let ws = Ws::new();
    ws.file(
        "stages/copy.yaml",
        "cmd: cp in.txt preset.out\ndeps: [in.txt]\n",
    )
    .file("in.txt", "x\n")
    .pipeline("stages:\n  a:\n    extends: copy\n    outs: [preset.out]\n");
    ws.run_ok(&[]);
    assert_eq!(ws.read("preset.out"), "x\n");
    ws.pipeline("stages:\n  a:\n    extends: cpy\n    cmd: echo\n");
    let out = ws.pipe().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `copy`?"));
}

/// Every shipped pipeline (with the stage presets it extends) loads and validates: `pipe
/// dag` parses it, checks every stage's `with:` and builds the graph.
#[test]
fn every_shipped_pipeline_validates() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = Ws::new();
    for preset in std::fs::read_dir(repo.join("stages")).unwrap() {
        let path = preset.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        ws.file(
            &format!("stages/{name}"),
            &std::fs::read_to_string(&path).unwrap(),
        );
    }
    let mut shipped = Vec::new();
    for dir in ["pipelines", "pipelines/sweeps", "pipelines/examples"] {
        for entry in std::fs::read_dir(repo.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let rel = path
                    .strip_prefix(repo)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                ws.file(&rel, &std::fs::read_to_string(&path).unwrap());
                shipped.push(rel);
            }
        }
    }
    assert!(
        shipped.contains(&"pipelines/sweeps/tune-lora.yaml".to_owned()),
        "{shipped:?}"
    );
    for rel in &shipped {
        let out = ws.pipe().args(["dag", rel]).output().unwrap();
        assert!(
            out.status.success(),
            "{rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_built_in_kind_with_a_cmd_is_refused() {
    let err = invalid(
        "stages:\n  i:\n    kind: ingest\n    cmd: echo hi > never.out\n    with: {source: in.txt, out: never.out}\n",
    );
    assert!(err.contains("pipe.yaml:4:5"), "{err}");
    assert!(
        err.contains("has `kind: ingest`; `cmd` belongs to command stages"),
        "{err}"
    );
}

#[test]
fn pipe_train_config_takes_every_option_a_train_stage_takes() {
    // `tokens`, `params_file`, `batch_size: auto` and `rank: auto` are read and merged; the
    // run then stops at the first thing it needs that is missing, the tokens folder.
    let ws = Ws::new();
    ws.file("best.yaml", "learning_rate: 0.0003\niters: 7\n").file(
        "job.yaml",
        "model: smollm2-135m-instruct\ntokens: tok\nout_dir: never.out\nbatch_size: auto\nlora: {rank: auto}\nparams_file: best.yaml\n",
    );
    let out = ws
        .pipe()
        .args(["train", "--config", "job.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("for 7 steps"),
        "the params file was merged: {err}"
    );
    assert!(err.contains("tok/manifest.json"), "{err}");
    assert!(
        err.contains("is `tokens` a tokenize stage's out folder?"),
        "{err}"
    );
    assert!(!ws.exists("never.out"));
}
