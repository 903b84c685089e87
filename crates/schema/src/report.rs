//! The `report` kind's options.

use crate::compare::Criteria;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// The report options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The report's heading.
    #[serde(default)]
    pub title: Option<String>,
    /// Ingest statistics.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// A tokenize stage's out folder (token counts per split).
    #[serde(default)]
    pub tokens: Option<PathBuf>,
    /// A compare stage's out folder.
    #[serde(default)]
    pub compare: Option<PathBuf>,
    /// Trained variants (without `compare`).
    #[serde(default)]
    pub variants: Vec<VariantPaths>,
    /// Criteria for the recommendation (without `compare`).
    #[serde(default)]
    pub recommend: Option<Criteria>,
    /// A tune stage's `out` folder: adds the tuning section.
    #[serde(default)]
    pub tune: Option<PathBuf>,
    /// A monitor stage's `out` folder: adds the monitoring section (history chart,
    /// decision, retraining and promotion).
    #[serde(default)]
    pub monitor: Option<PathBuf>,
    /// The HTML file written.
    pub out: PathBuf,
}

impl ReportConfig {
    /// Checks what can be checked before anything runs.
    pub fn check(&self) -> Result<(), String> {
        if self.compare.is_some() && (!self.variants.is_empty() || self.recommend.is_some()) {
            return Err("give either `compare` (a compare stage's out) or `variants`/`recommend`, not both: the compare stage already holds the variants and its recommendation".into());
        }
        match &self.recommend {
            Some(c) => c.check(),
            None => Ok(()),
        }
    }
}

/// Where one variant's results are.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantPaths {
    /// Its name in the report.
    pub name: String,
    /// A train stage's out_dir.
    pub train: PathBuf,
    /// An evaluate stage's out file.
    #[serde(default)]
    pub eval: Option<PathBuf>,
}
