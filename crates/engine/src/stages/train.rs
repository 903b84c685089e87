//! What the engine knows of the `train` kind: its configuration
//! ([`pipe_schema::train`]), the paths it names, and how to read the step log it writes.
//! The training itself runs in `pipe-mlx` (`pipe_mlx_core::stages::train`).

use pipe_schema::FieldError;
use pipe_schema::train::{StepRecord, TrainWith};
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
        2
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
