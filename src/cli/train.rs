//! `pipe train --config FILE`: fine-tune a model from a job file (see
//! [`pipe_mlx_core::train::job`] for the format), with a live progress bar on a terminal and
//! one plain line per logged step otherwise.

use std::path::PathBuf;

/// Arguments of `pipe train`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe train --config runs/lora.yaml\n  pipe train --config runs/lora.yaml --resume\n  pipe train --config runs/lora.yaml --json | jq .final_valid_loss"
)]
pub struct Args {
    /// The job file (YAML): model, train_data, valid_data, out_dir and trainer options.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Continue from the checkpoint in out_dir instead of starting over.
    #[arg(long)]
    pub resume: bool,
    /// Print the final metrics as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}
