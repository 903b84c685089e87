//! The `monitor` kind's engine side (no MLX): the history of evaluations, the rules of a
//! regression, the night's decision, the retraining it triggers and the promotion gate.
//! Options: [`pipe_schema::monitor`]. `pipe-mlx` scores the models
//! (`pipe_mlx_core::stages::monitor`) and calls [`night::run`].
//!
//! A night: the probe set (pinned by hash) and the new data are scored with the watched
//! adapter; the result, per example, is appended to the history; it is judged against the
//! model's baseline (its first evaluation) by [`rules`]; after `consecutive` regressions
//! in a row the monitor fires: the stage reports `regression: 1` (so a pipeline's
//! `notify:` tells someone), runs the retrain pipeline as a child `pipe run`, scores the
//! candidate on the same examples, and moves the watched registry alias to it only if it
//! beats the watched model by the same rules. Everything lands in `monitor.json`, which
//! the report charts.

pub mod history;
pub mod models;
pub mod night;
pub mod retrain;
pub mod rules;
