//! The command line of `pipe` (the binaries in `src/main.rs` and `src/bin/pipe-mlx/`).
//!
//! This library is what the `pipe` binary links: argument definitions for every command,
//! and the engine commands (`run`, `status`, `dag`, `show`, `gc`, `cache`, `data`,
//! `model`, `schema`). It depends on `pipe-engine` and `pipe-schema`, never on MLX; the
//! commands that use MLX are implemented in `src/bin/pipe-mlx/` over `pipe-mlx-core`, and
//! `pipe` hands them over (see [`cli`]).
#![deny(missing_docs)]

pub mod cli;
pub mod ui;
