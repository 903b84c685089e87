//! `pipe doctor`: describe the machine and prove MLX computes, with a matmul benchmark.

/// Arguments of `pipe doctor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe doctor\n  pipe doctor --json\n  pipe doctor --matmul-size 2048"
)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Side of the square float32 matrices used to measure matmul throughput.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(64..=8192))]
    pub matmul_size: i32,
    /// Timed repetitions of the matmul (the best is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub reps: u32,
}
