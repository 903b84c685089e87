//! `pipe` fine-tunes language models with MLX from declarative YAML pipelines.
//!
//! Modules by concern:
//! - [`atomic_write`]: writing files so readers never see a partial one;
//! - [`cli`]: the command line (one file per subcommand), output and exit codes;
//! - [`data`]: datasets: reading, validating, splitting, statistics (the `ingest` stage);
//! - [`hardware`]: what machine this is (chip, cores, memory), parsed from the OS;
//! - [`mlx`]: the MLX runtime (start-up checks, device, platform shims, micro-benchmarks) and
//!   the model core: Llama-family models, GGUF/Hugging Face loaders, tokenizers, chat
//!   templates, generation and evaluation;
//! - [`report`]: self-contained HTML reports with inline SVG charts;
//! - [`fetch`]: fetching known models into the user's cache, checked by sha256.
//! - [`fetch`]: fetching known models into the user's cache, checked by sha256;
//! - [`spec`]: the YAML pipeline spec, resolved and validated;
//! - [`dag`]: the stage graph (petgraph): edges, cycles, order, rendering;
//! - [`cache`]: the blake3 content-addressed store, stat cache and run cache;
//! - [`exec`]: deciding what is stale and running it (scheduler, lock files, locking);
//! - [`stages`]: stage kinds (`cmd` today, the ML kinds later);
//! - [`tune`]: the Bayesian optimiser and pruning rule behind the `tune` stage.
#![deny(missing_docs)]

pub mod atomic_write;
pub mod cache;
pub mod cli;
pub mod dag;
pub mod data;
pub mod dirs;
pub mod exec;
pub mod fetch;
pub mod hardware;
pub mod mlx;
pub mod report;
pub mod spec;
pub mod stages;
pub mod tune;
