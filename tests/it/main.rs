//! CLI integration tests: one binary, one file per feature, all through the `pipe` binary
//! on temporary workspaces.

mod support;

mod engine_cache_cmds;
mod engine_crash;
mod engine_features;
mod engine_matrix;
mod engine_property;
mod engine_rerun;
mod engine_status;
mod engine_validation;
