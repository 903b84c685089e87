//! The `monitor` kind's options: which model to watch, on which data, by which rules, and
//! what to do when it got worse.
//!
//! ```yaml
//! with:
//!   model: smollm2-135m-instruct          # the base model
//!   registry: past-tense@champion         # the adapter watched: a registry alias, or
//!   # adapter: runs/lora                  # an adapter folder
//!   probe: {path: probe/past.jsonl, blake3: 5f0c…}   # fixed, hash-pinned examples
//!   new_data: runs/nightly/data/test.jsonl           # tonight's examples (optional)
//!   rules:
//!     min_absolute_drop: 0.05             # accuracy points below the baseline
//!     min_relative_drop: 0.0              # fraction of the baseline
//!     confidence: 0.95                    # the paired bootstrap interval must exclude 0
//!     consecutive: 1                      # evaluations in a row before it fires
//!   on_regression:
//!     run: pipelines/retrain.yaml         # a child `pipe run` of this pipeline
//!     set: {data: runs/nightly/data}      # its --set overrides
//!     candidate: {registry: past-tense@candidate}   # what the retrain produced
//!   history: monitor/past-tense.jsonl     # every evaluation, appended (not an out)
//!   out: runs/nightly/monitor             # monitor.json, metrics.json
//! ```

use crate::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The monitor options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The base model (an id pipe knows, a GGUF file or a directory).
    pub model: String,
    /// The adapter watched, as a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// The adapter watched, as a registered version: `NAME@ALIAS` (or `NAME/VERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The MLflow server of `registry` (default: `MLFLOW_TRACKING_URI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    /// The fixed probe set, pinned by the blake3 hash of its bytes.
    pub probe: Probe,
    /// New examples scored with the probe set (JSONL/CSV/TSV), e.g. tonight's test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_data: Option<PathBuf>,
    /// At most this many examples of `new_data` are scored.
    #[serde(default = "default_max_new")]
    pub max_new_examples: usize,
    /// Generation budget per answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// When an evaluation counts as a regression.
    #[serde(default)]
    pub rules: Rules,
    /// What to do when the monitor fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_regression: Option<OnRegression>,
    /// The history file every evaluation is appended to (JSON lines). It outlives runs,
    /// so it is not an out: keep it outside every stage's outs.
    pub history: PathBuf,
    /// The out folder: `monitor.json` (the decision and the history's points) and
    /// `metrics.json`.
    pub out: PathBuf,
}

/// A probe set pinned by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The examples (JSONL/CSV/TSV, prompt/completion or chat).
    pub path: PathBuf,
    /// The blake3 hash of the file's bytes (64 hex digits; `b3sum FILE` prints it).
    pub blake3: String,
}

/// The rules of a regression. An evaluation regressed when all hold against the baseline
/// (the model's first evaluation in the history): the accuracy dropped by at least
/// `min_absolute_drop`, and by at least `min_relative_drop` of the baseline, and the
/// bootstrap interval (at `confidence`) of baseline minus current lies above 0. The
/// monitor fires after `consecutive` regressed evaluations in a row. A retrained
/// candidate is promoted by the same rules turned around: it must beat the model it
/// replaces by as much, as surely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Accuracy points (0 to 1).
    #[serde(default = "default_abs")]
    pub min_absolute_drop: f64,
    /// Fraction of the baseline's accuracy (0 to 1).
    #[serde(default)]
    pub min_relative_drop: f64,
    /// The bootstrap interval's confidence (0.5 to 0.999).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Bootstrap resamples.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// Regressed evaluations in a row before the monitor fires.
    #[serde(default = "default_consecutive")]
    pub consecutive: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_absolute_drop: default_abs(),
            min_relative_drop: 0.0,
            confidence: default_confidence(),
            resamples: default_resamples(),
            consecutive: default_consecutive(),
        }
    }
}

/// The retraining a firing monitor starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnRegression {
    /// The pipeline file run (a child `pipe run` in the same workspace).
    pub run: PathBuf,
    /// Its `--set` overrides (`key: value`).
    #[serde(default)]
    pub set: BTreeMap<String, serde_json::Value>,
    /// Where the retrained adapter is found after the child run; when it beats the
    /// watched model by the rules, the watched alias is moved to it (registry only).
    pub candidate: Candidate,
}

/// A retrained adapter: a registered version or a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// `NAME@ALIAS` or `NAME/VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// An adapter folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

fn default_max_new() -> usize {
    100
}
fn default_max_tokens() -> usize {
    12
}
fn default_abs() -> f64 {
    0.05
}
fn default_confidence() -> f64 {
    0.95
}
fn default_resamples() -> usize {
    2000
}
fn default_consecutive() -> u32 {
    1
}

impl MonitorConfig {
    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.model.trim().is_empty() {
            return Err(FieldError::at("model", "is empty: name the base model"));
        }
        match (&self.adapter, &self.registry) {
            (Some(_), Some(_)) => {
                return Err(FieldError::at(
                    "registry",
                    "and `adapter` are both set: watch one (a folder or a registry alias)",
                ));
            }
            (None, Some(r)) => check_reference("registry", r)?,
            _ => {}
        }
        let hash = &self.probe.blake3;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FieldError::at(
                "probe.blake3",
                "must be 64 hex digits (the blake3 hash of the probe file: `b3sum FILE`)",
            ));
        }
        if self.max_new_examples == 0 {
            return Err(FieldError::at("max_new_examples", "must be at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(FieldError::at("max_tokens", "must be at least 1"));
        }
        self.rules.validate()?;
        if let Some(r) = &self.on_regression {
            match (&r.candidate.registry, &r.candidate.adapter) {
                (Some(reference), None) => {
                    check_reference("on_regression.candidate.registry", reference)?
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(FieldError::at(
                        "on_regression.candidate",
                        "needs exactly one of `registry` (NAME@ALIAS) or `adapter` (a folder)",
                    ));
                }
            }
        }
        if self.history.starts_with(&self.out) {
            return Err(FieldError::at(
                "history",
                "is inside `out`, which each run replaces: put the history elsewhere",
            ));
        }
        Ok(())
    }
}

impl Rules {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), FieldError> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.min_absolute_drop) {
            return Err(FieldError::at(
                "rules.min_absolute_drop",
                "must be between 0 and 1 (accuracy points)",
            ));
        }
        if !unit(self.min_relative_drop) {
            return Err(FieldError::at(
                "rules.min_relative_drop",
                "must be between 0 and 1 (a fraction of the baseline)",
            ));
        }
        if !(0.5..=0.999).contains(&self.confidence) {
            return Err(FieldError::at(
                "rules.confidence",
                "must be between 0.5 and 0.999",
            ));
        }
        if self.resamples < 100 {
            return Err(FieldError::at("rules.resamples", "must be at least 100"));
        }
        if self.consecutive == 0 {
            return Err(FieldError::at("rules.consecutive", "must be at least 1"));
        }
        Ok(())
    }
}

fn check_reference(key: &str, reference: &str) -> Result<(), FieldError> {
    let ok = reference
        .split_once('@')
        .or_else(|| reference.split_once('/'))
        .is_some_and(|(n, a)| !n.is_empty() && !a.is_empty());
    if ok {
        Ok(())
    } else {
        Err(FieldError::at(
            key,
            format!("`{reference}` is not NAME@ALIAS or NAME/VERSION"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> serde_json::Value {
        serde_json::json!({
            "model": "m",
            "registry": "past@champion",
            "probe": {"path": "p.jsonl", "blake3": "a".repeat(64)},
            "history": "monitor/h.jsonl",
            "out": "runs/monitor",
        })
    }

    #[test]
    fn defaults_and_checks() {
        let c: MonitorConfig = crate::from_value(&config()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.rules, Rules::default());
        assert_eq!(c.rules.consecutive, 1);
        let bad = |patch: serde_json::Value, key: &str| {
            let mut v = config();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let c: MonitorConfig = crate::from_value(&v).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        bad(
            serde_json::json!({"probe": {"path": "p", "blake3": "xyz"}}),
            "probe.blake3",
        );
        bad(serde_json::json!({"adapter": "runs/lora"}), "registry");
        bad(serde_json::json!({"registry": "nope"}), "registry");
        bad(
            serde_json::json!({"rules": {"consecutive": 0}}),
            "rules.consecutive",
        );
        bad(
            serde_json::json!({"rules": {"min_absolute_drop": 5}}),
            "rules.min_absolute_drop",
        );
        bad(
            serde_json::json!({"history": "runs/monitor/h.jsonl"}),
            "history",
        );
        bad(
            serde_json::json!({"on_regression": {"run": "r.yaml", "candidate": {}}}),
            "on_regression.candidate",
        );
    }
}
