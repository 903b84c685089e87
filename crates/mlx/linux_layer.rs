//! The Linux build layer check of `crates/mlx/build.rs`.
//!
//! mlx-sys declares `links = "mlx"`, so cargo runs this check only after mlx-sys's own build
//! script. Without the layer at all, mlx-sys's stock build (the macOS one) runs first and
//! fails inside CMake, fetching MLX; this check catches what gets past that: a replaced
//! wrapper (mlx-sys's build script succeeds, its link flags are then wrong) or a layer
//! missing where mlx-sys's build happens to succeed.
//!
//! The layer (`.cargo/config.toml`, written by `tools/mlx-linux/setup.sh` on Linux only)
//! sets `PIPE_MLX_LINUX_LAYER` and the rustc wrapper that rewrites mlx-sys's macOS link
//! flags; a user's own `RUSTC_WRAPPER` (sccache, say) silently replaces that wrapper, so it
//! is checked too. Off Linux the check does nothing: a Mac build is the stock mlx-rs one.

use std::path::Path;

/// Stops the build (exit 1, with the fix) when building for Linux without the layer.
pub fn check() {
    println!("cargo:rerun-if-env-changed=PIPE_MLX_LINUX_LAYER");
    println!("cargo:rerun-if-env-changed=RUSTC_WRAPPER");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Some(layer) = std::env::var_os("PIPE_MLX_LINUX_LAYER") else {
        fail(
            "the Linux build layer is not set up (no .cargo/config.toml from setup.sh)",
            "run tools/mlx-linux/setup.sh in this checkout, then build again",
        );
    };
    let expected = Path::new(&layer).join("rustc-wrapper");
    let wrapper = std::env::var_os("RUSTC_WRAPPER").unwrap_or_default();
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&wrapper), &expected) {
        let wrapper = Path::new(&wrapper).display().to_string();
        let what = if wrapper.is_empty() {
            "no wrapper".to_owned()
        } else {
            wrapper
        };
        fail(
            &format!(
                "the rustc wrapper is {what}, not {}: a RUSTC_WRAPPER in the environment \
                 (sccache, say) replaces the wrapper that links mlx-sys on Linux",
                expected.display()
            ),
            "unset RUSTC_WRAPPER for this build",
        );
    }
}

fn fail(why: &str, fix: &str) -> ! {
    eprintln!("pipe: cannot build MLX on Linux: {why}.");
    eprintln!("  {fix}");
    std::process::exit(1)
}
