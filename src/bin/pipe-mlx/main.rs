//! `pipe-mlx`: the commands of `pipe` that use MLX (train, generate, eval, bench, doctor,
//! fuse, export, tokens, and the built-in stages). `pipe` hands them over with their arguments unchanged;
//! running `pipe-mlx` directly is the same as running `pipe`. Arguments are defined once,
//! in the `pipe` library ([`pipe::cli`]); this binary adds what runs them.

mod bench;
mod doctor;
mod eval;
mod export;
mod fuse;
mod generate;
mod generate_batch;
mod run_stage;
mod serve;
mod tokens;
mod train;

use pipe::cli::{self, Command};

fn main() {
    // Before anything else: OpenBLAS has already chosen its kernels, and may run again
    // with better ones (crates/mlx/src/openblas.rs).
    #[cfg(target_os = "linux")]
    pipe_mlx_core::openblas::reexec_with_kernels();
    // `pipe` asks which build this is before handing a command over (src/cli/handoff.rs).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == cli::BUILD_ID_ARG)
    {
        println!("{}", cli::BUILD_ID);
        pipe_engine::process::exit_now(0);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == cli::RUNTIME_INFO_ARG)
    {
        let info = serde_json::json!({
            "mlx_version": pipe_mlx_core::runtime::mlx_version().ok(),
            "backend": if pipe_mlx_core::runtime::metal_available() { "metal" } else { "cpu" },
            "metal_available": pipe_mlx_core::runtime::metal_available(),
        });
        println!("{info}");
        pipe_engine::process::exit_now(0);
    }
    pipe_engine::hardware::set_runtime_versions(
        pipe_mlx_core::runtime::mlx_version()
            .map(|v| vec![("mlx".to_owned(), v)])
            .unwrap_or_default(),
    );
    let (printer, command) = cli::parse();
    let result = match command {
        Command::Doctor(args) => doctor::run(&printer, args),
        Command::Generate(args) => generate::run(&printer, args),
        Command::Serve(args) => serve::run(&printer, args),
        Command::Train(args) => train::run(&printer, args),
        Command::Fuse(args) => fuse::run(&printer, args),
        Command::Export(cmd) => export::run(&printer, cmd),
        Command::RunStage(args) => run_stage::run(&printer, args),
        Command::Bench(cmd) => bench::run(&printer, cmd),
        Command::Eval(args) => eval::run(&printer, args),
        Command::Tokens(args) => tokens::run(&printer, args),
        engine => cli::run_engine(&printer, engine),
    };
    let code = cli::report(&printer, result);
    pipe_engine::process::exit_now(i32::from(code))
}
