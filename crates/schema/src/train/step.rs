//! The step log's record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One optimizer step, a line of `train_log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRecord {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Mean loss over the loss-carrying tokens of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the step (validation excluded).
    pub seconds: f64,
    /// Loss-carrying tokens in the step.
    pub trained_tokens: u64,
    /// Positions computed in the step (prompt and padding included).
    pub processed_tokens: u64,
    /// Loss-carrying tokens per second.
    pub trained_tokens_per_second: f64,
    /// All computed positions per second (including prompt and padding).
    pub processed_tokens_per_second: f64,
    /// MLX peak memory so far, in bytes.
    pub peak_memory_bytes: u64,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Validation loss, on steps that evaluated.
    pub valid_loss: Option<f64>,
    /// Positions whose frozen blocks were skipped thanks to the activation cache.
    #[serde(default)]
    pub cached_positions: u64,
}
