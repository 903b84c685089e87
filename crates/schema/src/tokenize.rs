//! The `tokenize` kind: its options and the token statistics it writes per split
//! (`metrics.json`), which `report` reads.

use crate::FieldError;
use crate::train::TrainConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The splits an ingest stage writes.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// The tokenize options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeConfig {
    /// The model whose tokenizer and chat template are applied.
    pub model: String,
    /// An ingest stage's out folder.
    pub data: PathBuf,
    /// Splits to tokenize (default: every split file present).
    #[serde(default)]
    pub splits: Option<Vec<String>>,
    /// Examples longer than this (in input positions, as training counts) are reported as
    /// truncated.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    /// The out folder.
    pub out: PathBuf,
}

fn default_max_seq_len() -> usize {
    TrainConfig::default().max_seq_len
}

impl TokenizeConfig {
    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(splits) = &self.splits {
            if splits.is_empty() {
                return Err(FieldError::at(
                    "splits",
                    "is empty; list some of train, valid, test",
                ));
            }
            if let Some(bad) = splits.iter().find(|s| !SPLITS.contains(&s.as_str())) {
                return Err(FieldError::at(
                    "splits",
                    format!("holds `{bad}`; the splits are train, valid and test"),
                ));
            }
        }
        if self.max_seq_len == 0 {
            return Err(FieldError::at("max_seq_len", "must be at least 1"));
        }
        Ok(())
    }
}

/// Token statistics of one split (a `metrics.json` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SplitStats {
    /// Examples.
    pub examples: usize,
    /// Tokens in all.
    pub tokens: u64,
    /// Tokens that carry loss (training targets).
    pub loss_tokens: u64,
    /// Shortest example, in tokens.
    pub min_len: usize,
    /// Mean example length.
    pub mean_len: f64,
    /// 95th percentile of the lengths (nearest rank).
    pub p95_len: usize,
    /// Longest example.
    pub max_len: usize,
    /// Examples longer than `max_seq_len` + 1 tokens (training truncates them).
    pub truncated: usize,
    /// The limit `truncated` counts against.
    pub max_seq_len: usize,
}
