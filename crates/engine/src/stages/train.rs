//! What the engine knows of the `train` kind: its configuration
//! ([`pipe_schema::train`]), the paths it names, and how to read the step log it writes.
//! The training itself runs in `pipe-mlx` (`pipe_mlx_core::stages::train`).

use crate::history::outcome::{Outcome, read_json};
use crate::history::record::{ArtifactRole, Series};
use pipe_schema::FieldError;
use pipe_schema::train::{StepRecord, TrainSpec, TrainWith};
use serde_json::Value;
use std::path::Path;

/// The `train` kind.
pub struct Train;

impl super::StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }
    /// 2: the base trains in bfloat16 on Metal (float32 adapters); micro-batches are
    /// evaluated one by one.
    fn impl_version(&self) -> u32 {
        // 3: a limited validation (`valid_batches`) measures rows spread over the set.
        3
    }
    fn summary(&self) -> &'static str {
        "fine-tune a model (LoRA, QLoRA, DoRA or full)"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let spec = TrainWith::parse(with)?;
        let mut deps = spec.deps();
        deps.extend(super::model_dep(&spec.model));
        Ok(super::Resolved {
            outs: vec![spec.out_dir.clone()],
            deps,
            config: serde_json::to_value(&spec).expect("a train spec serializes"),
            uses_mlx: true,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<TrainWith>()
    }
    fn outcome(&self, config: &Value, root: &Path) -> Outcome {
        let mut o = Outcome::default();
        let Ok(spec) = serde_json::from_value::<TrainSpec>(config.clone()) else {
            return o;
        };
        let dir = spec.out_dir.trim_end_matches('/');
        o.add_metrics_file(root, &format!("{dir}/metrics.json"), "");
        o.add_artifact(root, dir, ArtifactRole::Adapter);
        o.tags.insert("base_model".into(), spec.model.clone());
        if let Some(config) = read_json(&root.join(dir).join("adapter_config.json")) {
            if let Some(kind) = config["fine_tune_type"].as_str() {
                o.tags.insert("method".into(), kind.to_owned());
            }
            if let Some(rank) = config["lora_parameters"]["rank"].as_u64() {
                o.tags.insert("rank".into(), rank.to_string());
            }
        }
        if let Ok(steps) = read_step_log(&root.join(dir).join("train_log.jsonl")) {
            o.series = step_series(&steps);
        }
        o
    }
}

/// The curves of a step log; a point's time is the training time elapsed at that step.
pub fn step_series(steps: &[StepRecord]) -> Vec<Series> {
    type Pick = fn(&StepRecord) -> Option<f64>;
    let picks: [(&str, Pick); 6] = [
        ("loss", |s| Some(s.loss)),
        ("valid_loss", |s| s.valid_loss),
        ("lr", |s| Some(s.lr)),
        ("tokens_per_second", |s| Some(s.trained_tokens_per_second)),
        ("peak_memory_bytes", |s| Some(s.peak_memory_bytes as f64)),
        ("grad_norm", |s| s.grad_norm),
    ];
    let mut elapsed = Vec::with_capacity(steps.len());
    let mut seconds = 0.0;
    for s in steps {
        seconds += s.seconds;
        elapsed.push((seconds * 1000.0) as u64);
    }
    picks
        .iter()
        .map(|(name, pick)| Series {
            name: (*name).to_owned(),
            points: steps
                .iter()
                .zip(&elapsed)
                .filter_map(|(s, &ms)| pick(s).filter(|v| v.is_finite()).map(|v| (s.step, v, ms)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Reads a step log (`train_log.jsonl`, for reports, compare and resume), skipping a torn
/// last line.
pub fn read_step_log(path: &Path) -> std::io::Result<Vec<StepRecord>> {
    let text = fs_err::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}
