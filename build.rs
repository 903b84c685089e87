//! Build script of the `pipe` package: the build id that `pipe` and `pipe-mlx` compare
//! before a hand-over. (`pipe` needs no link options to leave MLX out: the `pipe` package
//! depends on no MLX crate; `pipe-mlx` is a package of its own, src/bin/pipe-mlx.)
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
