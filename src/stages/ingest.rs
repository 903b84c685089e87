//! The `ingest` kind: validate, deduplicate and split a dataset (see [`crate::data::ingest`]).
//! `with:` is an [`IngestConfig`]; the out folder gets the splits, `stats.json` and
//! `metrics.json`.

use crate::data::ingest::{IngestConfig, ingest};
use std::path::Path;

/// Implementation version (part of every ingest stage's fingerprint).
pub const IMPL_VERSION: u32 = 2;

/// Runs an ingest stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: IngestConfig = super::parse_with("ingest", with)?;
    let report = ingest(&config, root)?;
    let metrics = serde_json::json!({
        "rows_read": report.rows_read,
        "duplicates_removed": report.duplicates_removed,
        "skipped": report.skipped.len(),
        "train_examples": report.splits["train"].examples,
        "valid_examples": report.splits["valid"].examples,
        "test_examples": report.splits["test"].examples,
    });
    super::write_json(&root.join(&config.out).join("metrics.json"), &metrics)?;
    eprintln!(
        "ingested {} rows: {} train, {} valid, {} test ({} duplicates removed, {} skipped)",
        report.rows_read,
        report.splits["train"].examples,
        report.splits["valid"].examples,
        report.splits["test"].examples,
        report.duplicates_removed,
        report.skipped.len()
    );
    Ok(())
}
