//! The `pipe` binary: parse the command line, run it, turn the outcome into an exit code.
//! Commands that use MLX are handed to `pipe-mlx` (see `pipe::cli`).
fn main() {
    let code = pipe::cli::main();
    pipe::cli::exit_now(code)
}
