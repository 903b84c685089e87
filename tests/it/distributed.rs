//! Data-parallel training over MLX distributed (issue #19, item 1), on SmolLM2-135M-Instruct
//! and MLX's ring backend over loopback:
//!
//! - `distributed: {ranks: 2}` gives the loss curve, validation losses and adapter of one
//!   process at the same global batch and seed (within float rounding: the ranks sum their
//!   gradients in another order), with one writer: one step log, one adapter, one result;
//! - a rank killed mid-run makes the run end at once, naming the rank, with no process left;
//! - the launchers users already have start `pipe train` unchanged: MLX's own `mlx.launch`,
//!   and `srun -n 2` on a real Slurm node.
//!
//! Dropout is 0 here: each rank draws masks for its own rows, so with dropout the curves
//! agree in distribution, not step by step.

use crate::support::Ws;
use mlx_rs::Array;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn model() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

const VERBS: [(&str, &str); 10] = [
    ("walk", "walked"),
    ("jump", "jumped"),
    ("play", "played"),
    ("look", "looked"),
    ("call", "called"),
    ("open", "opened"),
    ("go", "went"),
    ("see", "saw"),
    ("eat", "ate"),
    ("run", "ran"),
];

/// Eight training and two validation rows, and `job.yaml` training on them for `iters`
/// steps of 4 rows into `out_dir`, with `extra` lines appended.
fn workspace(iters: u64, extra: &str) -> Ws {
    let ws = Ws::new();
    let row = |(v, p): &(&str, &str)| {
        format!("{{\"prompt\": \"Past tense of {v}?\", \"completion\": \"{p}\"}}\n")
    };
    ws.file(
        "data/train.jsonl",
        &VERBS[..8].iter().map(row).collect::<String>(),
    )
    .file(
        "data/valid.jsonl",
        &VERBS[8..].iter().map(row).collect::<String>(),
    )
    .file("job.yaml", &format!("{}{extra}", job(iters)));
    ws
}

fn job(iters: u64) -> String {
    format!(
        "model: \"{}\"\ntrain_data: data/train.jsonl\nvalid_data: data/valid.jsonl\nout_dir: out\n\
         lora: {{rank: 4, num_layers: 2, dropout: 0.0}}\nlearning_rate: 1.0e-3\niters: {iters}\n\
         valid_every: 3\nbatch_size: 4\nmax_seq_len: 64\nseed: 3\n",
        model()
    )
}

/// A one-process run of [`workspace`]`(iters, extra)`: what ranks must reproduce.
fn trained_alone(iters: u64, extra: &str) -> Ws {
    let alone = workspace(iters, extra);
    output_ok(&mut pipe_train(&alone), "pipe train alone");
    alone
}

/// A pipeline whose train stage is [`job`]`(iters)` on 2 ranks, into `adapter`.
fn two_rank_stage(iters: u64) -> String {
    format!(
        "stages:\n  train:\n    kind: train\n    with:\n{}      out_dir: adapter\n      distributed: {{ranks: 2}}\n",
        job(iters)
            .lines()
            .filter(|l| !l.starts_with("out_dir"))
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    )
}

/// `ws`'s run in `dir` has the curve and the adapter of `alone`'s (in `out`).
fn assert_same_training(alone: &Ws, ws: &Ws, dir: &str) {
    assert_same_curve(&curve(alone, "out"), &curve(ws, dir));
    assert_same_adapter(&alone.path("out"), &ws.path(dir));
}

fn pipe_train(ws: &Ws) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    c.args(["train", "--config", "job.yaml"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1");
    c
}

fn output_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (step, loss, valid loss) of each logged step.
fn curve(ws: &Ws, dir: &str) -> Vec<(u64, f64, Option<f64>)> {
    pipe_engine::stages::train::read_step_log(&ws.path(&format!("{dir}/train_log.jsonl")))
        .unwrap()
        .iter()
        .map(|r| (r.step, r.loss, r.valid_loss))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(1.0)
}

fn assert_same_curve(one: &[(u64, f64, Option<f64>)], two: &[(u64, f64, Option<f64>)]) {
    assert_eq!(
        one.len(),
        two.len(),
        "one step log line per step:\n{one:?}\n{two:?}"
    );
    for ((s1, l1, v1), (s2, l2, v2)) in one.iter().zip(two) {
        assert_eq!(s1, s2);
        assert!(close(*l1, *l2), "step {s1}: loss {l1} alone, {l2} on ranks");
        match (v1, v2) {
            (Some(a), Some(b)) => assert!(close(*a, *b), "step {s1}: valid {a} vs {b}"),
            (None, None) => {}
            _ => panic!("step {s1}: validation ran in one run only"),
        }
    }
    assert!(
        one.last().unwrap().1 < one[0].1 * 0.8,
        "the runs compared must learn something: {one:?}"
    );
}

/// Every adapter tensor of `a` and `b` agrees within float rounding.
fn assert_same_adapter(a: &std::path::Path, b: &std::path::Path) {
    let load =
        |p: &std::path::Path| Array::load_safetensors(p.join("adapters.safetensors")).unwrap();
    let (a, b) = (load(a), load(b));
    let mut keys: Vec<_> = a.keys().collect();
    keys.sort();
    assert_eq!(keys.len(), b.len(), "the same tensors");
    assert!(!keys.is_empty());
    for key in keys {
        let (x, y) = (&a[key], &b[key]);
        assert_eq!(x.shape(), y.shape(), "{key}");
        let diff = x.subtract(y).unwrap().abs().unwrap().max(None).unwrap();
        let scale = x.abs().unwrap().max(None).unwrap();
        let (diff, scale) = (diff.item_exact::<f32>(), scale.item_exact::<f32>());
        assert!(
            diff <= 1e-4 * scale.max(1e-3),
            "{key}: max difference {diff} (largest value {scale})"
        );
    }
}

#[test]
fn two_local_ranks_train_the_curve_and_adapter_of_one_process_with_one_writer() {
    // One process.
    let alone = trained_alone(6, "");

    // `pipe train` with two ranks: one result on stdout, from rank 0.
    let ranks = workspace(6, "distributed: {ranks: 2}\n");
    let out = output_ok(pipe_train(&ranks).arg("--json"), "pipe train on 2 ranks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON document on stdout ({e}): {stdout}"));
    assert_eq!(report["steps"], 6, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("on 2 ranks").count(),
        1,
        "one announcement:\n{stderr}"
    );
    assert_same_training(&alone, &ranks, "out");

    // A train stage of `pipe run` with two ranks: the same, through the stage's process.
    let staged = workspace(6, "");
    staged.pipeline(&two_rank_stage(6));
    let run = staged.run_ok(&[]);
    assert!(run.ran().contains("train"), "{:?}", run.events);
    assert_same_training(&alone, &staged, "adapter");
    let again = staged.run_ok(&[]);
    assert!(again.ran().is_empty(), "a second run is a no-op");
}

#[test]
fn a_batch_that_the_ranks_cannot_split_is_refused_at_its_line() {
    let ws = workspace(2, "distributed: {ranks: 3}\n");
    let out = pipe_train(&ws).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("distributed.ranks")
            && stderr.contains("batch_size of 4")
            && stderr.contains("multiple of 3"),
        "{stderr}"
    );
}

/// The pids of running processes whose environment has `MLX_RANK=rank` and whose command
/// line names `dir`.
fn rank_processes(dir: &std::path::Path, rank: usize) -> Vec<u32> {
    let want_env = format!("MLX_RANK={rank}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cwd.as_deref() == Some(dir)
                && env.split(|&b| b == 0).any(|v| v == want_env.as_bytes())
                && crate::reliability_kill::alive(*pid)
        })
        .collect()
}

#[test]
fn a_rank_that_dies_ends_the_run_at_once_naming_it() {
    let ws = workspace(200, "distributed: {ranks: 2}\n");
    let dir = ws.dir.path().canonicalize().unwrap();
    let mut child = pipe_train(&ws)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Kill rank 1 once training is under way (a step is logged).
    let victim = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        let log = ws.path("out/train_log.jsonl");
        if std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2) {
            let pids = rank_processes(&dir, 1);
            assert_eq!(pids.len(), 1, "one rank 1: {pids:?}");
            break pids[0];
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    pipe_engine::process::signal(victim, pipe_engine::process::Signal::Kill).unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the run hangs after a rank died"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rank 1 of 2 was killed by signal 9")
            && stderr.contains("the other ranks were stopped"),
        "{stderr}"
    );
    assert!(rank_processes(&dir, 0).is_empty(), "rank 0 is gone too");
    assert!(
        curve(&ws, "out").len() < 200,
        "the run did not go on training"
    );
}

#[test]
fn mlx_launch_starts_pipe_train_as_two_ranks_unchanged() {
    let alone = trained_alone(6, "");
    let ws = workspace(6, "");
    let python = crate::mlx_lm_compat::mlx_lm_python();
    let pipe = assert_cmd::cargo::cargo_bin("pipe");
    // `python -m` rather than the venv's `mlx.launch` script, whose shebang names the
    // folder the venv was built in.
    let mut launch = Command::new(&python);
    launch
        .args(["-c", "import sys; from mlx._distributed_utils.launch import main; sys.argv[0] = 'mlx.launch'; sys.exit(main())"])
        .args(["-n", "2", "--backend", "ring", "--"])
        .arg(&pipe)
        .args(["train", "--config", "job.yaml"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1");
    let out = output_ok(&mut launch, "mlx.launch -n 2 -- pipe train");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("on 2 ranks"), "{stderr}");
    assert_same_training(&alone, &ws, "out");
}

#[test]
fn srun_starts_pipe_train_as_two_ranks_on_a_real_slurm_node() {
    let alone = trained_alone(6, "");
    let cluster = crate::slurm::Cluster::start();
    let ws = workspace(6, "");
    let pipe = assert_cmd::cargo::cargo_bin("pipe");
    let mut srun = cluster.command("srun");
    srun.args(["-n", "2", "--kill-on-bad-exit=1", "--time=10"])
        .arg(&pipe)
        .args(["train", "--config", "job.yaml"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1");
    let out = srun.output().unwrap();
    assert!(
        out.status.success(),
        "srun -n 2 pipe train failed ({}):\n{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("on 2 ranks").count(), 1, "{stderr}");
    assert_same_training(&alone, &ws, "out");
}

/// A command trial that sleeps a second, appends `index start end` to `ranks.log` and
/// scores (x - 0.3)².
const TRIAL: &str = r#"s=$(date +%s.%N)
sleep 1
echo "{\"value\": $(awk -v x=$1 'BEGIN{print (x-0.3)^2}')}" > "$PIPE_TRIAL_DIR/metrics.json"
echo "$PIPE_TRIAL_INDEX $s $(date +%s.%N)" >> ranks.log
"#;

fn tune_pipeline(n_trials: usize, ranks: Option<usize>) -> String {
    let distributed = ranks
        .map(|n| format!("      distributed: {{ranks: {n}}}\n"))
        .unwrap_or_default();
    format!(
        "stages:\n  search:\n    kind: tune\n    with:\n      out: tune/x\n      space: {{x: {{float: [0.0, 1.0]}}}}\n      objective: {{metric: value, mode: min}}\n      budget: {{n_trials: {n_trials}}}\n{distributed}      trial:\n        cmd: sh trial.sh {{x}}\n        deps: [trial.sh]\n"
    )
}

fn trials(ws: &Ws) -> Vec<serde_json::Value> {
    ws.read("tune/x/trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (start, end) of each trial by index, from `ranks.log`.
fn spans(ws: &Ws) -> std::collections::BTreeMap<usize, (f64, f64)> {
    ws.read("ranks.log")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_tune_stage_on_two_ranks_runs_two_trials_at_once_and_resumes_like_a_local_one() {
    let ws = Ws::new();
    ws.file("trial.sh", TRIAL)
        .pipeline(&tune_pipeline(6, Some(2)));
    ws.run_ok(&[]);
    let first = trials(&ws);
    assert_eq!(first.len(), 6);
    for (i, t) in first.iter().enumerate() {
        assert_eq!(t["index"], i, "{t}");
        assert_eq!(t["status"], "complete", "{t}");
    }
    // Each round's two trials ran at the same time, one per rank.
    let spans = spans(&ws);
    for round in 0..3 {
        let (a, b) = (spans[&(2 * round)], spans[&(2 * round + 1)]);
        assert!(
            a.0 < b.1 && b.0 < a.1,
            "trials {} and {} did not overlap: {a:?} {b:?}",
            2 * round,
            2 * round + 1
        );
    }
    // Only rank 0 reports: one progress line per trial in the stage's log.
    let log = ws.read("cache/logs/pipe/search.log");
    for i in 0..6 {
        assert_eq!(
            log.matches(&format!("trial {i} (")).count(),
            1,
            "trial {i} reported once:\n{log}"
        );
    }
    let best = first
        .iter()
        .map(|t| t["value"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(best < 0.01, "the search closed in on x = 0.3: {best}");

    // The journal rank 0 wrote resumes the study: more trials over ranks, then locally.
    ws.pipeline(&tune_pipeline(8, Some(2)));
    ws.run_ok(&[]);
    let more = trials(&ws);
    assert_eq!(more.len(), 8);
    assert!(more[..6].iter().all(|t| t["reused"] == true), "{more:?}");
    assert_eq!(
        more[..6].iter().map(|t| &t["key"]).collect::<Vec<_>>(),
        first.iter().map(|t| &t["key"]).collect::<Vec<_>>()
    );
    ws.pipeline(&tune_pipeline(9, None));
    ws.run_ok(&[]);
    let local = trials(&ws);
    assert_eq!(local.len(), 9);
    assert!(local[..8].iter().all(|t| t["reused"] == true), "{local:?}");
    assert_eq!(
        ws.read("ranks.log").lines().count(),
        9,
        "no trial ran twice"
    );
}

/// The margins of `tune_regret`'s local tests (Branin at 20 trials, Hartmann-6 at 40), with
/// the GP proposing two points per round.
#[test]
fn gp_on_two_ranks_keeps_its_lead_over_random_search_on_branin_and_hartmann6() {
    use crate::tune_regret::{SEEDS, assert_gp_beats_random, regrets_of};
    use pipe_engine::tune::benchmarks::{BRANIN, Benchmark, HARTMANN6};
    let check = |bench: &Benchmark, budget: usize, ratio: f64| {
        let gp = regrets_of(bench, budget, &["gp"], &SEEDS, "distributed: {ranks: 2}").remove(0);
        let random = regrets_of(bench, budget, &["random"], &SEEDS, "").remove(0);
        eprintln!(
            "{} at {budget} over 2 ranks: GP-EI regrets {gp:?}; random {random:?}",
            bench.name
        );
        assert_gp_beats_random(&format!("{} over 2 ranks", bench.name), (gp, random), ratio);
    };
    check(&BRANIN, 20, 0.1);
    check(&HARTMANN6, 40, 0.5);
}

/// `pipe run --executor slurm`: a train stage with ranks is one job of two tasks, each a
/// rank started by `srun`, and leaves the adapter one process trains.
#[test]
fn a_train_stage_with_ranks_runs_as_one_slurm_job_of_two_tasks() {
    let alone = trained_alone(6, "");
    let cluster = crate::slurm::Cluster::start();
    let ws = workspace(6, "");
    ws.pipeline(&two_rank_stage(6));
    let conf = cluster.conf();
    let run = ws.run_env(
        &["--executor", "slurm"],
        &[("SLURM_CONF", conf.to_str().unwrap())],
    );
    assert_eq!(
        run.code,
        0,
        "{}\n{:#?}\n{}",
        run.stderr,
        run.events,
        cluster.logs()
    );
    let log = ws.read("cache/logs/pipe/train.log");
    let job = log
        .lines()
        .find_map(|l| l.strip_prefix("pipe: stage `train` is Slurm job "))
        .unwrap_or_else(|| panic!("no job id in the log:\n{log}"))
        .trim()
        .to_owned();
    let record = cluster.job_record(&job);
    assert!(record.contains("NumTasks=2"), "{record}");
    assert_same_training(&alone, &ws, "adapter");
}

/// A two-rank `pipe train` killed after its first checkpoint, then run again with
/// `--resume`: both ranks take up rank 0's checkpoint and finish on the curve (and with the
/// adapter) of one uninterrupted process.
#[test]
fn two_ranks_resume_a_killed_run_on_the_curve_of_one_uninterrupted_process() {
    let alone = trained_alone(9, "save_every: 3\n");
    let ws = workspace(9, "save_every: 3\ndistributed: {ranks: 2}\n");
    let dir = ws.dir.path().canonicalize().unwrap();
    let mut child = pipe_train(&ws)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ws.exists("out/checkpoint/state.json") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint was written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "it ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = Instant::now();
    while !(rank_processes(&dir, 0).is_empty() && rank_processes(&dir, 1).is_empty()) {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "ranks outlived their launcher"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(curve(&ws, "out").len() < 9, "the kill came before the end");
    output_ok(
        pipe_train(&ws).arg("--resume"),
        "pipe train --resume on 2 ranks",
    );
    assert_same_training(&alone, &ws, "out");
}
