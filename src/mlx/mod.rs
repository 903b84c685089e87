//! The MLX runtime as pipe uses it: start-up checks, which backend and device run the
//! work, and micro-benchmarks of the operations training depends on; and the model core:
//! architectures, loaders, tokenizers, chat templates, generation and evaluation.
//!
//! Model and training code build on this module; nothing here knows about pipelines.

pub mod bench;
pub mod chat;
pub mod eval;
pub mod generate;
pub mod linear;
#[cfg(target_os = "linux")]
mod linux_shim;
pub mod load;
pub mod models;
pub mod runtime;
pub mod tokenizer;
