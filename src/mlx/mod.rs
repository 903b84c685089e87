//! The MLX runtime as pipe uses it: start-up checks, which backend and device run the
//! work, and micro-benchmarks of the operations training depends on.
//!
//! Model and training code build on this module; nothing here knows about pipelines.

pub mod bench;
#[cfg(target_os = "linux")]
mod linux_shim;
pub mod runtime;
