//! `pipe __run-stage KIND --root DIR --config JSON` (hidden): runs one built-in stage in
//! its own process (in `pipe-mlx`; see `pipe_engine::exec::launch`).

use std::path::PathBuf;

/// Arguments of the hidden stage runner.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stage kind.
    pub kind: String,
    /// The workspace root (relative paths in the configuration are taken from it).
    #[arg(long)]
    pub root: PathBuf,
    /// The stage's configuration, resolved when the pipeline loaded, as JSON.
    #[arg(long)]
    pub config: String,
}
