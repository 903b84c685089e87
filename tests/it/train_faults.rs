//! Training faults through `pipe train --config` on the real SmolLM2-135M-Instruct (a few
//! steps of batch 2 on six verbs): a learning rate that makes the model collapse, a NaN
//! loss, a damaged checkpoint and a memory budget far too small each end with one clear
//! message and exit 1 (2 for a job file error); the last good checkpoint is kept, and
//! `--resume` continues from it with the loss curve of an uninterrupted run (issue #18,
//! items 5 and 7).

use crate::support::Ws;
use pipe_engine::stages::train::read_step_log;

fn model() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

/// Six training and two validation verbs.
fn data(ws: &Ws) {
    let rows = |verbs: &[(&str, &str)]| -> String {
        verbs
            .iter()
            .map(|(v, p)| {
                format!("{{\"prompt\": \"Past tense of {v}?\", \"completion\": \"{p}\"}}\n")
            })
            .collect()
    };
    ws.file(
        "train.jsonl",
        &rows(&[
            ("walk", "walked"),
            ("jump", "jumped"),
            ("play", "played"),
            ("look", "looked"),
            ("call", "called"),
            ("open", "opened"),
        ]),
    );
    ws.file(
        "valid.jsonl",
        &rows(&[("talk", "talked"), ("help", "helped")]),
    );
}

/// A job file training into `out` with `extra` options.
fn job(ws: &Ws, out: &str, extra: &str) {
    ws.file(
        "job.yaml",
        &format!(
            "model: \"{}\"\ntrain_data: train.jsonl\nvalid_data: valid.jsonl\nout_dir: {out}\nlora: {{rank: 4, num_layers: 2}}\nbatch_size: 2\nmax_seq_len: 64\n{extra}",
            model()
        ),
    );
}

/// `pipe train --config job.yaml [args]`: exit code and stderr.
fn train(ws: &Ws, args: &[&str]) -> (i32, String) {
    let out = ws
        .pipe()
        .args(["train", "--config", "job.yaml"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn losses(ws: &Ws, out: &str) -> Vec<(u64, f64)> {
    read_step_log(&ws.path(&format!("{out}/train_log.jsonl")))
        .unwrap()
        .iter()
        .map(|r| (r.step, r.loss))
        .collect()
}

fn checkpoint_step(ws: &Ws, out: &str) -> u64 {
    let state: serde_json::Value =
        serde_json::from_str(&ws.read(&format!("{out}/checkpoint/state.json"))).unwrap();
    state["step"].as_u64().unwrap()
}

/// lr 1e3 sends SmolLM2's loss from 4.5 to 45 and then to 10.80, a uniform guess over its
/// 49,152 tokens, where it stays; the factor rule alone let all 12 steps run (found
/// 2026-12-04). Now the run stops within a few steps and says why.
#[test]
fn a_learning_rate_far_too_high_stops_early_with_advice() {
    let ws = Ws::new();
    data(&ws);
    job(&ws, "out", "iters: 12\nlearning_rate: 1.0e+3\n");
    let (code, err) = train(&ws, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("uniform guess"), "{err}");
    assert!(err.contains("try a lower learning rate (now 1e3)"), "{err}");
    assert!(err.contains("this run kept no checkpoint"), "{err}");
    let steps = losses(&ws, "out").len();
    assert!(steps < 6, "stopped after {steps} of 12 steps:\n{err}");
    assert!(!ws.exists("out/metrics.json"), "no summary of a failed run");
}

/// A NaN loss at the step it happens, the checkpoint before it kept (not the one saved
/// after the update that broke the weights), damaged checkpoints refused, and `--resume`
/// continuing from the good one with the uninterrupted run's losses.
#[test]
fn nan_keeps_the_last_good_checkpoint_and_resume_continues_the_curve() {
    let ws = Ws::new();
    data(&ws);
    job(&ws, "straight", "iters: 8\nsave_every: 2\n");
    let (code, err) = train(&ws, &[]);
    assert_eq!(code, 0, "{err}");
    let expected = losses(&ws, "straight");
    assert_eq!(expected.len(), 8);

    // Four good steps, then a resume at lr 1e30: step 5's update leaves finite but huge
    // weights (saved as the step-5 checkpoint), and step 6's loss is NaN.
    job(&ws, "out", "iters: 4\nsave_every: 2\n");
    assert_eq!(train(&ws, &[]).0, 0);
    assert_eq!(checkpoint_step(&ws, "out"), 4);
    job(
        &ws,
        "out",
        "iters: 8\nsave_every: 1\nlearning_rate: 1.0e+30\n",
    );
    let (code, err) = train(&ws, &["--resume"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the training loss became NaN at step 6"),
        "{err}"
    );
    assert!(
        err.contains("the last good checkpoint (step 4) is kept in") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        checkpoint_step(&ws, "out"),
        4,
        "the step-5 checkpoint gave NaN: rolled back"
    );
    assert!(!ws.exists("out/.checkpoint-old"));

    // A garbled checkpoint is refused with what to delete; the good copy is put back.
    let trainable = ws.path("out/checkpoint/trainable.safetensors");
    let good = std::fs::read(&trainable).unwrap();
    let mut garbled = good.clone();
    let middle = garbled.len() / 2;
    garbled[middle..middle + 64].fill(0x5a);
    std::fs::write(&trainable, &garbled).unwrap();
    let (code, err) = train(&ws, &["--resume"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is damaged") && err.contains("trainable.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("delete") && err.contains("to train from step 0"),
        "{err}"
    );
    std::fs::write(&trainable, &good[..good.len() / 3]).unwrap();
    let (code, err) = train(&ws, &["--resume"]);
    assert_eq!(code, 1, "truncated: {err}");
    assert!(err.contains("is damaged"), "{err}");
    std::fs::write(&trainable, &good).unwrap();

    // Resumed at a sane learning rate: steps 5-8 again, the log reads as one run.
    job(&ws, "out", "iters: 8\nsave_every: 2\n");
    let (code, err) = train(&ws, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    let got = losses(&ws, "out");
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    for ((step, want), (_, have)) in expected.iter().zip(&got) {
        assert!(
            (want - have).abs() < 1e-5,
            "step {step}: uninterrupted {want}, resumed {have}"
        );
    }
}

/// A budget far too small is refused before the first step; a budget nothing would
/// follow (a fixed split) is a job file error at its line.
#[test]
fn a_memory_budget_far_too_small_is_refused_before_training() {
    let ws = Ws::new();
    data(&ws);
    job(
        &ws,
        "out",
        "iters: 4\nmicro_batch: auto\nmemory_budget_mb: 1\n",
    );
    let (code, err) = train(&ws, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("more than the memory budget of 1 MiB; raise memory_budget_mb"),
        "{err}"
    );
    assert!(!ws.exists("out/train_log.jsonl"), "no step ran");

    job(&ws, "out", "iters: 4\nmemory_budget_mb: 1\n");
    let (code, err) = train(&ws, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("job.yaml:"), "{err}");
    assert!(err.contains("add `micro_batch: auto`"), "{err}");
}
