//! What the engine knows of the `evaluate` kind: its configuration
//! ([`pipe_schema::evaluate`]) and the paths it names. It runs in `pipe-mlx`
//! (`pipe_mlx_core::stages::evaluate`).

use crate::history::outcome::Outcome;
use pipe_schema::FieldError;
use pipe_schema::evaluate::EvaluateConfig;
use serde_json::Value;

/// The `evaluate` kind.
pub struct Evaluate;

impl super::StageKind for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    /// 2: intervals on every accuracy, per-example results and per-category scores.
    fn impl_version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "score a model, and an adapter on it, on held-out data"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let config: EvaluateConfig = super::parse_with(with)?;
        config.validate()?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut deps = vec![path(&config.data)];
        deps.extend(config.adapter.as_deref().map(path));
        deps.extend(super::model_dep(&config.model));
        Ok(super::Resolved {
            outs: vec![path(&config.out)],
            deps,
            config: serde_json::to_value(&config).expect("an evaluate config serializes"),
            uses_mlx: true,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<EvaluateConfig>()
    }
    fn outcome(&self, config: &Value, root: &std::path::Path) -> Outcome {
        let mut o = Outcome::default();
        if let Ok(config) = serde_json::from_value::<EvaluateConfig>(config.clone()) {
            o.add_metrics_file(root, &config.out.display().to_string(), "");
        }
        o
    }
}
