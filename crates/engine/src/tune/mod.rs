//! Hyperparameter search for the `tune` stage kind: a Gaussian-process Bayesian optimiser
//! and the pruning rules, in plain Rust (no MLX), so it builds and tests in seconds.
//!
//! - [`space`]: the search space (float, int, categorical; uniform or log) and its
//!   encodings;
//! - [`design`]: the Latin hypercube initial design and Halton candidates;
//! - [`gp`]: the Matern 5/2 ARD Gaussian process, fitted by maximum marginal likelihood;
//! - [`warp`]: the power transform that makes long-tailed objectives look Gaussian;
//! - [`acquisition`]: expected improvement and a numerically stable log EI;
//! - [`suggest`]: putting these together into "which trial next";
//! - [`importance`]: how much each parameter matters (first-order Sobol indices of the GP
//!   posterior mean), computed when a study ends;
//! - [`prune`]: the median stopping rule and successive halving on intermediate values;
//! - [`rank`]: the rule behind `lora: {rank: auto}`;
//! - [`benchmarks`]: standard test functions and the regret study of GP-EI against random
//!   search.
//!
//! The stage that runs trials, caches them and writes `trials.jsonl` and `best.yaml` is
//! [`crate::stages::tune`].

pub mod acquisition;
pub mod benchmarks;
pub mod design;
pub mod gp;
pub mod importance;
pub mod prune;
pub mod rank;
pub mod space;
pub mod suggest;
pub mod warp;
