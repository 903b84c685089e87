//! What the run history stores: one [`RunRecord`] per `pipe run`, one [`StageRecord`] per
//! stage it touched, and each stage's step series beside it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the record format; readers skip records of a newer one.
pub const RECORD_SCHEMA: u32 = 1;

/// One `pipe run` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_SCHEMA`].
    pub schema: u32,
    /// Sortable by start time: `20261203T191512.517Z-3f2a9c`.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file, relative to the workspace root when inside it.
    pub pipeline_file: String,
    /// blake3 of the pipeline file's bytes.
    pub pipeline_hash: String,
    /// `--set` overrides, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<String>,
    /// The workspace's git state, when it is a git checkout.
    pub git: Option<GitState>,
    /// RFC 3339 UTC.
    pub started: String,
    /// The same, in milliseconds since the epoch.
    #[serde(default)]
    pub started_ms: u64,
    /// Where the run is tracked besides this history (`tracking:` or
    /// `MLFLOW_TRACKING_URI` when it started); `None`: local only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingTarget>,
    /// RFC 3339 UTC; `None` while running (or when the process died).
    pub ended: Option<String>,
    /// How the run ended.
    pub status: RunStatus,
    /// The `pipe run` process (to tell a live run from a dead one).
    pub pid: u32,
    /// The machine and runtimes (chip, cores, memory, MLX version and backend).
    pub host: Host,
    /// Every stage of the pipeline that the run settled, in the order they settled.
    pub stages: Vec<StageRecord>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Still going (or its process died: see [`RunRecord::effective_status`]).
    Running,
    /// Every selected stage is up to date.
    Succeeded,
    /// A stage failed.
    Failed,
    /// Stopped by SIGINT/SIGTERM.
    Interrupted,
    /// The process died without finishing its record (`kill -9`, power loss).
    Crashed,
}

impl RunStatus {
    /// The word people read.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Crashed => "crashed",
        }
    }
}

/// The MLflow server and names a run is tracked under. The URI is stored without
/// credentials; they come from the environment when the run is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingTarget {
    /// The server (`http://host:port`).
    pub mlflow: String,
    /// The experiment.
    pub experiment: String,
    /// The registered model trained adapters become versions of (`None`: no registry).
    pub model: Option<String>,
    /// The alias a compare stage sets.
    pub alias: String,
}

/// The git commit of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    /// `HEAD`'s full hash.
    pub commit: String,
    /// Whether tracked files had uncommitted changes.
    pub dirty: bool,
}

/// Where a run ran, so runs from different Macs can be told apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// `macos` or `linux`.
    pub os: String,
    /// `aarch64` or `x86_64`.
    pub arch: String,
    /// The chip as the OS names it ("Apple M2 Pro").
    pub chip: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Total (unified, on Apple silicon) memory in bytes.
    pub memory_bytes: u64,
    /// pipe's version and build.
    pub pipe: String,
    /// The MLX version, when the pipeline has MLX stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlx: Option<String>,
    /// `metal` or `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Whether MLX found a Metal GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metal: Option<bool>,
}

/// What happened to one stage in a run (the same states the report shows).
pub use crate::report::StageStatus;

/// One stage in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's name (matrix expansions included).
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub status: StageStatus,
    /// Its fingerprint (the key of its outs in the cache), once it succeeded or was cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For a cached or restored stage: the run that produced these outs, when the history
    /// knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_by: Option<String>,
    /// RFC 3339 UTC, when it settled.
    pub ended: String,
    /// The same, in milliseconds since the epoch.
    #[serde(default)]
    pub ended_ms: u64,
    /// Wall time when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed, or which upstream stage made it skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resolved configuration (`with:` typed and checked) or the command.
    pub config: Value,
    /// The params it reads, by dotted name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// Final numbers by name (`tuned.exact_match`, `final_valid_loss`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Files worth keeping with the run (adapters, metrics, reports), relative to the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Facts for tracking tags (`data_version`, `base_model`, `method`, `rank`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// For a compare stage: the train stage whose adapter it recommends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommends: Option<String>,
    /// Tuning trials, for a tune stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<Trial>,
    /// Names of the step series stored beside the record (`loss`, `valid_loss`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<String>,
    /// Its log file, relative to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// A file a stage produced that the run keeps track of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the workspace root.
    pub path: String,
    /// What it is, for registries and UIs.
    pub role: ArtifactRole,
    /// Size when the record was written.
    pub bytes: u64,
}

/// What an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactRole {
    /// A trained adapter's folder (weights and config): what a registry version points at.
    Adapter,
    /// A JSON file of results.
    Metrics,
    /// A self-contained HTML report.
    Report,
    /// Anything else worth keeping (logs of steps, comparisons).
    Other,
}

/// One tuning trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Position in the study.
    pub index: usize,
    /// Parameters by dotted name.
    pub params: BTreeMap<String, Value>,
    /// `complete`, `pruned` or `failed`.
    pub status: String,
    /// The objective, for complete trials.
    pub value: Option<f64>,
    /// Why it was pruned or failed.
    pub reason: Option<String>,
    /// Intermediate `(step, value)` reports.
    pub intermediate: Vec<(u64, f64)>,
    /// Wall time.
    pub seconds: f64,
}

/// A step series: one metric over training steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The metric (`loss`, `valid_loss`, `lr`, `tokens_per_second`, `peak_memory_bytes`).
    pub name: String,
    /// `(step, value, milliseconds since the epoch)`.
    pub points: Vec<(u64, f64, u64)>,
}

impl RunRecord {
    /// The status a reader should show: a run still marked running whose process is gone
    /// crashed.
    pub fn effective_status(&self) -> RunStatus {
        if self.status == RunStatus::Running && !crate::process::is_alive(self.pid) {
            RunStatus::Crashed
        } else {
            self.status
        }
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Counts of stages by status, as `ran 2, cached 5`.
    pub fn stage_counts(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.stages {
            *counts.entry(s.status.as_str()).or_default() += 1;
        }
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
