//! Standard test functions with known minima, and the regret study that compares Bayesian
//! optimisation with random search on them (issue #7). The optimiser's tests, the CLI tests
//! (through command trials) and `examples/tune_regret.rs` (the tables in BENCHMARKS.md) all
//! use these definitions, so the three agree on what is measured.
//!
//! *Regret* of a run is the best value it found minus the function's global minimum: 0 is
//! perfect, and it is comparable across optimisers at the same budget.
//!
//! - **Branin-Hoo** (2-D) on `x1 ∈ [-5, 10]`, `x2 ∈ [0, 15]`: minimum 0.397887 at three
//!   points, e.g. `(π, 2.275)`.
//! - **Hartmann-6** on `[0, 1]⁶`: minimum -3.32237 at
//!   `(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)`; several local minima
//!   (Dixon & Szegő 1978; constants as in Surjanovic & Bingham's library of test functions).
//! - **Shifted Rosenbrock** (4-D) on `[-2, 2]⁴`: `Σ_{i<4} 100 (z_{i+1} - z_i²)² + (1 - z_i)²`
//!   with `z = x - c + 1`, so the minimum 0 is at `x = c = (1.2, -0.9, 1.4, -1.3)` instead of
//!   `(1, 1, 1, 1)`: unit coordinates `(0.8, 0.275, 0.85, 0.175)`, away from the centre of the
//!   box on every axis, so a search drawn to the middle gains nothing. A narrow curved valley
//!   in a range of values up to ~10⁴.

use super::space::{Point, Space};
use super::suggest::{Direction, Observation, Optimizer, Settings, Suggester, default_initial};
use serde_json::{Map, Value, json};

/// A test function on a box, with its known global minimum.
#[derive(Debug, Clone, Copy)]
pub struct Benchmark {
    /// Short name (`branin`, `hartmann6`, `rosenbrock4`).
    pub name: &'static str,
    /// `[low, high]` of each coordinate `x1, x2, ...`.
    pub bounds: &'static [(f64, f64)],
    /// The global minimum.
    pub minimum: f64,
    /// A point where it is reached.
    pub argmin: &'static [f64],
    f: fn(&[f64]) -> f64,
}

/// Branin-Hoo (see the module doc).
pub const BRANIN: Benchmark = Benchmark {
    name: "branin",
    bounds: &[(-5.0, 10.0), (0.0, 15.0)],
    minimum: 0.397_887,
    argmin: &[std::f64::consts::PI, 2.275],
    f: branin,
};

/// Hartmann-6 (see the module doc).
pub const HARTMANN6: Benchmark = Benchmark {
    name: "hartmann6",
    bounds: &[(0.0, 1.0); 6],
    minimum: -3.32237,
    argmin: &[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573],
    f: hartmann6,
};

/// Where the shifted Rosenbrock function has its minimum.
pub const ROSENBROCK_SHIFT: [f64; 4] = [1.2, -0.9, 1.4, -1.3];

/// The shifted 4-D Rosenbrock function (see the module doc).
pub const ROSENBROCK4: Benchmark = Benchmark {
    name: "rosenbrock4",
    bounds: &[(-2.0, 2.0); 4],
    minimum: 0.0,
    argmin: &ROSENBROCK_SHIFT,
    f: rosenbrock4,
};

/// Every benchmark, in the order of the tables.
pub const ALL: [Benchmark; 3] = [BRANIN, HARTMANN6, ROSENBROCK4];

fn branin(x: &[f64]) -> f64 {
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x[1] - b * x[0] * x[0] + c * x[0] - 6.0).powi(2) + 10.0 * (1.0 - t) * x[0].cos() + 10.0
}

fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6)
                .map(|j| A[i][j] * (x[j] - 1e-4 * P[i][j]).powi(2))
                .sum();
            ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

fn rosenbrock4(x: &[f64]) -> f64 {
    let z: Vec<f64> = x
        .iter()
        .zip(ROSENBROCK_SHIFT)
        .map(|(x, c)| x - c + 1.0)
        .collect();
    z.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

impl Benchmark {
    /// The search space: one float parameter `x1, x2, ...` per coordinate.
    pub fn space(&self) -> Space {
        let params: Map<String, Value> = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, (lo, hi))| (format!("x{}", i + 1), json!({"float": [lo, hi]})))
            .collect();
        Space::from_json(&Value::Object(params)).expect("the benchmark spaces are valid")
    }

    /// The function at coordinates `x`.
    pub fn eval(&self, x: &[f64]) -> f64 {
        (self.f)(x)
    }

    /// The function at a point of [`Benchmark::space`] (its parameters are sorted by name,
    /// and there are at most 9, so `x1, x2, ...` stay in coordinate order).
    pub fn value(&self, point: &Point) -> f64 {
        let x: Vec<f64> = point
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        self.eval(&x)
    }

    /// The regret of a run whose best value is `best`.
    pub fn regret(&self, best: f64) -> f64 {
        best - self.minimum
    }
}

/// The best value `optimizer` finds on `bench` in `budget` sequential trials from `seed`,
/// with the settings the tune stage uses (the default initial design for Bayesian
/// optimisation).
pub fn best_value(bench: &Benchmark, optimizer: Optimizer, seed: u64, budget: usize) -> f64 {
    let space = bench.space();
    let initial = default_initial(space.params.len());
    let settings = Settings::new(Direction::Min, seed, initial).with_optimizer(optimizer);
    let suggester = Suggester::new(space, settings);
    let mut done: Vec<Observation> = Vec::with_capacity(budget);
    for index in 0..budget {
        let Some((point, _)) = suggester.suggest(index, &done, &[]) else {
            break; // only a finite space runs out; these are continuous
        };
        let value = bench.value(&point);
        done.push(Observation {
            point,
            value: Some(value),
        });
    }
    done.iter()
        .filter_map(|o| o.value)
        .fold(f64::INFINITY, f64::min)
}

/// Regrets of Bayesian optimisation and random search, one per seed, on one benchmark at
/// one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The benchmark's name.
    pub name: &'static str,
    /// Trials per run.
    pub budget: usize,
    /// Regret of Bayesian optimisation, per seed.
    pub gp: Vec<f64>,
    /// Regret of random search, per seed.
    pub random: Vec<f64>,
}

impl Comparison {
    /// Runs both optimisers on `bench` with `budget` trials for each seed in `seeds`.
    pub fn run(bench: &Benchmark, budget: usize, seeds: std::ops::Range<u64>) -> Self {
        let regrets = |optimizer| {
            seeds
                .clone()
                .map(|seed| bench.regret(best_value(bench, optimizer, seed, budget)))
                .collect()
        };
        Self {
            name: bench.name,
            budget,
            gp: regrets(Optimizer::Gp),
            random: regrets(Optimizer::Random),
        }
    }

    /// Seeds on which Bayesian optimisation found a strictly lower value.
    pub fn gp_wins(&self) -> usize {
        self.gp
            .iter()
            .zip(&self.random)
            .filter(|(g, r)| g < r)
            .count()
    }

    /// One row of [`TABLE_HEADER`].
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            self.name,
            self.budget,
            self.gp.len(),
            fmt(mean(&self.gp)),
            fmt(median(&self.gp)),
            fmt(mean(&self.random)),
            fmt(median(&self.random)),
            self.gp_wins(),
            self.gp.len()
        )
    }
}

/// The header of a regret table ([`Comparison::markdown_row`] gives its rows).
pub const TABLE_HEADER: &str = "| function | budget | seeds | GP-EI mean regret | GP-EI median | random mean regret | random median | GP-EI wins |\n|---|---|---|---|---|---|---|---|";

fn fmt(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// The arithmetic mean (NaN for none).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The median: the middle value, or the mean of the two middle values (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each function takes its stated minimum at its stated point, and nothing lower on a
    /// dense random sample of its box (a wrong constant would show as a negative regret).
    #[test]
    fn minima_are_where_the_literature_puts_them() {
        use rand::{Rng, SeedableRng};
        for b in ALL {
            let at = b.eval(b.argmin);
            assert!((at - b.minimum).abs() < 1e-5, "{}: {at}", b.name);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            for _ in 0..20_000 {
                let x: Vec<f64> = b
                    .bounds
                    .iter()
                    .map(|(lo, hi)| rng.random_range(*lo..=*hi))
                    .collect();
                assert!(b.eval(&x) >= b.minimum - 1e-6, "{} at {x:?}", b.name);
            }
        }
        // Branin's other two minima.
        for x in [[-std::f64::consts::PI, 12.275], [9.42478, 2.475]] {
            assert!((BRANIN.eval(&x) - BRANIN.minimum).abs() < 1e-5);
        }
        // The shift moved Rosenbrock's minimum: the unshifted one is no longer optimal.
        assert!(ROSENBROCK4.eval(&[1.0; 4]) > 100.0);
        // A point of the space maps to coordinates in order.
        let space = HARTMANN6.space();
        let p = space.from_unit(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        assert_eq!(
            HARTMANN6.value(&p),
            HARTMANN6.eval(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        );
    }

    /// GP-EI against random search over seeds 0..10 at one budget: the mean regret of GP-EI
    /// (the arithmetic mean over seeds) must be below `ratio` times random search's, and
    /// GP-EI must find the lower value on at least `wins` of the 10 seeds. Everything is
    /// seeded, so the outcome is the same on every run; the margins are set well inside
    /// what the current optimiser achieves (see BENCHMARKS.md for the figures).
    fn assert_gp_beats_random(bench: &Benchmark, budget: usize, ratio: f64, wins: usize) {
        let c = Comparison::run(bench, budget, 0..10);
        let (gp, random) = (mean(&c.gp), mean(&c.random));
        let report = format!(
            "{}: GP-EI regrets {:?}, random {:?}",
            bench.name, c.gp, c.random
        );
        assert!(
            gp < ratio * random,
            "mean regret {gp} is not below {ratio} x {random}; {report}"
        );
        assert!(c.gp_wins() >= wins, "{} wins; {report}", c.gp_wins());
    }

    /// Branin, 20 trials (4 from the Latin hypercube): GP-EI's mean regret is below a tenth
    /// of random search's.
    #[test]
    fn gp_beats_random_search_on_branin() {
        assert_gp_beats_random(&BRANIN, 20, 0.1, 9);
    }

    /// Hartmann-6, 40 trials (12 from the Latin hypercube): below half, and ahead on 8 of 10
    /// seeds.
    #[test]
    fn gp_beats_random_search_on_hartmann6() {
        assert_gp_beats_random(&HARTMANN6, 40, 0.5, 8);
    }

    /// Hartmann-6 at 30 trials, the budget of issue #20: GP-EI's mean regret over seeds
    /// 0..10 is at most 0.25 (what state-of-the-art GP optimisers reach there), and no
    /// seed is left in a poor local basin (regret above 1, where 4 of these 10 seeds
    /// ended before the length-scale bounds, design size and incumbent starts changed).
    #[test]
    fn hartmann6_at_30_trials_gets_close_to_the_minimum_on_every_seed() {
        let regrets: Vec<f64> = (0..10)
            .map(|seed| HARTMANN6.regret(best_value(&HARTMANN6, Optimizer::Gp, seed, 30)))
            .collect();
        assert!(mean(&regrets) <= 0.25, "mean of {regrets:?}");
        assert!(regrets.iter().all(|r| *r < 1.0), "{regrets:?}");
    }

    /// The shifted Rosenbrock, 40 trials (8 from the Latin hypercube): below half, and ahead
    /// on 8 of 10 seeds. (At 20 trials GP-EI still loses here; BENCHMARKS.md shows it.)
    #[test]
    fn gp_beats_random_search_on_shifted_rosenbrock() {
        assert_gp_beats_random(&ROSENBROCK4, 40, 0.5, 8);
    }

    #[test]
    fn statistics_and_the_table_row() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        let c = Comparison {
            name: "f",
            budget: 10,
            gp: vec![0.1, 0.0002],
            random: vec![0.05, 1.0],
        };
        assert_eq!(c.gp_wins(), 1);
        assert_eq!(
            c.markdown_row(),
            "| f | 10 | 2 | 0.0501 | 0.0501 | 0.5250 | 0.5250 | 1/2 |"
        );
    }
}
