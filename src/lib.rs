//! `pipe` fine-tunes language models with MLX from declarative YAML pipelines.
//!
//! Modules by concern:
//! - [`cli`]: the command line (one file per subcommand), output and exit codes;
//! - [`hardware`]: what machine this is (chip, cores, memory), parsed from the OS;
//! - [`mlx`]: the MLX runtime (start-up checks, device, platform shims, micro-benchmarks) and
//!   the model core: Llama-family models, GGUF/Hugging Face loaders, tokenizers, chat
//!   templates, generation and evaluation;
//! - [`fetch`]: fetching known models into the user's cache, checked by sha256.
#![deny(missing_docs)]

pub mod cli;
pub mod dirs;
pub mod fetch;
pub mod hardware;
pub mod mlx;
