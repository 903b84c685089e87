//! The `pipe` binary: parse the command line, run it, turn the outcome into an exit code.
fn main() {
    let code = pipe::cli::main();
    pipe::cli::exit_now(code)
}
