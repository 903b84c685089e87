//! `pipe __run-stage KIND --root DIR --config JSON` (hidden): runs one built-in stage in
//! its own process. The executor spawns it like a `cmd` stage, so built-in stages get the
//! same logs, interrupt handling and parallelism, and MLX memory is returned when they end.
//! `--config` is the stage's configuration as resolved when the pipeline loaded.

use pipe::cli::output::Printer;
use pipe::cli::run_stage::Args;
use pipe_engine::stages::Kind;

pub fn run(_printer: &Printer, args: Args) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(&args.config)
        .map_err(|e| pipe::cli::UsageError(format!("--config is not JSON: {e}")))?;
    let kind = Kind::parse(&args.kind).map_err(|e| pipe::cli::UsageError(e.to_string()))?;
    let root = &args.root;
    pipe_mlx_core::stages::run(kind, &config, root)
        .or_else(|| pipe_engine::stages::run(kind, &config, root))
        .unwrap_or_else(|| {
            Err(
                pipe::cli::UsageError(format!("`{}` is not a built-in stage kind", kind.name()))
                    .into(),
            )
        })
}
