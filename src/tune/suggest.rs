//! Choosing the next trial: a Latin hypercube first, then Bayesian optimisation.
//!
//! 1. The first `initial` trials take the points of a maximin Latin hypercube drawn once
//!    from the seed, so they do not depend on results (and replay identically).
//! 2. Afterwards a [`Gp`] is fitted on every finished trial. Failed and pruned trials carry
//!    no final value; they enter as the worst value seen so far, so the model learns to
//!    stay away from them instead of proposing them again. Trials still running enter as
//!    the model's own prediction ("kriging believer"), so parallel trials spread out.
//! 3. The next point maximises log expected improvement below the best value: it is
//!    evaluated at `candidates` quasi-random valid points, and the best few are refined by
//!    coordinate search over [`Space::neighbours`] (floats by shrinking steps, integers by
//!    ±1 and larger jumps, categoricals by trying every other choice). The acquisition is
//!    only ever evaluated at valid points, so discrete parameters are optimised over
//!    their own set rather than rounded afterwards.
//! 4. Points already tried (or running) are never proposed again; when a finite space has
//!    no untried point left, the search is exhausted.
//!
//! Every random choice comes from a generator seeded with `(seed, trial index)`, so given
//! the same finished trials the same point comes out: that is what lets a rerun with a
//! larger `n_trials` find its first trials in the cache.

use super::acquisition::log_expected_improvement;
use super::design::{halton, latin_hypercube};
use super::gp::Gp;
use super::space::{Point, Space};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Whether smaller or larger objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Direction {
    /// `value` turned into something to minimise.
    pub fn to_min(self, value: f64) -> f64 {
        match self {
            Direction::Min => value,
            Direction::Max => -value,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.to_min(a) < self.to_min(b)
    }
}

/// A finished trial as the optimiser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The parameters it ran with.
    pub point: Point,
    /// Its objective; `None` for failed or pruned trials.
    pub value: Option<f64>,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Trials taken from the Latin hypercube before the GP is used.
    pub initial: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Quasi-random candidates scored per suggestion.
    pub candidates: usize,
    /// Best candidates refined by local search.
    pub refine: usize,
    /// Starting points of the hyperparameter fit.
    pub restarts: usize,
    /// Smaller or larger is better.
    pub direction: Direction,
}

impl Settings {
    /// Defaults for a space with `features` GP features.
    pub fn new(direction: Direction, seed: u64, initial: usize) -> Self {
        Self {
            initial,
            seed,
            candidates: 1024,
            refine: 4,
            restarts: 3,
            direction,
        }
    }
}

/// How a point was chosen (recorded with each trial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Origin {
    /// The `index`-th point of the initial design.
    LatinHypercube {
        /// Position in the design.
        index: usize,
    },
    /// A random untried point (a design point was a duplicate, or too few trials finished
    /// to fit a model).
    Random,
    /// The maximiser of log expected improvement.
    ExpectedImprovement {
        /// Its log EI.
        log_ei: f64,
        /// The GP's predicted objective there.
        predicted: f64,
    },
}

/// The proposer of trials.
#[derive(Debug, Clone)]
pub struct Suggester {
    space: Space,
    settings: Settings,
    design: Vec<Vec<f64>>,
}

impl Suggester {
    /// A suggester over `space`.
    pub fn new(space: Space, settings: Settings) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let design = latin_hypercube(settings.initial, space.params.len(), 20, &mut rng);
        Self {
            space,
            settings,
            design,
        }
    }

    /// The space searched.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The point for trial `index`, given the finished trials and the points of trials
    /// still running; `None` when no untried point is left.
    pub fn suggest(
        &self,
        index: usize,
        done: &[Observation],
        running: &[Point],
    ) -> Option<(Point, Origin)> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.settings
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64 + 1),
        );
        let tried = |p: &Point| done.iter().any(|o| &o.point == p) || running.contains(p);
        if let Some(size) = self.space.size()
            && (done.len() + running.len()) as u64 >= size
        {
            return None;
        }
        if index < self.design.len() {
            let point = self.space.from_unit(&self.design[index]);
            if !tried(&point) {
                return Some((point, Origin::LatinHypercube { index }));
            }
        }
        let finished = done.iter().filter(|o| o.value.is_some()).count();
        if index >= self.design.len()
            && finished >= 2
            && let Some(found) = self.by_expected_improvement(done, running, &mut rng, &tried)
        {
            return Some(found);
        }
        self.random_untried(&mut rng, &tried)
            .map(|p| (p, Origin::Random))
    }

    fn random_untried(
        &self,
        rng: &mut ChaCha8Rng,
        tried: &dyn Fn(&Point) -> bool,
    ) -> Option<Point> {
        let shift: Vec<f64> = (0..self.space.params.len()).map(|_| rng.random()).collect();
        halton(self.settings.candidates.max(64) * 4, &shift)
            .into_iter()
            .map(|u| self.space.from_unit(&u))
            .find(|p| !tried(p))
    }

    fn by_expected_improvement(
        &self,
        done: &[Observation],
        running: &[Point],
        rng: &mut ChaCha8Rng,
        tried: &dyn Fn(&Point) -> bool,
    ) -> Option<(Point, Origin)> {
        let dir = self.settings.direction;
        let values: Vec<f64> = done
            .iter()
            .filter_map(|o| o.value.map(|v| dir.to_min(v)))
            .collect();
        let worst = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let best = values.iter().copied().fold(f64::INFINITY, f64::min);
        let x: Vec<Vec<f64>> = done.iter().map(|o| self.space.encode(&o.point)).collect();
        let y: Vec<f64> = done
            .iter()
            .map(|o| o.value.map_or(worst, |v| dir.to_min(v)))
            .collect();
        let mut gp = Gp::fit(x.clone(), &y, self.settings.restarts, rng).ok()?;
        if !running.is_empty() {
            let (mut x, mut y) = (x, y);
            for p in running {
                let e = self.space.encode(p);
                y.push(gp.predict(&e).0);
                x.push(e);
            }
            gp = Gp::new(x, &y, gp.hyper().clone()).ok()?;
        }
        let score = |p: &Point| -> f64 {
            if tried(p) {
                return f64::NEG_INFINITY;
            }
            let (mean, std) = gp.predict(&self.space.encode(p));
            log_expected_improvement(mean, std, best)
        };
        let shift: Vec<f64> = (0..self.space.params.len()).map(|_| rng.random()).collect();
        let mut scored: Vec<(f64, Point)> = halton(self.settings.candidates, &shift)
            .into_iter()
            .map(|u| {
                let p = self.space.from_unit(&u);
                (score(&p), p)
            })
            .filter(|(s, _)| s.is_finite())
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.dedup_by(|a, b| a.1 == b.1);
        let mut best_found: Option<(f64, Point)> = None;
        for (s, p) in scored.into_iter().take(self.settings.refine.max(1)) {
            let refined = self.refine(p, s, &score);
            if best_found.as_ref().is_none_or(|(b, _)| refined.0 > *b) {
                best_found = Some(refined);
            }
        }
        let (log_ei, point) = best_found?;
        let predicted = dir.to_min(gp.predict(&self.space.encode(&point)).0);
        Some((point, Origin::ExpectedImprovement { log_ei, predicted }))
    }

    /// Coordinate search from `start`: move one parameter at a time to its best
    /// neighbour, halving the float step after a pass without improvement.
    fn refine(
        &self,
        start: Point,
        start_score: f64,
        score: &dyn Fn(&Point) -> f64,
    ) -> (f64, Point) {
        let (mut point, mut value) = (start, start_score);
        let mut step = 0.1;
        for _ in 0..12 {
            let mut improved = false;
            for i in 0..self.space.params.len() {
                for q in self.space.neighbours(&point, i, step) {
                    let s = score(&q);
                    if s > value {
                        (point, value, improved) = (q, s, true);
                    }
                }
            }
            if !improved {
                step /= 2.0;
                if step < 1e-3 {
                    break;
                }
            }
        }
        (value, point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Branin-Hoo on x1 in [-5, 10], x2 in [0, 15]; global minimum 0.397887.
    fn branin(p: &Point) -> f64 {
        let (x1, x2) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        let pi = std::f64::consts::PI;
        let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
        (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
    }

    fn branin_space() -> Space {
        Space::from_json(&json!({"a": {"float": [-5.0, 10.0]}, "b": {"float": [0.0, 15.0]}}))
            .unwrap()
    }

    fn run(suggester: &Suggester, f: &dyn Fn(&Point) -> f64, trials: usize) -> f64 {
        let mut done: Vec<Observation> = Vec::new();
        for i in 0..trials {
            let (point, _) = suggester.suggest(i, &done, &[]).expect("continuous space");
            assert!(suggester.space().contains(&point), "{point:?}");
            let value = f(&point);
            done.push(Observation {
                point,
                value: Some(value),
            });
        }
        done.iter()
            .filter_map(|o| o.value)
            .fold(f64::INFINITY, f64::min)
    }

    /// The test that shows the optimiser works: over ten seeds, 25 trials of BO (5 from the
    /// Latin hypercube) get much closer to Branin's minimum than 25 random trials.
    #[test]
    fn bayesian_optimisation_beats_random_search_on_branin() {
        let optimum = 0.397_887;
        let (mut bo_regret, mut random_regret) = (0.0, 0.0);
        let mut bo_wins = 0;
        for seed in 0..10 {
            let bo = Suggester::new(branin_space(), Settings::new(Direction::Min, seed, 5));
            let bo_best = run(&bo, &branin, 25);
            // Random search: the whole budget as one Latin hypercube-free random sample.
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let space = branin_space();
            let random_best = (0..25)
                .map(|_| branin(&space.from_unit(&[rng.random(), rng.random()])))
                .fold(f64::INFINITY, f64::min);
            bo_regret += bo_best - optimum;
            random_regret += random_best - optimum;
            bo_wins += usize::from(bo_best < random_best);
        }
        assert!(
            bo_regret * 5.0 < random_regret,
            "mean regret: BO {} vs random {}",
            bo_regret / 10.0,
            random_regret / 10.0
        );
        assert!(bo_wins >= 8, "BO won on {bo_wins} of 10 seeds");
        assert!(bo_regret / 10.0 < 0.2, "BO regret {}", bo_regret / 10.0);
    }

    /// Integers and categoricals: every proposal is on the discrete set, the optimum (which
    /// needs the right choice *and* the right integer) is found, and a finite space runs
    /// out instead of repeating points.
    #[test]
    fn discrete_parameters_are_searched_on_their_own_set() {
        let space = Space::from_json(&json!({
            "n": {"int": [1, 12]},
            "kind": {"choice": ["a", "b", "c"]},
            "x": {"float": [0.0, 1.0]},
        }))
        .unwrap();
        let f = |p: &Point| {
            let (kind, n, x) = (&p[0], p[1].as_f64().unwrap(), p[2].as_f64().unwrap());
            let offset = if kind == "b" { 0.0 } else { 3.0 };
            (n - 9.0).powi(2) * 0.2 + (x - 0.3).powi(2) + offset
        };
        let s = Suggester::new(space, Settings::new(Direction::Min, 3, 6));
        let mut done: Vec<Observation> = Vec::new();
        for i in 0..30 {
            let (point, _) = s.suggest(i, &done, &[]).unwrap();
            assert!(point[1].is_i64(), "integer stays an integer: {point:?}");
            assert!(s.space().contains(&point));
            assert!(!done.iter().any(|o| o.point == point), "repeated {point:?}");
            let value = f(&point);
            done.push(Observation {
                point,
                value: Some(value),
            });
        }
        let best = done
            .iter()
            .min_by(|a, b| a.value.unwrap().total_cmp(&b.value.unwrap()))
            .unwrap();
        assert_eq!(best.point[0], json!("b"), "{best:?}");
        assert_eq!(best.point[1], json!(9), "{best:?}");

        let tiny = Space::from_json(&json!({"m": {"choice": ["x", "y", "z"]}})).unwrap();
        let s = Suggester::new(tiny, Settings::new(Direction::Max, 0, 2));
        let mut done: Vec<Observation> = Vec::new();
        for i in 0..3 {
            let (point, _) = s.suggest(i, &done, &[]).expect("untried points remain");
            done.push(Observation {
                point,
                value: Some(i as f64),
            });
        }
        let mut seen: Vec<Value> = done.iter().map(|o| o.point[0].clone()).collect();
        seen.sort_by_key(|v| v.to_string());
        assert_eq!(seen, [json!("x"), json!("y"), json!("z")]);
        assert_eq!(s.suggest(3, &done, &[]), None, "exhausted");
    }

    #[test]
    fn suggestions_replay_and_running_points_are_avoided() {
        let s = Suggester::new(branin_space(), Settings::new(Direction::Min, 5, 3));
        let mut done = Vec::new();
        for i in 0..5 {
            let (point, _) = s.suggest(i, &done, &[]).unwrap();
            let value = branin(&point);
            done.push(Observation {
                point,
                value: Some(value),
            });
        }
        let first = s.suggest(5, &done, &[]).unwrap();
        assert_eq!(s.suggest(5, &done, &[]).unwrap(), first, "deterministic");
        assert!(matches!(first.1, Origin::ExpectedImprovement { .. }));
        let second = s.suggest(6, &done, std::slice::from_ref(&first.0)).unwrap();
        assert_ne!(second.0, first.0);
        // A failed trial counts as the worst value; the model still fits.
        done.push(Observation {
            point: first.0,
            value: None,
        });
        assert!(s.suggest(7, &done, &[]).is_some());
    }
}
