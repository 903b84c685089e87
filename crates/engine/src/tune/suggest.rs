//! Choosing the next trial: a Latin hypercube first, then Bayesian optimisation (the
//! default, [`Optimizer::Gp`]), or plain random search ([`Optimizer::Random`]), the baseline
//! that Bayesian optimisation has to beat.
//!
//! 1. The points of `enqueue` come first, as given (a default recipe to start from). The
//!    next `initial` trials take the points of a maximin Latin hypercube drawn once from
//!    the seed, so they do not depend on results (and replay identically).
//! 2. Afterwards a [`Gp`] is fitted on every finished trial. Failed and pruned trials carry
//!    no final value; they enter as the worst value seen so far, so the model learns to
//!    stay away from them instead of proposing them again. Trials still running enter as
//!    the model's own prediction ("kriging believer"), so parallel trials spread out.
//!    Values are warped by a fitted power transform first ([`Warp`]), so a long tail of
//!    bad values does not drown the region near the best.
//! 3. The next point maximises log expected improvement below the best value: it is
//!    evaluated at `candidates` quasi-random valid points, and the best few, with the two
//!    best trials so far, are refined by coordinate search over [`Space::neighbours`] (floats by shrinking steps, integers by
//!    ±1 and larger jumps, categoricals by trying every other choice). The acquisition is
//!    only ever evaluated at valid points, so discrete parameters are optimised over
//!    their own set rather than rounded afterwards.
//! 4. Points already tried (or running) are never proposed again; when a finite space has
//!    no untried point left, the search is exhausted.
//!
//! Random search skips all of this: each trial is a uniformly random untried point.
//!
//! Every random choice comes from a generator seeded with `(seed, trial index)`, so given
//! the same finished trials the same point comes out: that is what lets a rerun with a
//! larger `n_trials` find its first trials in the cache.

use super::acquisition::log_expected_improvement;
use super::design::{halton, latin_hypercube};
use super::gp::{Gp, LengthScales};
use super::space::{Point, Space};
use super::warp::Warp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use pipe_schema::tune::{Direction, Optimizer};

/// The default size of the initial design: twice the number of parameters, between 3 and
/// 12. Fewer points fit the first length scales to a misleading corner: on Hartmann-6 at 30
/// trials, 8 design points instead of 12 leave a mean regret of 0.39 instead of 0.18 over
/// 30 seeds (BENCHMARKS.md, "Tuning: regret against random search").
pub fn default_initial(params: usize) -> usize {
    (2 * params).clamp(3, 12)
}

/// How many of the best finished trials also start the local search of the acquisition.
const INCUMBENT_STARTS: usize = 2;

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
    /// Points tried first, in order (`enqueue`), before the design.
    pub enqueued: Vec<Point>,
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
    /// Bayesian optimisation or random search.
    pub optimizer: Optimizer,
}

impl Settings {
    /// Defaults for Bayesian optimisation.
    pub fn new(direction: Direction, seed: u64, initial: usize) -> Self {
        Self {
            enqueued: Vec::new(),
            initial,
            seed,
            candidates: 1024,
            refine: 4,
            restarts: 3,
            direction,
            optimizer: Optimizer::Gp,
        }
    }

    /// The same settings with another optimizer.
    pub fn with_optimizer(self, optimizer: Optimizer) -> Self {
        Self { optimizer, ..self }
    }

    /// The same settings, trying `points` first.
    pub fn with_enqueued(self, enqueued: Vec<Point>) -> Self {
        Self { enqueued, ..self }
    }
}

/// How a point was chosen (recorded with each trial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Origin {
    /// The `index`-th point of `enqueue`.
    Enqueued {
        /// Position in `enqueue`.
        index: usize,
    },
    /// The `index`-th point of the initial design.
    LatinHypercube {
        /// Position in the design.
        index: usize,
    },
    /// A random untried point (random search; or a design point was a duplicate, or too
    /// few trials finished to fit a model).
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
        let design = match settings.optimizer {
            Optimizer::Gp => latin_hypercube(settings.initial, space.params.len(), 20, &mut rng),
            Optimizer::Random => Vec::new(),
        };
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
        let queued = self.settings.enqueued.len();
        if let Some(point) = self.settings.enqueued.get(index)
            && !tried(point)
        {
            return Some((point.clone(), Origin::Enqueued { index }));
        }
        if self.settings.optimizer == Optimizer::Random {
            return self
                .random_untried(&mut rng, &tried)
                .map(|p| (p, Origin::Random));
        }
        // The design comes after the enqueued points, whole.
        let designed = index.checked_sub(queued);
        if let Some(at) = designed.filter(|&at| at < self.design.len()) {
            let point = self.space.from_unit(&self.design[at]);
            if !tried(&point) {
                return Some((point, Origin::LatinHypercube { index: at }));
            }
        }
        let finished = done.iter().filter(|o| o.value.is_some()).count();
        if index >= queued + self.design.len()
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
        let x: Vec<Vec<f64>> = done.iter().map(|o| self.space.encode(&o.point)).collect();
        let raw: Vec<f64> = done
            .iter()
            .map(|o| o.value.map_or(worst, |v| dir.to_min(v)))
            .collect();
        // The GP and EI work on warped values (see `warp`): same order, tamer tails.
        let warp = Warp::fit(&raw);
        let y: Vec<f64> = raw.iter().map(|v| warp.apply(*v)).collect();
        let best = y.iter().copied().fold(f64::INFINITY, f64::min);
        let mut gp = Gp::fit(
            x.clone(),
            &y,
            self.settings.restarts,
            LengthScales::SEARCH,
            rng,
        )
        .ok()?;
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
        // The local search starts from the best candidates and from the best trials so far
        // (whose own score is -inf: tried points are not proposed again, their neighbours
        // are): EI's peak is often a small step from the incumbent, which a thousand points
        // scattered over a 6-dimensional cube rarely land near.
        let mut starts: Vec<(f64, Point)> = scored
            .into_iter()
            .take(self.settings.refine.max(1))
            .collect();
        let mut incumbents: Vec<(f64, &Point)> = done
            .iter()
            .filter_map(|o| o.value.map(|v| (dir.to_min(v), &o.point)))
            .collect();
        incumbents.sort_by(|a, b| a.0.total_cmp(&b.0));
        starts.extend(
            incumbents
                .into_iter()
                .take(INCUMBENT_STARTS)
                .map(|(_, p)| (score(p), p.clone())),
        );
        let mut best_found: Option<(f64, Point)> = None;
        for (s, p) in starts {
            let refined = self.refine(p, s, &score);
            if best_found.as_ref().is_none_or(|(b, _)| refined.0 > *b) {
                best_found = Some(refined);
            }
        }
        let (log_ei, point) = best_found?;
        let predicted = dir.to_min(warp.invert(gp.predict(&self.space.encode(&point)).0));
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
    use crate::tune::benchmarks::BRANIN;
    use serde_json::{Value, json};

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

    /// Random search ignores results (the same point whatever the values so far), uses no
    /// initial design, and still never repeats a point of a finite space.
    #[test]
    fn random_search_is_independent_of_results() {
        let settings = Settings::new(Direction::Min, 4, 3).with_optimizer(Optimizer::Random);
        let s = Suggester::new(BRANIN.space(), settings.clone());
        let mut done = Vec::new();
        for i in 0..6 {
            let (point, origin) = s.suggest(i, &done, &[]).unwrap();
            assert_eq!(origin, Origin::Random);
            assert!(s.space().contains(&point));
            let flipped: Vec<Observation> = done
                .iter()
                .map(|o: &Observation| Observation {
                    point: o.point.clone(),
                    value: o.value.map(|v| -v),
                })
                .collect();
            assert_eq!(s.suggest(i, &flipped, &[]).unwrap().0, point);
            let value = BRANIN.value(&point);
            done.push(Observation {
                point,
                value: Some(value),
            });
        }
        let finite = Space::from_json(&json!({"n": {"int": [1, 4]}})).unwrap();
        let s = Suggester::new(finite, settings);
        let mut done: Vec<Observation> = Vec::new();
        for i in 0..4 {
            let (point, _) = s.suggest(i, &done, &[]).unwrap();
            assert!(!done.iter().any(|o| o.point == point), "repeated {point:?}");
            done.push(Observation { point, value: None });
        }
        assert_eq!(s.suggest(4, &done, &[]), None, "exhausted");
    }

    #[test]
    fn suggestions_replay_and_running_points_are_avoided() {
        let s = Suggester::new(BRANIN.space(), Settings::new(Direction::Min, 5, 3));
        let mut done = Vec::new();
        for i in 0..5 {
            let (point, _) = s.suggest(i, &done, &[]).unwrap();
            let value = BRANIN.value(&point);
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

    /// `enqueue` points come first, as given, then the whole design, then the model; a
    /// point already tried is not proposed again.
    #[test]
    fn enqueued_points_come_before_the_design() {
        let space = BRANIN.space();
        let default = vec![json!(0.5), json!(7.5)];
        let plain = Suggester::new(space.clone(), Settings::new(Direction::Min, 3, 3));
        let queued = Suggester::new(
            space,
            Settings::new(Direction::Min, 3, 3).with_enqueued(vec![default.clone()]),
        );
        let mut done: Vec<Observation> = Vec::new();
        let mut origins = Vec::new();
        for i in 0..5 {
            let (point, origin) = queued.suggest(i, &done, &[]).unwrap();
            if i == 0 {
                assert_eq!(point, default);
            } else if i <= 3 {
                // The design is the plain study's, shifted by one.
                assert_eq!(
                    point,
                    plain.suggest(i - 1, &[], &[]).unwrap().0,
                    "trial {i}"
                );
            }
            origins.push(origin);
            let value = BRANIN.value(&point);
            done.push(Observation {
                point,
                value: Some(value),
            });
        }
        assert_eq!(origins[0], Origin::Enqueued { index: 0 });
        assert_eq!(
            origins[1..4],
            (0..3)
                .map(|index| Origin::LatinHypercube { index })
                .collect::<Vec<_>>()
        );
        assert!(matches!(origins[4], Origin::ExpectedImprovement { .. }));
        // Already running: the enqueued point is not proposed twice.
        let (other, _) = queued
            .suggest(0, &[], std::slice::from_ref(&default))
            .unwrap();
        assert_ne!(other, default);
    }
}
