//! Link options for the `pipe` binary (issue #3: engine commands must not load MLX).
//!
//! `pipe` never calls MLX, but the link still pulls in mlx-c's object files (the `pipe`
//! library references them), and those carry C++ template instantiations that libmlx.so
//! also defines. lld keeps such symbols alive and exported, because they "may interpose"
//! the shared library's copies; they reference libmlx.so, so the executable would load
//! MLX, and with it OpenBLAS and its thread pool, on every start. Hiding the symbols of
//! static archives from the dynamic symbol table lets `--gc-sections` drop them and
//! `--as-needed` drop libmlx.so. `pipe-mlx` is linked as before.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=pipe=-Wl,--exclude-libs,ALL");
    }
}
