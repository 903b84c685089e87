//! The stage kinds that run on MLX: `train`, `evaluate`, `predict`, `tokenize` and `monitor`, with what they
//! measure when a value is `auto`. The engine's table of kinds
//! ([`pipe_engine::stages`]) names them; `pipe-mlx __run-stage` runs them here.

pub mod batch_auto;
pub mod evaluate;
pub mod monitor;
pub mod predict;
pub mod rank_auto;
pub mod tokenize;
pub mod tokens;
pub mod train;

use pipe_engine::stages::Kind;
use serde_json::Value;
use std::path::Path;

/// Runs a stage of a kind that needs MLX, in this process (`pipe-mlx __run-stage`).
/// `None`: the kind is not one of them (the engine runs it: `pipe_engine::stages::run`).
/// A tune stage: over ranks when its `distributed:` or a launcher says so (trials shared
/// through MLX distributed), otherwise the engine's own run.
fn tune_over_ranks(config: &Value, root: &Path) -> anyhow::Result<()> {
    let ranks = config
        .pointer("/distributed/ranks")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if !crate::distributed::take_part(ranks as usize)? {
        return Ok(());
    }
    match crate::distributed::world() {
        Some(group) => pipe_engine::stages::tune::run_ranked(config, root, group),
        None => pipe_engine::stages::tune::run(config, root),
    }
}

pub fn run(kind: Kind, config: &Value, root: &Path) -> Option<anyhow::Result<()>> {
    let runner: fn(&Value, &Path) -> anyhow::Result<()> = match kind {
        k if k == Kind::TRAIN => train::run,
        k if k == Kind::EVALUATE => evaluate::run,
        k if k == Kind::MONITOR => monitor::run,
        k if k == Kind::PREDICT => predict::run,
        k if k == Kind::TOKENIZE => tokenize::run,
        k if k == Kind::TUNE => tune_over_ranks,
        _ => return None,
    };
    Some(runner(config, root))
}
