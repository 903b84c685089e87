//! `pipe-mlx`: the commands of `pipe` that use MLX (train, generate, eval, bench, doctor,
//! fuse, built-in ML stages). `pipe` hands them over with their arguments unchanged;
//! running `pipe-mlx` directly is the same as running `pipe`.
fn main() {
    let code = pipe::cli::main_mlx();
    pipe::cli::exit_now(code)
}
