//! The pipeline engine of `pipe`, without MLX: everything `pipe run` needs to decide what
//! is stale and run it, and the stage kinds that need no accelerator.
//!
//! Modules by concern:
//! - [`spec`]: the YAML pipeline file, resolved and validated once (typed `with:` configs
//!   from `pipe_schema`);
//! - [`dag`]: the stage graph (petgraph): edges, cycles, order, rendering;
//! - [`cache`]: the blake3 content-addressed store, stat cache and run cache;
//! - [`exec`]: deciding what is stale and running it (scheduler, lock files, locking);
//! - [`stages`]: the table of stage kinds, and the kinds that run without MLX (`cmd`,
//!   `ingest`, `version`, `compare`, `report`, `tune`);
//! - [`data`]: datasets: reading, validating, splitting, statistics, versions;
//! - [`report`]: self-contained HTML reports with inline SVG charts;
//! - [`schedule`]: pipelines run by cron or launchd (`pipe schedule`);
//! - [`airflow`]: Airflow DAG files for pipelines (`pipe export airflow`);
//! - [`stats`]: 95% intervals for accuracies and the paired test of two models;
//! - [`tune`]: the Bayesian optimiser and pruning rules behind the `tune` stage;
//! - [`fetch`]: fetching known models and data sets into the user's cache, checked by sha256;
//! - [`hardware`]: what machine this is (chip, cores, memory), parsed from the OS;
//! - [`atomic_write`]: writing files so readers never see a partial one;
//! - [`notify`]: webhook notifications of a run's outcome (`notify:`);
//! - [`process`]: whether a process is alive, signalling process groups, `_exit`;
//! - [`dirs`]: where the user cache lives.
//!
//! The MLX side (`pipe-mlx-core`) depends on this crate, never the other way round.
#![deny(missing_docs)]

pub mod airflow;
pub mod atomic_write;
pub mod cache;
pub mod dag;
pub mod data;
pub mod dirs;
pub mod exec;
pub mod fetch;
pub mod hardware;
pub mod history;
pub mod monitor;
pub mod notify;
pub mod process;
pub mod remote;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod stages;
pub mod stats;
pub mod tracking;
pub mod tune;
