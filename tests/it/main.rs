//! pipe's integration tests: one binary, one module per feature. Each module runs the real
//! `pipe` binary or the library on real inputs in a temporary directory and checks what a
//! user would see.

mod activation_cache;
mod airflow;
mod batch_auto;
mod choices;
mod compare;
mod data_version;
mod deploy;
mod distributed;
mod export;
mod foundation;
mod fuse;
mod generate_batch;
mod generate_chat;
mod ingest_bad_data;
mod ingest_extra;
mod ingest_url;
mod mlx_lm_compat;
mod model;
mod monitor;
mod notify;
mod progress;
mod python;
mod quality;
mod quickstart;
mod reliability_build_layer;
#[cfg(target_os = "linux")]
mod reliability_io;
#[cfg(target_os = "linux")]
mod reliability_kill;
#[cfg(target_os = "linux")]
mod reliability_kill_random;
mod remote;
mod runs;
mod schedule;
mod schema;
mod serve;
mod serve_batch;
mod slurm;
mod sources;
mod startup;
mod support;
mod tokenize;
mod tracking;
mod tracking_s3;
mod train;
mod train_faults;
mod tune;
mod tune_model;
mod tune_regret;
mod ui;
mod ui_browser;
mod ui_playground;

mod engine_cache_cmds;
mod engine_crash;
mod engine_features;
mod engine_matrix;
mod engine_property;
mod engine_rerun;
mod engine_status;
mod engine_validation;
