//! The `tune` kind with command trials: a Python objective tuned through `pipe run`,
//! finished trials reused after raising `n_trials` and after an interruption, the median
//! rule and successive halving pruning from intermediate values, `best.yaml` read downstream, and validation.

use crate::support::Ws;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A quadratic bowl with its minimum at x = 0.3, n = 7, kind = b. Every call appends a
/// line to calls.log (so tests count real runs); with STEPS set it reports a decreasing
/// intermediate value per step, then sleeps SLEEP seconds, or with WAIT_JUDGED waits until
/// pipe has judged that report (the `judged` file), so the pruning rule sees every report
/// while the trial runs, however fast or slow the machine.
/// Over the space, `kind` explains most of the variance (its offset 3 has variance 2,
/// against 0.31 for the `n` term and 0.02 for the `x` term), so it is the most important.
const OBJECTIVE: &str = r#"
import json, os, sys, time
p = json.load(open(os.environ["PIPE_TRIAL_PARAMS"]))
x, n, kind = p["x"], p["n"], p["kind"]
value = (x - 0.3) ** 2 + 0.05 * (n - 7) ** 2 + (0.0 if kind == "b" else 3.0)
with open("calls.log", "a") as f:
    f.write(json.dumps(p) + "\n")
steps = int(os.environ.get("STEPS", "0"))
for s in range(1, steps + 1):
    with open(os.path.join(os.environ["PIPE_TRIAL_DIR"], "intermediate.jsonl"), "a") as f:
        f.write(json.dumps({"step": s, "value": value + 1.0 / s}) + "\n")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    judged = os.path.join(os.environ["PIPE_TRIAL_DIR"], "judged")
    deadline = time.time() + 120
    while os.environ.get("WAIT_JUDGED") and int(open(judged).read() if os.path.exists(judged) else 0) < s:
        assert time.time() < deadline, "pipe never judged step %d" % s
        time.sleep(0.001)
assert sys.argv[1] == str(p["n"]), sys.argv
json.dump({"loss": value, "peak_memory_bytes": 1234}, open(os.path.join(os.environ["PIPE_TRIAL_DIR"], "metrics.json"), "w"))
"#;

fn pipeline(extra: &str) -> String {
    format!(
        r#"params:
  n_trials: 8
stages:
  search:
    kind: tune
    params: [n_trials]
    with:
      out: tune/bowl
      space:
        x: {{float: [0.0, 1.0]}}
        n: {{int: [1, 12]}}
        kind: {{choice: [a, b, c]}}
      objective: {{metric: loss, mode: min}}
      budget: {{n_trials: "{{{{ params.n_trials }}}}"}}
      seed: 1
{extra}      trial:
        cmd: python3 objective.py {{n}} --x={{x}}
        deps: [objective.py]
  use_best:
    cmd: cp tune/bowl/best.yaml chosen.yaml
    deps: [tune/bowl/best.yaml]
    outs: [chosen.yaml]
"#
    )
}

fn trials(ws: &Ws) -> Vec<Value> {
    ws.read("tune/bowl/trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn calls(ws: &Ws) -> usize {
    if ws.exists("calls.log") {
        ws.read("calls.log").lines().count()
    } else {
        0
    }
}

/// A report stage over the search's out folder.
const REPORT: &str = "  report:
    kind: report
    with: {tune: tune/bowl, out: reports/tune.html}
";

#[test]
fn command_trials_find_the_optimum_and_are_reused_when_n_trials_grows() {
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE)
        .pipeline(&(pipeline("") + REPORT));
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("search") && run.ran().contains("use_best"));
    let first = trials(&ws);
    assert_eq!(first.len(), 8);
    assert_eq!(calls(&ws), 8);
    for t in &first {
        assert_eq!(t["status"], "complete", "{t}");
        assert_eq!(t["reused"], false);
        assert_eq!(t["peak_memory_bytes"], 1234);
        assert!(t["seconds"].as_f64().unwrap() > 0.0);
    }
    // Raising n_trials reruns the stage, but only the new trials run.
    let run = ws.run_ok(&["--set", "n_trials=20"]);
    assert!(run.ran().contains("search"));
    let second = trials(&ws);
    assert_eq!(second.len(), 20);
    assert_eq!(calls(&ws), 20, "the first 8 trials were reused, not rerun");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["params"], b["params"]);
        assert_eq!(a["value"], b["value"]);
        assert_eq!(
            a["origin"], b["origin"],
            "how each point was chosen is kept"
        );
        assert_eq!(b["reused"], true);
    }
    assert!(second[8..].iter().all(|t| t["reused"] == false));
    // Later trials come from the GP, and the search closes in on the optimum.
    assert!(
        second[8..]
            .iter()
            .any(|t| t["origin"]["by"] == "expected-improvement")
    );
    let metrics: Value = serde_json::from_str(&ws.read("tune/bowl/metrics.json")).unwrap();
    let best = metrics["best_value"].as_f64().unwrap();
    assert!(best < 0.1, "best loss {best}: {metrics}");
    assert_eq!(metrics["trials"], 20);
    assert_eq!(metrics["reused"], 8);
    let best_yaml: Value = serde_yaml::from_str(&ws.read("tune/bowl/best.yaml")).unwrap();
    assert_eq!(best_yaml["kind"], "b", "{best_yaml:?}");
    assert_eq!(best_yaml, metrics["best_params"]);
    // The downstream stage read the new best.yaml.
    assert_eq!(ws.read("chosen.yaml"), ws.read("tune/bowl/best.yaml"));
    // Parameter importance: `kind` moves the objective most, and ranks first.
    let importance: Value = serde_json::from_str(&ws.read("tune/bowl/importance.json")).unwrap();
    assert_eq!(
        importance["method"], "first-order Sobol indices of the GP posterior mean",
        "{importance}"
    );
    assert_eq!(importance["status"], "estimated", "{importance}");
    assert_eq!(importance["trials"], 20);
    let ranked: Vec<&str> = importance["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ranked[0], "kind", "{importance}");
    assert_eq!(ranked.len(), 3, "one entry per parameter: {importance}");
    assert_eq!(
        metrics["importance"]["kind"], importance["params"][0]["importance"],
        "metrics.json summarises it"
    );
    assert_eq!(
        metrics["space"]["kind"]["choice"],
        serde_json::json!(["a", "b", "c"])
    );
    // The report's tuning section draws all 20 trials and the importance.
    let html = ws.read("reports/tune.html");
    let chart = &html[html.find("parallel coordinates:").unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert_eq!(chart.matches("<polyline").count(), 20);
    assert!(chart.contains(">kind<") && chart.contains(">loss<"));
    assert!(html.contains("Method: first-order Sobol indices of the GP posterior mean"));
    // Nothing changed: nothing runs.
    let run = ws.run_ok(&["--set", "n_trials=20"]);
    assert!(run.ran().is_empty(), "{:?}", run.ran());
    assert_eq!(calls(&ws), 20);
}

#[test]
fn an_interrupted_tune_reuses_the_trials_that_finished() {
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE).pipeline(&pipeline(""));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .current_dir(ws.dir.path())
        .args(["run", "--json"])
        .env("STEPS", "2")
        .env("SLEEP", "0.3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while calls(&ws) < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!ws.exists("tune/bowl/trials.jsonl"), "no half-written outs");
    let before = calls(&ws);
    assert!(
        (4..8).contains(&before),
        "{before} calls before the interrupt"
    );
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("search"));
    let t = trials(&ws);
    assert_eq!(t.len(), 8);
    let reused = t.iter().filter(|t| t["reused"] == true).count();
    // Trials that finished before the interrupt are reused; the one that was cut off
    // (if any) and the rest run now.
    assert!(reused >= before - 1, "{reused} reused of {before} started");
    assert_eq!(calls(&ws), before + (8 - reused));
}

/// Two tune stages whose trials have the same definition (a copy of the search with
/// another `out`), run at the same time: each trial runs once, in one of them, and the
/// other waits for it and takes its result; both studies end the same.
#[test]
fn two_tune_stages_running_at_once_share_their_trials() {
    let ws = Ws::new();
    let one = pipeline("");
    let search = &one[one.find("  search:").unwrap()..one.find("  use_best:").unwrap()];
    let twin = search
        .replace("  search:", "  twin:")
        .replace("out: tune/bowl", "out: tune/twin");
    ws.file("objective.py", OBJECTIVE)
        .pipeline(&format!("params:\n  n_trials: 8\nstages:\n{search}{twin}"));
    // Each trial takes a moment, so the two stages are mostly at the same trial together.
    let run = ws.run_env(&["-j", "2"], &[("SLEEP", "0.05"), ("STEPS", "1")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.ran().contains("search") && run.ran().contains("twin"));
    assert_eq!(calls(&ws), 8, "a trial ran twice");
    let read = |dir: &str| -> Vec<Value> {
        ws.read(&format!("tune/{dir}/trials.jsonl"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (read("bowl"), read("twin"));
    assert_eq!((a.len(), b.len()), (8, 8));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x["params"], &x["value"]), (&y["params"], &y["value"]));
        assert_eq!(x["status"], "complete", "{x}");
        // Ran by exactly one of the two stages.
        assert_ne!(x["reused"], y["reused"], "{x}\n{y}");
    }
    ws.pipe().args(["cache", "verify"]).assert().success();
}

/// Runs the pipeline with command trials that report `steps` intermediate values, each
/// waiting for pipe's verdict on it before the next, and expects success.
fn run_reporting_trials(ws: &Ws, steps: &str) {
    let out = ws
        .pipe()
        .args(["run", "--json"])
        .env("STEPS", steps)
        .env("WAIT_JUDGED", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_median_rule_prunes_trials_from_their_intermediate_values() {
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE)
        .pipeline(&pipeline("      prune: {min_trials: 2, warmup_steps: 2}\n"));
    run_reporting_trials(&ws, "6");
    let t = trials(&ws);
    let pruned: Vec<&Value> = t.iter().filter(|t| t["status"] == "pruned").collect();
    assert!(!pruned.is_empty(), "nothing pruned: {t:#?}");
    for p in &pruned {
        assert_eq!(p["pruned"], true);
        assert!(p["value"].is_null());
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains("worse than the median"), "{reason}");
        let steps = p["intermediate"].as_array().unwrap().len();
        assert!(
            (2..=6).contains(&steps),
            "checked after the warmup: {steps}"
        );
    }
    // The completed trials are the better ones: every pruned trial's final value would
    // have been worse than the best completed one.
    let best = t
        .iter()
        .filter_map(|t| t["value"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(best.is_finite());
    let metrics: Value = serde_json::from_str(&ws.read("tune/bowl/metrics.json")).unwrap();
    assert_eq!(metrics["pruned"], pruned.len());
}

#[test]
fn successive_halving_prunes_at_the_rungs_and_records_why() {
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE).pipeline(&pipeline(
        "      prune: {rule: halving, min_resource: 1, eta: 2}\n",
    ));
    run_reporting_trials(&ws, "4");
    let t = trials(&ws);
    // The first trial has nothing to lose to at any rung.
    assert_eq!(t[0]["status"], "complete", "{:#}", t[0]);
    let pruned: Vec<&Value> = t.iter().filter(|t| t["status"] == "pruned").collect();
    assert!(!pruned.is_empty(), "nothing pruned: {t:#?}");
    for p in &pruned {
        assert!(p["value"].is_null());
        let reason = p["reason"].as_str().unwrap();
        // The trial stopped at the report that reached a rung (steps 1, 2, 4), and the
        // reason names that rung, the trial's value there and the cutoff it missed.
        let reports = p["intermediate"].as_array().unwrap();
        let last = reports.last().unwrap();
        let step = last[0].as_u64().unwrap();
        let rung = [1, 2, 4]
            .iter()
            .position(|s| *s == step)
            .expect("a rung step");
        let value = last[1].as_f64().unwrap();
        assert!(
            reason.starts_with(&format!(
                "rung {rung} (step {step}): value {value:.4} is not in the top 1/2 of the "
            )),
            "{reason}"
        );
        let cutoff: f64 = reason
            .split("cutoff ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(cutoff < value, "{reason}");
        // The cutoff is a value another trial recorded at the same rung.
        let recorded = t.iter().any(|o| {
            !std::ptr::eq(o, *p)
                && o["intermediate"].as_array().unwrap().iter().any(|r| {
                    r[0].as_u64() == Some(step)
                        && format!("{:.4}", r[1].as_f64().unwrap()) == format!("{cutoff:.4}")
                })
        });
        assert!(
            recorded,
            "cutoff {cutoff} not recorded at step {step}: {t:#?}"
        );
    }
    let metrics: Value = serde_json::from_str(&ws.read("tune/bowl/metrics.json")).unwrap();
    assert_eq!(metrics["pruned"], pruned.len());

    // Under another rule, a point pruned by the old one runs again; a completed point is
    // reused. Under the same rule, pruned trials are reused like the rest.
    let status_of: std::collections::BTreeMap<String, Value> = t
        .iter()
        .map(|t| (t["key"].as_str().unwrap().to_owned(), t["status"].clone()))
        .collect();
    ws.pipeline(&pipeline(
        "      prune: {rule: halving, min_resource: 2, eta: 2}\n",
    ));
    run_reporting_trials(&ws, "4");
    let again = trials(&ws);
    let mut seen = (0, 0);
    for trial in &again {
        match status_of
            .get(trial["key"].as_str().unwrap())
            .and_then(Value::as_str)
        {
            Some("pruned") => {
                assert_eq!(trial["reused"], false, "{trial:#}");
                seen.0 += 1;
            }
            Some("complete") => {
                assert_eq!(trial["reused"], true, "{trial:#}");
                seen.1 += 1;
            }
            _ => {}
        }
    }
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "no point of the first study came back: {seen:?}"
    );
    let calls_before = calls(&ws);
    ws.pipeline(
        &pipeline("      prune: {rule: halving, min_resource: 2, eta: 2}\n")
            .replace("n_trials: 8", "n_trials: 9"),
    );
    run_reporting_trials(&ws, "4");
    let more = trials(&ws);
    assert!(more[..8].iter().all(|t| t["reused"] == true), "{more:#?}");
    assert_eq!(calls(&ws), calls_before + 1, "only the new trial ran");
}

#[test]
fn bad_tune_options_fail_before_anything_runs() {
    for (bad, want) in [
        (
            "        cmd: python3 objective.py {nn}\n",
            "unknown placeholder `{nn}`",
        ),
        (
            "        cmd: python3 objective.py\n        train: {model: m}\n",
            "not both",
        ),
        (
            "        cmd: python3 objective.py {n}\n      prune: {rule: halving, min_resource: 2, min_trials: 3}\n",
            "unknown field `min_trials`",
        ),
    ] {
        let ws = Ws::new();
        let yaml = pipeline("").replace(
            "        cmd: python3 objective.py {n} --x={x}\n        deps: [objective.py]\n",
            bad,
        );
        ws.file("objective.py", OBJECTIVE).pipeline(&yaml);
        let run = ws.run(&[]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("pipe.yaml:"), "{}", run.stderr);
        assert!(run.stderr.contains(want), "{}", run.stderr);
        assert_eq!(calls(&ws), 0);
    }
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE)
        .pipeline(&pipeline("").replace(
            "x: {float: [0.0, 1.0]}",
            "x: {float: [0.0, 1.0], log: true}",
        ));
    let run = ws.run(&[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("space `x`") && run.stderr.contains("positive lower bound"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failing_objective_is_recorded_and_the_stage_fails_when_none_completes() {
    let ws = Ws::new();
    ws.file(
        "objective.py",
        "import sys\nprint('diverged at step 3')\nsys.exit(3)\n",
    )
    .pipeline(&pipeline("").replace("n_trials: 8", "n_trials: 2"));
    let run = ws.run(&[]);
    assert_eq!(run.code, 1);
    let log = ws.read("cache/logs/pipe/search.log");
    assert!(
        log.contains("failed (it exited with status 3; its log ends: diverged at step 3)"),
        "{log}"
    );
    assert!(log.contains("no trial completed (of 2)"), "{log}");
}

/// `enqueue`: the configuration a user already has is trial 0, as given; the design
/// follows; a point the space cannot hold is refused before anything runs.
#[test]
fn an_enqueued_configuration_is_the_first_trial() {
    let ws = Ws::new();
    ws.file("objective.py", OBJECTIVE).pipeline(
        &pipeline("      enqueue:\n        - {x: 0.25, n: 6, kind: b}\n")
            .replace("n_trials: 8", "n_trials: 4"),
    );
    ws.run_ok(&[]);
    let trials = trials(&ws);
    assert_eq!(trials.len(), 4);
    assert_eq!(
        trials[0]["params"],
        serde_json::json!({"x": 0.25, "n": 6, "kind": "b"})
    );
    assert_eq!(trials[0]["origin"]["by"], "enqueued");
    // (0.25 - 0.3)² + 0.05 × 1²
    assert!((trials[0]["value"].as_f64().unwrap() - 0.0525).abs() < 1e-9);
    assert!(
        trials[1..]
            .iter()
            .all(|t| t["origin"]["by"] == "latin-hypercube")
    );

    for (bad, want) in [
        (
            "{x: 2.0, n: 6, kind: b}",
            "`enqueue[0]`: `x: 2.0` is outside its range",
        ),
        ("{x: 0.5, kind: b}", "`enqueue[0]`: `n` is missing"),
    ] {
        let ws = Ws::new();
        ws.file("objective.py", OBJECTIVE)
            .pipeline(&pipeline(&format!("      enqueue:\n        - {bad}\n")));
        let run = ws.run(&[]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(want), "{}", run.stderr);
        assert_eq!(calls(&ws), 0);
    }
}
