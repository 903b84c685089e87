//! The `ingest` kind: validate, deduplicate and split a dataset (see [`crate::data::ingest`]).
//! `with:` is an [`IngestConfig`]; the out folder gets the splits, `stats.json` and
//! `metrics.json`.

use crate::data::ingest::{IngestConfig, ingest};
use std::path::Path;

/// The `ingest` kind.
pub struct Ingest;

impl super::StageKind for Ingest {
    fn name(&self) -> &'static str {
        "ingest"
    }
    /// 3: rows keep their category (`category`, BIG-bench's `comment`).
    fn impl_version(&self) -> u32 {
        // 4: a split made here is in its seeded random order, not the source's.
        4
    }
    fn summary(&self) -> &'static str {
        "validate, deduplicate and split a dataset"
    }
    fn resolve(
        &self,
        with: &serde_json::Value,
    ) -> Result<super::Resolved, pipe_schema::FieldError> {
        let config: IngestConfig = super::parse_with(with)?;
        Ok(super::Resolved {
            deps: [Some(&config.source), config.train_extra.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|source| match source {
                    crate::data::Source::Path(p) => Some(p.display().to_string()),
                    crate::data::Source::Url { .. } => None,
                })
                .collect(),
            outs: vec![config.out.display().to_string()],
            config: with.clone(),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<IngestConfig>()
    }
    fn outcome(&self, config: &serde_json::Value, root: &Path) -> crate::history::outcome::Outcome {
        let mut o = crate::history::outcome::Outcome::default();
        if let Ok(config) = serde_json::from_value::<IngestConfig>(config.clone()) {
            let out = config.out.display().to_string();
            o.add_metrics_file(root, &format!("{out}/stats.json"), "");
        }
        o
    }
}

/// Runs an ingest stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: IngestConfig = super::parse_with(with)?;
    let report = ingest(&config, root)?;
    let mut metrics = serde_json::json!({
        "rows_read": report.rows_read,
        "duplicates_removed": report.duplicates_removed,
        "skipped": report.skipped.len(),
        "train_examples": report.splits["train"].examples,
        "valid_examples": report.splits["valid"].examples,
        "test_examples": report.splits["test"].examples,
    });
    if let Some(extra) = &report.train_extra {
        metrics["train_extra_rows"] = extra["rows"].clone();
    }
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
