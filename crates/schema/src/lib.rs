//! The configuration of every stage kind, as a pipeline's `with:` writes it, and the
//! records stages write for others to read: serde types without MLX and without I/O.
//!
//! Each kind has a raw type that mirrors what users write (optional fields, `auto`
//! values, see [`Auto`]) and a resolved type with defaults filled in and values checked
//! ([`FieldError`] says which key is wrong, as a path inside `with:`). The engine resolves
//! every stage's `with:` once, when the pipeline loads, hashes the resolved value for the
//! stage's fingerprint and hands it, as JSON, to the process that runs the stage; the web
//! UI, tracking and `pipe schema` read the same types.
//!
//! | kind | raw | resolved |
//! | --- | --- | --- |
//! | `train` (and `pipe train --config`) | [`train::TrainWith`] | [`train::TrainSpec`] |
//! | `evaluate` | [`evaluate::EvaluateConfig`] | the same, checked |
//! | `tokenize` | [`tokenize::TokenizeConfig`] | the same, checked |
//! | `version` | [`version::VersionConfig`] | the same, checked |
//! | `compare` | [`compare::CompareConfig`] | the same, checked (globs expanded by the engine) |
//! | `report` | [`report::ReportConfig`] | the same, checked |
//! | `ingest` | [`ingest::IngestConfig`] | the same, checked (a URL source must be pinned) |
//! | `tune` | [`tune::TuneConfig`] | the same; the engine checks the space and the trial |
//! | `deploy` | [`deploy::DeployConfig`] | the same, checked; it writes a [`deploy::ServingFile`] |
#![deny(missing_docs)]

mod auto;
pub mod compare;
pub mod deploy;
pub mod evaluate;
mod field;
pub mod ingest;
pub mod monitor;
pub mod notify;
pub mod predict;
pub mod remote;
pub mod report;
pub mod tokenize;
pub mod tracking;
pub mod train;
pub mod tune;
pub mod version;

pub use auto::Auto;
pub use field::{FieldError, from_value};
