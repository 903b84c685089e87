//! What the engine knows of the `predict` kind: its configuration
//! ([`pipe_schema::predict`]) and the paths it names. It runs in `pipe-mlx`
//! (`pipe_mlx_core::stages::predict`).

use pipe_schema::FieldError;
use pipe_schema::predict::PredictConfig;
use serde_json::Value;

/// The `predict` kind.
pub struct Predict;

impl super::StageKind for Predict {
    fn name(&self) -> &'static str {
        "predict"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "batch inference: answer a file of OpenAI Batch requests with a model or an adapter"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let config: PredictConfig = super::parse_with(with)?;
        config.validate()?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut deps = vec![path(&config.input)];
        deps.extend(config.adapter.as_deref().map(path));
        deps.extend(super::model_dep(&config.model));
        Ok(super::Resolved {
            outs: vec![path(&config.out)],
            deps,
            config: serde_json::to_value(&config).expect("a predict config serializes"),
            uses_mlx: true,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<PredictConfig>()
    }
}
