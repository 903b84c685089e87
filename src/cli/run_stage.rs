//! `pipe __run-stage KIND --root DIR --with JSON` (hidden): runs one built-in stage in its
//! own process. The executor spawns it like a `cmd` stage, so built-in stages get the same
//! logs, interrupt handling and parallelism, and MLX memory is returned when they end.

use super::output::Printer;
use std::path::PathBuf;

/// Arguments of the hidden stage runner.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stage kind.
    kind: String,
    /// The workspace root (relative paths in `with` are taken from it).
    #[arg(long)]
    root: PathBuf,
    /// The stage's resolved `with:` as JSON.
    #[arg(long = "with")]
    with_json: String,
}

pub fn run(_printer: &Printer, args: Args) -> anyhow::Result<()> {
    let with: serde_json::Value = serde_json::from_str(&args.with_json)
        .map_err(|e| super::UsageError(format!("--with is not JSON: {e}")))?;
    let root = &args.root;
    match args.kind.as_str() {
        "ingest" => crate::stages::ingest::run(&with, root),
        "tokenize" => crate::stages::tokenize::run(&with, root),
        "train" => crate::stages::train::run(&with, root),
        "evaluate" => crate::stages::evaluate::run(&with, root),
        "compare" => crate::stages::compare::run(&with, root),
        "report" => crate::stages::report::run(&with, root),
        "version" => crate::stages::version::run(&with, root),
        "tune" => crate::stages::tune::run(&with, root),
        other => Err(super::UsageError(format!("`{other}` is not a built-in stage kind")).into()),
    }
}
