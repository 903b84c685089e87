//! Kills at random moments (issue #18, item 1): the kill harness's checks
//! ([`crate::reliability_kill`]) after a SIGKILL whose moment is drawn at random over the
//! length of an uninterrupted run, of `pipe` or of the running stage's own process:
//!
//! - the command pipeline of the fixed-point harness, with no gate: many kills, cheap;
//! - a real training pipeline (SmolLM2-135M-Instruct, 8 LoRA steps, then a command that
//!   digests the adapter): a killed training is never taken as done, and the next run
//!   trains again to the same adapter bytes as an uninterrupted run (training is
//!   deterministic for a seed on this backend; `metrics.json` and the step log hold
//!   timings, so the weights, the adapter config and the digest are what is compared).
//!
//! The moments come from a fixed seed, so a failure names a round that can be replayed.
//! `PIPE_KILL_ROUNDS=N` multiplies the rounds (default 1: 20 command kills and 3 training
//! kills per CI run) for a longer run by hand; each test prints one line of figures.

use crate::reliability_kill as harness;
use crate::support::Ws;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SplitMix64: the moments and targets of the kills, from a fixed seed.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A moment in `[0, span)`.
    fn within(&mut self, span: Duration) -> Duration {
        span.mul_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn rounds() -> usize {
    std::env::var("PIPE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// What a kill round found, for the figures line.
#[derive(Default)]
struct Tally {
    kills: usize,
    of_stage: usize,
    finished_before: usize,
    reran: usize,
}

/// Starts `run`, waits `after`, and SIGKILLs `pipe`, or (when `stages` are given and one
/// of their processes is running by then) that stage's process. Returns whether a stage's
/// process was the one killed, and the stages the journal had finished at that moment.
fn kill_during(
    ws: &Ws,
    mut run: Command,
    after: Duration,
    stages: Option<&[&str]>,
) -> (bool, BTreeSet<String>) {
    let mut child: Child = run
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let target = stages.and_then(|names| {
        names
            .iter()
            .find_map(|s| harness::stage_process(ws, s).filter(|&p| harness::alive(p)))
    });
    let finished = harness::finished_in_journal(ws);
    let of_stage = match target {
        // The group may have just ended; then this kill lands on nothing, as a late one would.
        // SAFETY: kill(2) on the stage leader's pid, read from pipe's own record.
        Some(pgid) => (unsafe { libc::kill(pgid as i32, libc::SIGKILL) }) == 0,
        None => {
            // SAFETY: kill(2) on the child this test started (maybe already exited: ESRCH).
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            false
        }
    };
    child.wait().unwrap();
    (of_stage, finished)
}

/// The checks after a kill: lock parses, cache sound, the next run completes without
/// rerunning what had finished, nothing of the killed run left running, no temporary file.
fn after_kill(ws: &Ws, next: Command, finished: &BTreeSet<String>, what: &str) -> BTreeSet<String> {
    if ws.exists("pipe.lock") {
        serde_yaml::from_str::<serde_yaml::Value>(&ws.read("pipe.lock"))
            .unwrap_or_else(|e| panic!("{what}: pipe.lock does not parse: {e}"));
    }
    let verify = ws.pipe().args(["cache", "verify"]).output().unwrap();
    assert!(
        verify.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    harness::objects_are_sound(ws);
    let mut next = next;
    let out = next.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: next run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage-finish")
        .map(|e| e["stage"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ran.is_disjoint(finished),
        "{what}: stages that had finished ran again: {ran:?} (finished: {finished:?})"
    );
    let left = harness::processes_of(ws.dir.path());
    assert!(
        left.is_empty(),
        "{what}: processes of the killed run still running: {left:?}"
    );
    let temps = harness::temporary_files(ws);
    assert!(temps.is_empty(), "{what}: temporary files left: {temps:?}");
    ran
}

#[test]
fn random_kills_of_a_command_pipeline() {
    let started = Instant::now();
    let reference = harness::reference();
    // The length of an uninterrupted run, measured here, is the span the moments cover.
    let span = {
        let ws = harness::workspace();
        let t = Instant::now();
        assert!(
            harness::pipe_run(&ws, false)
                .output()
                .unwrap()
                .status
                .success()
        );
        t.elapsed().mul_f64(1.2)
    };
    let mut moments = Moments(0x5eed_0001);
    let mut tally = Tally::default();
    for round in 0..20 * rounds() {
        let ws = harness::workspace();
        let after = moments.within(span);
        // A third of the kills are of whichever stage's process is running at that moment.
        let target = moments
            .next()
            .is_multiple_of(3)
            .then_some(&harness::STAGES[..]);
        let what = format!(
            "round {round}: kill at {after:?} of {}",
            if target.is_some() { "a stage" } else { "pipe" }
        );
        let (of_stage, finished) = kill_during(&ws, harness::pipe_run(&ws, false), after, target);
        tally.reran += after_kill(&ws, harness::pipe_run(&ws, false), &finished, &what).len();
        for (out, want) in harness::OUTS.iter().zip(&reference) {
            assert_eq!(
                &ws.read(out),
                want,
                "{what}: {out} differs from an uninterrupted run"
            );
        }
        tally.kills += 1;
        tally.of_stage += usize::from(of_stage);
        tally.finished_before += finished.len();
    }
    eprintln!(
        "random kills of the command pipeline: {} survived ({} of a stage's process), {} stages finished before a kill, {} rerun after; span {span:?}; {:.0?} in all",
        tally.kills,
        tally.of_stage,
        tally.finished_before,
        tally.reran,
        started.elapsed()
    );
}

/// The model the tests train: SmolLM2 by id, or the GGUF `PIPE_SMOLLM2_GGUF` names.
fn model() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

/// Four training and two validation rows.
fn training_workspace() -> Ws {
    let ws = Ws::new();
    let row = |(v, p): &(&str, &str)| {
        format!("{{\"prompt\": \"Past tense of {v}?\", \"completion\": \"{p}\"}}\n")
    };
    let verbs = [
        ("walk", "walked"),
        ("jump", "jumped"),
        ("play", "played"),
        ("look", "looked"),
        ("call", "called"),
        ("open", "opened"),
    ];
    let model = model();
    ws.file(
        "data/train.jsonl",
        &verbs[..4].iter().map(row).collect::<String>(),
    )
    .file(
        "data/valid.jsonl",
        &verbs[4..].iter().map(row).collect::<String>(),
    )
    .pipeline(&format!(
        r#"stages:
  train:
    kind: train
    with:
      model: "{model}"
      train_data: data/train.jsonl
      valid_data: data/valid.jsonl
      out_dir: adapter
      lora: {{rank: 4, num_layers: 2}}
      learning_rate: 1.0e-4
      iters: 8
      batch_size: 2
      max_seq_len: 64
  digest:
    cmd: sha256sum adapter/adapters.safetensors > digest.txt
    deps: [adapter]
    outs: [digest.txt]
"#
    ));
    ws
}

const TRAINED: [&str; 3] = [
    "adapter/adapters.safetensors",
    "adapter/adapter_config.json",
    "digest.txt",
];

fn run_training(ws: &Ws) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    c.args(["run", "--json"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1");
    c
}

#[test]
fn random_kills_of_a_real_training_pipeline() {
    let started = Instant::now();
    let (reference, span) = {
        let ws = training_workspace();
        let t = Instant::now();
        let out = run_training(&ws).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let span = t.elapsed().mul_f64(1.1);
        let files: Vec<Vec<u8>> = TRAINED
            .iter()
            .map(|f| std::fs::read(ws.path(f)).unwrap())
            .collect();
        (files, span)
    };
    let mut moments = Moments(0x5eed_0002);
    let mut tally = Tally::default();
    for round in 0..3 * rounds() {
        let ws = training_workspace();
        let after = moments.within(span);
        // Every other kill is of the training process itself (pipe-mlx), pipe alive.
        let target = (round % 2 == 1).then_some(&["train"][..]);
        let what = format!(
            "round {round}: kill at {after:?} of {}",
            if target.is_some() {
                "the training"
            } else {
                "pipe"
            }
        );
        let (of_stage, finished) = kill_during(&ws, run_training(&ws), after, target);
        if !finished.contains("train") {
            let status = ws.pipe().args(["status", "--json"]).output().unwrap();
            let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
            let train = status["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == "train")
                .unwrap();
            assert_ne!(
                train["state"], "up-to-date",
                "{what}: an unfinished training looks done"
            );
        }
        tally.reran += after_kill(&ws, run_training(&ws), &finished, &what).len();
        for (file, want) in TRAINED.iter().zip(&reference) {
            assert!(
                std::fs::read(ws.path(file)).unwrap() == *want,
                "{what}: {file} differs from an uninterrupted run's"
            );
        }
        tally.kills += 1;
        tally.of_stage += usize::from(of_stage);
        tally.finished_before += finished.len();
    }
    eprintln!(
        "random kills of a SmolLM2 training pipeline: {} survived ({} of the training process), {} stages finished before a kill, {} rerun after; span {span:?}; {:.0?} in all",
        tally.kills,
        tally.of_stage,
        tally.finished_before,
        tally.reran,
        started.elapsed()
    );
}

/// `pipe train --config` killed at a random moment, then run again with `--resume`: it
/// continues from the last checkpoint it kept (or starts over when the kill came before
/// the first), its step log reads as one run, and its losses are the uninterrupted run's.
#[test]
fn random_kills_of_pipe_train_then_resume_continue_the_curve() {
    let started = Instant::now();
    let ws_for = || {
        let ws = training_workspace();
        let model = model();
        ws.file(
            "job.yaml",
            &format!(
                "model: \"{model}\"\ntrain_data: data/train.jsonl\nvalid_data: data/valid.jsonl\nout_dir: out\nlora: {{rank: 4, num_layers: 2}}\nlearning_rate: 1.0e-4\niters: 8\nsave_every: 2\nbatch_size: 2\nmax_seq_len: 64\n"
            ),
        );
        ws
    };
    let train = |ws: &Ws, resume: bool| {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
        c.args(["train", "--config", "job.yaml"])
            .current_dir(ws.dir.path())
            .env("NO_COLOR", "1");
        if resume {
            c.arg("--resume");
        }
        c
    };
    let losses = |ws: &Ws| -> Vec<(u64, f64)> {
        pipe_engine::stages::train::read_step_log(&ws.path("out/train_log.jsonl"))
            .unwrap()
            .iter()
            .map(|r| (r.step, r.loss))
            .collect()
    };
    let (expected, span) = {
        let ws = ws_for();
        let t = Instant::now();
        let out = train(&ws, false).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (losses(&ws), t.elapsed().mul_f64(1.1))
    };
    assert_eq!(expected.len(), 8);
    let mut moments = Moments(0x5eed_0003);
    let mut resumed_from = Vec::new();
    for round in 0..3 * rounds() {
        let ws = ws_for();
        let after = moments.within(span);
        let mut child = train(&ws, false)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < after && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: kill(2) on the child this test started (maybe already exited: ESRCH).
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let kept = std::fs::read_to_string(ws.path("out/checkpoint/state.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s["step"].as_u64())
            .unwrap_or(0);
        let what = format!("round {round}: killed at {after:?}, checkpoint at step {kept}");
        let out = train(&ws, true).output().unwrap();
        assert!(
            out.status.success(),
            "{what}: --resume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = losses(&ws);
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>(),
            "{what}: the step log must read as one run"
        );
        for ((step, want), (_, have)) in expected.iter().zip(&got) {
            assert!(
                (want - have).abs() < 1e-5,
                "{what}: step {step}: uninterrupted {want}, resumed {have}"
            );
        }
        let temps = harness::temporary_files(&ws);
        assert!(temps.is_empty(), "{what}: temporary files left: {temps:?}");
        resumed_from.push(kept);
    }
    eprintln!(
        "random kills of pipe train, then --resume: {} survived, resumed from steps {resumed_from:?}; span {span:?}; {:.0?} in all",
        resumed_from.len(),
        started.elapsed()
    );
}

/// A tune stage with train trials (two SmolLM2 trainings of 4 steps), killed at random
/// moments: no trial that had finished is lost (the next run reuses every trial the study
/// journal held at the kill), and the study ends as an uninterrupted one does.
#[test]
fn random_kills_of_a_real_tune_stage_lose_no_finished_trial() {
    let started = Instant::now();
    let ws_for = || {
        let ws = training_workspace();
        let model = model();
        ws.pipeline(&format!(
            r#"stages:
  search:
    kind: tune
    with:
      out: search
      space:
        learning_rate: {{float: [1.0e-4, 1.0e-3], log: true}}
      objective: {{metric: train.final_valid_loss, mode: min}}
      budget: {{n_trials: 2, iters: 4}}
      trial:
        train:
          model: "{model}"
          train_data: data/train.jsonl
          valid_data: data/valid.jsonl
          lora: {{rank: 4, num_layers: 1}}
          batch_size: 2
          max_seq_len: 64
"#
        ));
        ws
    };
    let study = |ws: &Ws| -> Vec<serde_json::Value> {
        ws.read("search/trials.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Trial keys the study journal names: the trials that finished.
    let journaled = |ws: &Ws| -> BTreeSet<String> {
        let dir = ws.path("cache/tune/v1/studies");
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .flat_map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                            .filter_map(|v| v["key"].as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (reference, span) = {
        let ws = ws_for();
        let t = Instant::now();
        let out = run_training(&ws).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            (study(&ws), ws.read("search/best.yaml")),
            t.elapsed().mul_f64(1.1),
        )
    };
    let (reference, best) = reference;
    assert_eq!(reference.len(), 2);
    let mut moments = Moments(0x5eed_0004);
    let (mut kills, mut kept) = (0, 0);
    for round in 0..2 * rounds() {
        let ws = ws_for();
        let after = moments.within(span);
        let (_, finished) = kill_during(&ws, run_training(&ws), after, None);
        let done_before = journaled(&ws);
        let what = format!(
            "round {round}: kill at {after:?}, {} trials finished",
            done_before.len()
        );
        let ran = after_kill(&ws, run_training(&ws), &finished, &what);
        let trials = study(&ws);
        assert_eq!(trials.len(), 2, "{what}");
        for (t, want) in trials.iter().zip(&reference) {
            assert_eq!(
                (&t["params"], &t["value"]),
                (&want["params"], &want["value"]),
                "{what}"
            );
            let key = t["key"].as_str().unwrap();
            // A stage whose outs the killed run stored is up to date, not rerun: its
            // trials are the killed run's own.
            if ran.contains("search") && done_before.contains(key) {
                assert_eq!(t["reused"], true, "{what}: finished trial {key} ran again");
            }
        }
        assert_eq!(ws.read("search/best.yaml"), best, "{what}");
        kills += 1;
        if ran.contains("search") {
            kept += done_before.len();
        }
    }
    eprintln!(
        "random kills of a tune stage with SmolLM2 train trials: {kills} survived, {kept} finished trials reused by the run after a kill; span {span:?}; {:.0?} in all",
        started.elapsed()
    );
}
