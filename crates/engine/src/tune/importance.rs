//! Parameter importance: how much of the objective's variation over the search space each
//! parameter explains on its own, estimated from the completed trials through the tuner's
//! own model.
//!
//! The method is named in every output ([`METHOD`]): *first-order Sobol indices of the GP
//! posterior mean*. It is the functional ANOVA idea behind Optuna's fANOVA evaluator
//! (Hutter, Hoos & Leyton-Brown 2014, there on a random forest), applied to a Gaussian
//! process like the one that proposes the trials ([`super::gp`]):
//! - The surrogate `f(u)` is the posterior mean at the point that unit coordinates `u` map to
//!   ([`Space::from_unit`]): each parameter uniform in its own search scale (after `ln` where
//!   `log: true`), an integer taking each value with its bin's probability, a categorical each
//!   choice with equal probability. So a categorical is one input and gets one index, however
//!   many one-hot features the GP sees.
//! - `S_i = Var(E[f | u_i]) / Var(f)`: the share of `f`'s variance over the space that `u_i`
//!   explains alone (Sobol' 2001). Indices lie in `[0, 1]` and sum to at most 1; the rest,
//!   `1 - Σ S_i`, is due to interactions between parameters.
//! - Estimator: Saltelli et al. 2010 (table 2, b), from two independent sample matrices `A`
//!   and `B` and, per parameter, `A` with column `i` taken from `B`:
//!   `V_i ≈ mean(f(B) · (f(A_B^i) - f(A)))` with `f` centred, `N (d + 2)` evaluations of the
//!   mean. `A` and `B` are Latin hypercubes (stratified in every parameter) drawn from a fixed
//!   seed, so the same trials always give the same file. Sampling error can push a
//!   near-zero index slightly below 0; estimates are clamped into `[0, 1]`.
//!
//! The numbers describe the model, not the truth: with few trials, or trials bunched where
//! the optimiser searched, they are rough. The output says how many trials the model saw.

use super::design::random_latin_hypercube;
use super::gp::{Gp, LengthScales};
use super::space::{Point, Space};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The method, as written in `importance.json` and the report.
pub const METHOD: &str = "first-order Sobol indices of the GP posterior mean";

/// Rows of each sample matrix: 4096 × (parameters + 2) evaluations of the posterior mean,
/// well under a second for the spaces and trial counts a study has, and sampling error
/// around 0.01 on the indices (see the Ishigami test).
const SAMPLES: usize = 4096;

/// Fixed, not the study's seed: importance is a function of the trials alone.
const SEED: u64 = 0x005E_ED0F_50B0;

/// Starting points of the hyperparameter fit (more than a proposal uses: this fit runs once).
const RESTARTS: usize = 5;

/// Parameter importance of a study (`importance.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    /// How the numbers were computed ([`METHOD`]).
    pub method: String,
    /// The numbers, or why there are none.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What the estimate came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Indices were estimated.
    Estimated {
        /// Completed trials the model was fitted on.
        trials: usize,
        /// Rows of each sample matrix.
        samples: usize,
        /// One entry per parameter, most important first.
        params: Vec<ParamImportance>,
        /// `1 - Σ S_i`: the variance share of interactions between parameters.
        interactions: f64,
    },
    /// No numbers, and why.
    Unavailable {
        /// Why (too few completed trials, a single parameter, a flat objective, ...).
        reason: String,
    },
}

/// One parameter's first-order index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamImportance {
    /// Its dotted name.
    pub name: String,
    /// Its first-order Sobol index, in `[0, 1]`.
    pub importance: f64,
}

impl Importance {
    fn unavailable(reason: String) -> Self {
        Self {
            method: METHOD.to_owned(),
            outcome: Outcome::Unavailable { reason },
        }
    }
}

/// Estimates each parameter's importance from completed trials (`(point, objective)`;
/// pruned and failed trials have no objective and are left out by the caller).
pub fn estimate(space: &Space, trials: &[(Point, f64)]) -> Importance {
    if space.params.len() < 2 {
        let name = space.params.first().map_or("", |p| p.name.as_str());
        return Importance::unavailable(format!(
            "the space has a single parameter (`{name}`), which accounts for all the variation the model explains; importance ranks parameters against each other"
        ));
    }
    if trials.len() < 2 {
        return Importance::unavailable(format!(
            "{} completed trial{}; at least 2 are needed to fit the model",
            trials.len(),
            if trials.len() == 1 { "" } else { "s" }
        ));
    }
    let y: Vec<f64> = trials.iter().map(|(_, v)| *v).collect();
    let (lo, hi) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    if lo == hi {
        return Importance::unavailable(format!(
            "every completed trial has the same objective value ({lo}), so there is no variation to attribute"
        ));
    }
    let x: Vec<Vec<f64>> = trials.iter().map(|(p, _)| space.encode(p)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let gp = match Gp::fit(x, &y, RESTARTS, LengthScales::DESCRIBE, &mut rng) {
        Ok(gp) => gp,
        Err(e) => return Importance::unavailable(format!("the model could not be fitted: {e}")),
    };
    let f = |u: &[f64]| gp.mean(&space.encode(&space.from_unit(u)));
    // A model flat to rounding error explains the trials' differences as noise.
    let floor = 1e-9 * ((hi - lo) / 2.0).powi(2);
    let Some(indices) = first_order(&f, space.params.len(), SAMPLES, floor, &mut rng) else {
        return Importance::unavailable(
            "the fitted model is flat over the space: it explains the differences between trials as noise".into(),
        );
    };
    let interactions = (1.0 - indices.iter().sum::<f64>()).max(0.0);
    let mut params: Vec<ParamImportance> = space
        .params
        .iter()
        .zip(indices)
        .map(|(p, importance)| ParamImportance {
            name: p.name.clone(),
            importance,
        })
        .collect();
    params.sort_by(|a, b| {
        b.importance
            .total_cmp(&a.importance)
            .then(a.name.cmp(&b.name))
    });
    Importance {
        method: METHOD.to_owned(),
        outcome: Outcome::Estimated {
            trials: trials.len(),
            samples: SAMPLES,
            params,
            interactions,
        },
    }
}

/// First-order Sobol indices of `f` over the unit cube of `dims` dimensions, by the
/// estimator in the module doc with `samples` rows per matrix; `None` when `f`'s variance
/// is at most `min_variance` (nothing to decompose).
pub fn first_order(
    f: &dyn Fn(&[f64]) -> f64,
    dims: usize,
    samples: usize,
    min_variance: f64,
    rng: &mut impl Rng,
) -> Option<Vec<f64>> {
    if samples < 2 {
        return None;
    }
    let a = random_latin_hypercube(samples, dims, rng);
    let b = random_latin_hypercube(samples, dims, rng);
    let fa: Vec<f64> = a.iter().map(|u| f(u)).collect();
    let fb: Vec<f64> = b.iter().map(|u| f(u)).collect();
    let n = samples as f64;
    let mean = (fa.iter().sum::<f64>() + fb.iter().sum::<f64>()) / (2.0 * n);
    let variance = fa
        .iter()
        .chain(&fb)
        .map(|v| (v - mean).powi(2))
        .sum::<f64>()
        / (2.0 * n);
    if variance.is_nan() || variance <= min_variance {
        return None;
    }
    let indices = (0..dims)
        .map(|i| {
            let partial: f64 = a
                .iter()
                .zip(&b)
                .zip(fa.iter().zip(&fb))
                .map(|((row_a, row_b), (f_a, f_b))| {
                    let mut mixed = row_a.clone();
                    mixed[i] = row_b[i];
                    (f_b - mean) * (f(&mixed) - f_a)
                })
                .sum::<f64>()
                / n;
            (partial / variance).clamp(0.0, 1.0)
        })
        .collect();
    Some(indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::design::latin_hypercube;
    use serde_json::json;

    fn index_of(imp: &Importance, name: &str) -> f64 {
        let Outcome::Estimated { params, .. } = &imp.outcome else {
            panic!("no estimate: {imp:?}");
        };
        params.iter().find(|p| p.name == name).unwrap().importance
    }

    fn names(imp: &Importance) -> Vec<String> {
        let Outcome::Estimated { params, .. } = &imp.outcome else {
            panic!("no estimate: {imp:?}");
        };
        params.iter().map(|p| p.name.clone()).collect()
    }

    /// `n` points of a Latin hypercube over `space`, with `f`'s value at each.
    fn trials(space: &Space, n: usize, f: &dyn Fn(&Point) -> f64) -> Vec<(Point, f64)> {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        latin_hypercube(n, space.params.len(), 5, &mut rng)
            .iter()
            .map(|u| {
                let p = space.from_unit(u);
                let v = f(&p);
                (p, v)
            })
            .collect()
    }

    /// The estimator on a function with known indices: Ishigami (Ishigami & Homma 1990),
    /// `sin x1 + 7 sin² x2 + 0.1 x3⁴ sin x1` on `[-π, π]³`, has S1 = 0.3139, S2 = 0.4424,
    /// S3 = 0 (x3 acts only through its interaction with x1, the remaining 0.2437).
    #[test]
    fn the_estimator_recovers_the_ishigami_indices() {
        let pi = std::f64::consts::PI;
        let f = |u: &[f64]| {
            let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
            x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let s = first_order(&f, 3, SAMPLES, 0.0, &mut rng).unwrap();
        for (got, want) in s.iter().zip([0.3139, 0.4424, 0.0]) {
            assert!((got - want).abs() < 0.03, "{s:?}");
        }
        assert!((1.0 - s.iter().sum::<f64>() - 0.2437).abs() < 0.05, "{s:?}");
        // A constant has no variance to decompose.
        assert_eq!(first_order(&|_| 2.0, 3, 64, 0.0, &mut rng), None);
    }

    #[test]
    fn a_dominant_parameter_dominates_and_an_unused_one_gets_nothing() {
        let space = Space::from_json(&json!({
            "x": {"float": [0.0, 1.0]},
            "y": {"float": [0.0, 1.0]},
            "z": {"float": [0.0, 1.0]},
        }))
        .unwrap();
        let f = |p: &Point| 10.0 * p[0].as_f64().unwrap() + 0.1 * p[1].as_f64().unwrap();
        let data = trials(&space, 30, &f);
        let imp = estimate(&space, &data);
        assert_eq!(imp.method, METHOD);
        assert_eq!(names(&imp), ["x", "y", "z"], "{imp:?}");
        let (x, y, z) = (
            index_of(&imp, "x"),
            index_of(&imp, "y"),
            index_of(&imp, "z"),
        );
        assert!(x > 0.95, "{imp:?}");
        assert!(y < 0.02 && z < 0.005, "{imp:?}");
        assert!([x, y, z].iter().all(|s| (0.0..=1.0).contains(s)));
        // Identical trials give an identical file.
        assert_eq!(
            serde_json::to_string(&estimate(&space, &data)).unwrap(),
            serde_json::to_string(&imp).unwrap()
        );
    }

    /// A categorical is one input with one index (not one per one-hot feature), its choices
    /// equally likely; a log-scaled float is uniform in `ln`. Expected: method explains
    /// Var(3·[b]) = 2, lr Var(0.3·log10 lr) = 0.12 of 2.12, `n` nothing.
    #[test]
    fn categorical_and_log_parameters_are_decomposed_in_their_own_scale() {
        let space = Space::from_json(&json!({
            "lr": {"float": [1e-5, 1e-1], "log": true},
            "method": {"choice": ["a", "b", "c"]},
            "n": {"int": [1, 8]},
        }))
        .unwrap();
        let f = |p: &Point| {
            let b = if p[1] == "b" { 3.0 } else { 0.0 };
            b + 0.3 * p[0].as_f64().unwrap().log10()
        };
        let imp = estimate(&space, &trials(&space, 40, &f));
        assert_eq!(names(&imp), ["method", "lr", "n"], "{imp:?}");
        let method = index_of(&imp, "method");
        let lr = index_of(&imp, "lr");
        assert!((method - 2.0 / 2.12).abs() < 0.05, "{imp:?}");
        assert!((lr - 0.12 / 2.12).abs() < 0.03, "{imp:?}");
        assert!(index_of(&imp, "n") < 0.01, "{imp:?}");
    }

    #[test]
    fn too_little_to_go_on_is_said_not_estimated() {
        let two =
            Space::from_json(&json!({"x": {"float": [0, 1]}, "m": {"choice": [1, 2]}})).unwrap();
        let point = vec![json!(0.5), json!(1)];
        let reason = |imp: Importance| match imp.outcome {
            Outcome::Unavailable { reason } => reason,
            other => panic!("estimated: {other:?}"),
        };
        assert!(reason(estimate(&two, &[])).contains("0 completed trials"));
        assert!(reason(estimate(&two, &[(point.clone(), 1.0)])).contains("1 completed trial;"));
        let same = [(point.clone(), 1.0), (vec![json!(0.1), json!(2)], 1.0)];
        assert!(reason(estimate(&two, &same)).contains("same objective value (1)"));
        let one = Space::from_json(&json!({"x": {"float": [0, 1]}})).unwrap();
        let data = [(vec![json!(0.1)], 1.0), (vec![json!(0.9)], 2.0)];
        let why = reason(estimate(&one, &data));
        assert!(why.contains("single parameter (`x`)"), "{why}");
        // The reason travels in the file with the method.
        let text = serde_json::to_value(estimate(&one, &data)).unwrap();
        assert_eq!(text["status"], "unavailable");
        assert_eq!(text["method"], METHOD);
    }
}
