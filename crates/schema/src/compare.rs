//! The `compare` kind's options: which variants, the metric, its direction and the
//! limits. How variants are ranked by them is the engine's (`pipe_engine::stages::compare`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The compare options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// The variants, one by one or by glob.
    pub variants: Vec<VariantEntry>,
    /// The metric the recommendation optimises.
    #[serde(default)]
    pub metric: Metric,
    /// Higher or lower wins (default: the metric's natural direction).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Peak training memory limit, GiB.
    #[serde(default)]
    pub max_memory_gb: Option<f64>,
    /// Training time limit, minutes.
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// The out folder (`compare.json`, `metrics.json`).
    pub out: PathBuf,
}

impl CompareConfig {
    /// The recommendation's criteria.
    pub fn criteria(&self) -> Criteria {
        Criteria {
            metric: self.metric,
            direction: self.direction,
            max_memory_gb: self.max_memory_gb,
            max_minutes: self.max_minutes,
        }
    }
}

/// One `variants` entry: `{name, train, eval}` or `{glob, eval}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantEntry {
    /// The variant's name (with `train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A train stage's out_dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
    /// Train out_dirs matching this pattern, among the pipeline's outs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// An evaluate stage's out file (with `glob`, `{dir}` is the match's last segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
}

impl VariantEntry {
    /// Checks one entry: `train` with `name`, or `glob` without.
    pub fn check(&self) -> Result<(), String> {
        match (&self.train, &self.glob) {
            (Some(_), None) if self.name.is_some() => Ok(()),
            (Some(t), None) => Err(format!("the variant `{t}` needs a `name`")),
            (None, Some(g)) if self.name.is_some() => Err(format!(
                "the glob `{g}` names its variants after their stages; drop `name`"
            )),
            (None, Some(g)) if g.trim().is_empty() => Err("a `glob` is empty".into()),
            (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => Err("a variant has `train` or `glob`, not both".into()),
            (None, None) => Err("a variant needs `train` (with `name`) or `glob`".into()),
        }
    }
}

/// The metric a recommendation optimises.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Held-out exact match after fine-tuning.
    #[default]
    ExactMatch,
    /// Final validation loss.
    ValidLoss,
    /// Loss-carrying tokens trained per second.
    TokensPerSecond,
    /// Training wall time.
    TrainSeconds,
    /// Peak training memory.
    PeakMemory,
    /// Adapter size on disk.
    AdapterBytes,
}

impl Metric {
    /// The metric in words, with its unit.
    pub fn label(self) -> &'static str {
        match self {
            Metric::ExactMatch => "held-out exact match",
            Metric::ValidLoss => "validation loss",
            Metric::TokensPerSecond => "trained tokens/s",
            Metric::TrainSeconds => "training time (s)",
            Metric::PeakMemory => "peak memory (GiB)",
            Metric::AdapterBytes => "adapter size (MiB)",
        }
    }

    /// Why a variant without the metric is excluded.
    pub fn missing(self) -> &'static str {
        match self {
            Metric::ExactMatch => "no exact match (no evaluation given)",
            Metric::ValidLoss => "no validation loss (trained without valid_data)",
            _ => "no value for the metric in its metrics.json",
        }
    }

    fn default_direction(self) -> Direction {
        match self {
            Metric::ExactMatch | Metric::TokensPerSecond => Direction::Max,
            _ => Direction::Min,
        }
    }
}

/// Whether higher or lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher wins.
    Max,
    /// Lower wins.
    Min,
}

/// What the recommendation optimises and within which limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// The metric.
    #[serde(default)]
    pub metric: Metric,
    /// Higher or lower wins (default: the metric's natural direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Peak training memory limit, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_gb: Option<f64>,
    /// Training time limit, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_minutes: Option<f64>,
}

impl Criteria {
    /// The direction in force.
    pub fn direction(&self) -> Direction {
        self.direction
            .unwrap_or_else(|| self.metric.default_direction())
    }

    /// Checks the limits.
    pub fn check(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_memory_gb", self.max_memory_gb),
            ("max_minutes", self.max_minutes),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(format!("`{key}` must be a positive number"));
            }
        }
        Ok(())
    }
}

/// Bytes in a GiB.
pub const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB.
pub const MIB: f64 = (1u64 << 20) as f64;
