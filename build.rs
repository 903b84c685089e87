//! Build script of the `pipe` package: link options for the `pipe` binary, and the build
//! id that `pipe` and `pipe-mlx` compare before a hand-over.
//!
//! # Link options (issue #3: engine commands must not load MLX)
//!
//! `pipe` never calls MLX, but the link still pulls in mlx-c's object files (the `pipe`
//! library references them), and those carry C++ template instantiations that libmlx.so
//! also defines. lld keeps such symbols alive and exported, because they "may interpose"
//! the shared library's copies; they reference libmlx.so, so the executable would load
//! MLX, and with it OpenBLAS and its thread pool, on every start. Hiding the symbols of
//! static archives from the dynamic symbol table lets `--gc-sections` drop them and
//! `--as-needed` drop libmlx.so. `pipe-mlx` is linked as before.
//!
//! # Build id (`PIPE_BUILD_ID`)
//!
//! A hash of the sources both binaries are built from: every file under `src/` and
//! `crates/`, the manifests and `Cargo.lock`, plus the profile and target. `cargo run`
//! (and `cargo build --bin pipe`) rebuild only `pipe`; the `pipe-mlx` left beside it is
//! then from older sources, and `pipe` refuses to hand a command to it
//! (`src/cli/handoff.rs`). The hash depends on content only (not on mtimes, paths or the
//! time of the build), so the same sources give the same id.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=pipe=-Wl,--exclude-libs,ALL");
    }
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let inputs = ["Cargo.toml", "Cargo.lock", "build.rs", "src", "crates"];
    let mut files = Vec::new();
    for input in inputs {
        println!("cargo:rerun-if-changed={input}");
        collect(&root.join(input), &mut files);
    }
    files.sort();
    // `DefaultHasher::new()` has fixed keys: with one toolchain, the same bytes give the
    // same id from one build to the next.
    let mut hasher = std::hash::DefaultHasher::new();
    for var in ["CARGO_PKG_VERSION", "PROFILE", "TARGET"] {
        hasher.write(std::env::var(var).unwrap_or_default().as_bytes());
        hasher.write_u8(0);
    }
    for file in files {
        let rel = file.strip_prefix(&root).unwrap_or(&file);
        hasher.write(rel.to_string_lossy().as_bytes());
        hasher.write_u8(0);
        let bytes = std::fs::read(&file).unwrap_or_default();
        hasher.write_u64(bytes.len() as u64);
        hasher.write(&bytes);
    }
    println!("cargo:rustc-env=PIPE_BUILD_ID={:016x}", hasher.finish());
}

/// Every file under `path` (or `path` itself), following no symbolic links.
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        files.push(path.to_owned());
    } else if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for entry in entries.flatten() {
            collect(&entry.path(), files);
        }
    }
}
