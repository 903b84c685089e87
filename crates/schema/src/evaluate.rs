//! The `evaluate` kind: its options and the report it writes (`out`), which `compare`
//! and `report` read.

use crate::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The evaluate options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// The base model.
    pub model: String,
    /// An adapter folder (mlx-lm layout) to evaluate on top of the base.
    #[serde(default)]
    pub adapter: Option<PathBuf>,
    /// Held-out data (JSONL/CSV/TSV, completions or chat).
    pub data: PathBuf,
    /// Records scored: the file's first ones (an ingest split's first rows are a random
    /// sample of it).
    #[serde(default = "default_max_examples")]
    pub max_examples: usize,
    /// Generation budget per answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Sample generations kept.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// The metrics file written.
    pub out: PathBuf,
}

impl EvaluateConfig {
    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.model.trim().is_empty() {
            return Err(FieldError::at(
                "model",
                "is empty: name a model id, GGUF file or directory",
            ));
        }
        if self.max_examples == 0 {
            return Err(FieldError::at("max_examples", "must be at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(FieldError::at("max_tokens", "must be at least 1"));
        }
        Ok(())
    }
}

fn default_max_examples() -> usize {
    100
}
fn default_max_tokens() -> usize {
    16
}
fn default_samples() -> usize {
    5
}

/// Scores of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Scores {
    /// Mean loss over completion tokens.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Normalized exact match.
    pub exact_match: f64,
    /// Normalized reference contained in the answer.
    pub contains_match: f64,
    /// Generation tokens per second while answering.
    pub seconds: f64,
    /// `exact_match` with its 95% interval and counts (absent in files written before
    /// intervals were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match_ci: Option<Rate>,
    /// `contains_match` with its 95% interval and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_match_ci: Option<Rate>,
}

/// A share of examples with its 95% interval (the Wilson score interval, computed by
/// `pipe_engine::stats`), and the counts it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rate {
    /// Successes over trials.
    pub value: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Successes.
    pub successes: usize,
    /// Trials.
    pub n: usize,
}

/// One scored example: what each model answered and whether it matched exactly, so two
/// evaluations of the same examples can be compared example by example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExampleResult {
    /// The example's content hash (16 hex digits of blake3 over its canonical JSON):
    /// equal in every evaluation of the same example, whatever the file order.
    pub id: String,
    /// Its category (`category` in the data; BIG-bench's `comment`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// The reference.
    pub expected: String,
    /// The base model's answer.
    pub before: String,
    /// The fine-tuned model's answer.
    pub after: String,
    /// Whether the base model's answer matched exactly (normalized).
    pub base_correct: bool,
    /// Whether the fine-tuned model's answer matched exactly.
    pub tuned_correct: bool,
}

/// Exact match within one category of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryScore {
    /// The category.
    pub category: String,
    /// The base model's exact match there.
    pub base: Rate,
    /// The fine-tuned model's.
    pub tuned: Rate,
}

/// One sample generation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SampleAnswer {
    /// The prompt.
    pub prompt: String,
    /// The reference.
    pub expected: String,
    /// The base model's answer.
    pub before: String,
    /// The fine-tuned model's answer (the base's again without an adapter).
    pub after: String,
}

/// What `out` holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvaluateReport {
    /// The base model.
    pub model: String,
    /// The adapter, if any.
    pub adapter: Option<String>,
    /// Records scored.
    pub examples: usize,
    /// How answers are compared.
    pub normalization: String,
    /// The base model's scores.
    pub base: Scores,
    /// The fine-tuned model's scores (equal to `base` without an adapter).
    pub tuned: Scores,
    /// Whether `base` was read from an earlier run's identical evaluation (same model
    /// files, records and generation budget; see `pipe_mlx_core::stages::evaluate::base_scores`) instead of
    /// computed again.
    #[serde(default)]
    pub base_reused: bool,
    /// Sample generations.
    pub samples: Vec<SampleAnswer>,
    /// Every scored example, in order (empty in files written before they were recorded).
    #[serde(default)]
    pub results: Vec<ExampleResult>,
    /// Exact match per category, when the examples have categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<CategoryScore>,
}
