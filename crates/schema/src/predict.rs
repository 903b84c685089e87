//! The `predict` kind: batch inference over a file of OpenAI Batch requests inside a
//! pipeline (what `pipe generate --batch` does), cached like every stage.

use crate::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The predict options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictConfig {
    /// The base model.
    pub model: String,
    /// An adapter folder (mlx-lm or PEFT layout) every request runs on; without it, the
    /// base model answers.
    #[serde(default)]
    pub adapter: Option<PathBuf>,
    /// Requests: JSON Lines in the OpenAI Batch input format (`custom_id`, `method`, `url`,
    /// `body`); the `model` of each body is set to the stage's model or adapter.
    pub input: PathBuf,
    /// Requests decoded together at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `max_tokens` of requests that give none.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// The results: JSON Lines in the OpenAI Batch output format.
    pub out: PathBuf,
}

impl PredictConfig {
    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.model.trim().is_empty() {
            return Err(FieldError::at(
                "model",
                "is empty: name a model id, GGUF file or directory",
            ));
        }
        if self.batch_size == 0 {
            return Err(FieldError::at("batch_size", "must be at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(FieldError::at("max_tokens", "must be at least 1"));
        }
        Ok(())
    }
}

fn default_batch_size() -> usize {
    16
}
fn default_max_tokens() -> usize {
    256
}
