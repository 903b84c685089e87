//! Hyperparameter search for the `tune` stage kind: a Gaussian-process Bayesian optimiser
//! and the pruning rules, in plain Rust (no MLX), so it builds and tests in seconds.
//!
//! - [`space`]: the search space (float, int, categorical; uniform or log) and its
//!   encodings;
//! - [`design`]: the Latin hypercube initial design and Halton candidates;
//! - [`gp`]: the Matern 5/2 ARD Gaussian process, fitted by maximum marginal likelihood;
//! - [`acquisition`]: expected improvement and a numerically stable log EI;
//! - [`suggest`]: putting these together into "which trial next";
//! - [`prune`]: the median stopping rule and successive halving on intermediate values;
//! - [`rank`]: the rule behind `lora: {rank: auto}`.
//!
//! The stage that runs trials, caches them and writes `trials.jsonl` and `best.yaml` is
//! [`crate::stages::tune`].

pub mod acquisition;
pub mod design;
pub mod gp;
pub mod prune;
pub mod rank;
pub mod space;
pub mod suggest;
