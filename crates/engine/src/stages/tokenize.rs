//! What the engine knows of the `tokenize` kind: its configuration
//! ([`pipe_schema::tokenize`]) and the paths it names. It runs in `pipe-mlx`
//! (`pipe_mlx_core::stages::tokenize`), because it loads the model's tokenizer.

use pipe_schema::FieldError;
use pipe_schema::tokenize::TokenizeConfig;
use serde_json::Value;

/// The `tokenize` kind.
pub struct Tokenize;

impl super::StageKind for Tokenize {
    fn name(&self) -> &'static str {
        "tokenize"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "apply a model's chat template and tokenizer to a dataset's splits once"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let config: TokenizeConfig = super::parse_with(with)?;
        config.validate()?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut deps = vec![path(&config.data)];
        deps.extend(super::model_dep(&config.model));
        Ok(super::Resolved {
            outs: vec![path(&config.out)],
            deps,
            config: serde_json::to_value(&config).expect("a tokenize config serializes"),
            // It loads the model (for its tokenizer) into MLX memory.
            uses_mlx: true,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<TokenizeConfig>()
    }
}
