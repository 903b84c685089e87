//! The `pipe` binary: parse the command line, run it, turn the outcome into an exit code.
//! Commands that use MLX are handed to `pipe-mlx` (see `pipe::cli`).
fn main() {
    let code = pipe::cli::main();
    // `_exit` after flushing: see `exit_now` for the exit handlers it skips.
    pipe_engine::process::exit_now(i32::from(code))
}
