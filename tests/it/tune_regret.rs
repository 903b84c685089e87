//! Issue #7: GP-EI against random search through the whole tune stage. `pipe run` runs a
//! pipeline whose tune stages evaluate Branin, Hartmann-6 and a shifted Rosenbrock as
//! command trials (an awk script writing the metric), each function with both optimizers
//! over three seeds at the same budget (a matrix), and the regrets are read back from
//! `trials.jsonl`. The functions and their minima are `pipe_engine::tune::benchmarks`, which also
//! checks every value the script reported, so a mistake in either copy fails the test.

use crate::support::Ws;
use pipe_engine::tune::benchmarks::{BRANIN, Benchmark, HARTMANN6, ROSENBROCK4, mean, median};
use serde_json::Value;

pub(crate) const SEEDS: [u64; 3] = [0, 1, 2];

/// The three functions, as in `src/tune/benchmarks.rs`, in awk: it starts in about a
/// millisecond, where a Python interpreter takes tens (hundreds behind a pyenv shim), and
/// these tests start one per trial, 600 in all. `f` names the function, `x1, x2, ...` are
/// the trial's parameters (`-v` from placeholders), and the metric goes to the trial folder.
const OBJECTIVE: &str = r#"
BEGIN {
    if (f == "branin") {
        pi = atan2(0, -1)
        b = 5.1 / (4 * pi * pi); c = 5 / pi; t = 1 / (8 * pi)
        v = (x2 - b * x1 * x1 + c * x1 - 6) ^ 2 + 10 * (1 - t) * cos(x1) + 10
    } else if (f == "hartmann6") {
        split("1.0 1.2 3.0 3.2", alpha, " ")
        split("10 3 17 3.5 1.7 8 0.05 10 17 0.1 8 14 3 3.5 1.7 10 17 8 17 8 0.05 10 0.1 14", a, " ")
        split("1312 1696 5569 124 8283 5886 2329 4135 8307 3736 1004 9991 2348 1451 3522 2883 3047 6650 4047 8828 8732 5743 1091 381", p, " ")
        x[1] = x1; x[2] = x2; x[3] = x3; x[4] = x4; x[5] = x5; x[6] = x6
        v = 0
        for (i = 0; i < 4; i++) {
            s = 0
            for (j = 1; j <= 6; j++) s += a[i * 6 + j] * (x[j] - 1e-4 * p[i * 6 + j]) ^ 2
            v -= alpha[i + 1] * exp(-s)
        }
    } else if (f == "rosenbrock4") {
        split("1.2 -0.9 1.4 -1.3", shift, " ")
        x[1] = x1; x[2] = x2; x[3] = x3; x[4] = x4
        for (i = 1; i <= 4; i++) z[i] = x[i] - shift[i] + 1
        v = 0
        for (i = 1; i < 4; i++) v += 100 * (z[i + 1] - z[i] ^ 2) ^ 2 + (1 - z[i]) ^ 2
    } else {
        print "unknown function " f > "/dev/stderr"; exit 1
    }
    printf "{\"value\": %.17g}\n", v > (ENVIRON["PIPE_TRIAL_DIR"] "/metrics.json")
}
"#;

/// A tune stage for `bench`, expanded over `optimizers` and `seeds`, with `extra` (a line
/// of `with:`, or nothing).
fn stage(
    bench: &Benchmark,
    budget: usize,
    optimizers: &[&str],
    seeds: &[u64],
    extra: &str,
) -> String {
    let space: Vec<String> = bench
        .bounds
        .iter()
        .enumerate()
        .map(|(i, (lo, hi))| format!("x{}: {{float: [{lo:?}, {hi:?}]}}", i + 1))
        .collect();
    let vars: Vec<String> = (1..=bench.bounds.len())
        .map(|i| format!("-v x{i}={{x{i}}}"))
        .collect();
    format!(
        r#"  {name}:
    kind: tune
    matrix:
      optimizer: {optimizers:?}
      seed: {seeds:?}
    with:
      out: "tune/{name}-{{{{ matrix.optimizer }}}}-{{{{ matrix.seed }}}}"
      space: {{{space}}}
      objective: {{metric: value, mode: min}}
      budget: {{n_trials: {budget}}}
      seed: "{{{{ matrix.seed }}}}"
      optimizer: "{{{{ matrix.optimizer }}}}"
      {extra}
      trial:
        cmd: awk -v f={name} {vars} -f objective.awk
        deps: [objective.awk]
"#,
        name = bench.name,
        space = space.join(", "),
        vars = vars.join(" "),
    )
}

/// Runs the pipeline for `bench` with each of `optimizers` ("gp", "random") over `seeds`
/// and returns the regrets, one list per optimizer with one per seed, after checking every
/// trial.
pub(crate) fn regrets_of(
    bench: &Benchmark,
    budget: usize,
    optimizers: &[&str],
    seeds: &[u64],
    extra: &str,
) -> Vec<Vec<f64>> {
    let ws = Ws::new();
    ws.file("objective.awk", OBJECTIVE).pipeline(&format!(
        "stages:\n{}",
        stage(bench, budget, optimizers, seeds, extra)
    ));
    let run = ws.run_ok(&[]);
    assert_eq!(
        run.ran().len(),
        optimizers.len() * seeds.len(),
        "{:?}",
        run.ran()
    );
    let space = bench.space();
    let mut out = Vec::new();
    for optimizer in optimizers {
        let mut regrets = Vec::new();
        for &seed in seeds {
            let trials: Vec<Value> = ws
                .read(&format!(
                    "tune/{}-{optimizer}-{seed}/trials.jsonl",
                    bench.name
                ))
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(trials.len(), budget);
            let mut best = f64::INFINITY;
            for t in &trials {
                assert_eq!(t["status"], "complete", "{t}");
                let point: Vec<Value> = space
                    .params
                    .iter()
                    .map(|p| t["params"][&p.name].clone())
                    .collect();
                assert!(space.contains(&point), "{t}");
                let value = t["value"].as_f64().unwrap();
                let want = bench.value(&point);
                assert!(
                    (value - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{}: the script says {value}, the Rust definition {want}",
                    bench.name
                );
                best = best.min(value);
            }
            let by: Vec<&str> = trials
                .iter()
                .map(|t| t["origin"]["by"].as_str().unwrap())
                .collect();
            if *optimizer == "random" {
                assert!(by.iter().all(|b| *b == "random"), "{by:?}");
            } else {
                assert_eq!(by[0], "latin-hypercube");
                assert!(by.contains(&"expected-improvement"), "{by:?}");
            }
            regrets.push(bench.regret(best));
        }
        out.push(regrets);
    }
    out
}

/// The regrets of (GP-EI, random) over [`SEEDS`].
fn regrets(bench: &Benchmark, budget: usize) -> (Vec<f64>, Vec<f64>) {
    let mut both = regrets_of(bench, budget, &["gp", "random"], &SEEDS, "");
    let out = (both.remove(0), both.remove(0));
    eprintln!(
        "{} at {budget}: GP-EI regrets {:?} (mean {:.4}, median {:.4}); random {:?} (mean {:.4}, median {:.4})",
        bench.name,
        out.0,
        mean(&out.0),
        median(&out.0),
        out.1,
        mean(&out.1),
        median(&out.1)
    );
    out
}

/// GP-EI's mean regret over the seeds is below `ratio` times random search's, and it found
/// the lower value on at least two of the three seeds. All seeded: the same every run.
pub(crate) fn assert_gp_beats_random(name: &str, (gp, random): (Vec<f64>, Vec<f64>), ratio: f64) {
    let wins = gp.iter().zip(&random).filter(|(g, r)| g < r).count();
    assert!(
        mean(&gp) < ratio * mean(&random),
        "{name}: mean regret {} is not below {ratio} x {}",
        mean(&gp),
        mean(&random)
    );
    assert!(wins >= 2, "{name}: GP-EI ahead on {wins} of 3 seeds");
}

#[test]
fn gp_beats_random_search_on_branin_through_command_trials() {
    assert_gp_beats_random("branin", regrets(&BRANIN, 20), 0.1);
}

#[test]
fn gp_beats_random_search_on_hartmann6_through_command_trials() {
    assert_gp_beats_random("hartmann6", regrets(&HARTMANN6, 40), 0.5);
}

#[test]
fn gp_beats_random_search_on_shifted_rosenbrock_through_command_trials() {
    assert_gp_beats_random("rosenbrock4", regrets(&ROSENBROCK4, 40), 0.5);
}

/// Issue #20: Hartmann-6 at 30 trials, seeds 0..10, GP-EI only. The mean regret is at most
/// 0.25 (about what state-of-the-art GP optimisers reach at this budget; before the fix it
/// was 0.83 with 4 seeds above 1.0), and no seed ends above 1.0.
#[test]
fn hartmann6_at_30_trials_ends_near_the_minimum_through_command_trials() {
    let seeds: Vec<u64> = (0..10).collect();
    let gp = regrets_of(&HARTMANN6, 30, &["gp"], &seeds, "").remove(0);
    eprintln!(
        "hartmann6 at 30: GP-EI regrets {gp:?} (mean {:.4}, median {:.4})",
        mean(&gp),
        median(&gp)
    );
    assert!(mean(&gp) <= 0.25, "mean regret {} of {gp:?}", mean(&gp));
    assert!(
        gp.iter().all(|r| *r < 1.0),
        "a seed stuck in a local basin: {gp:?}"
    );
}
