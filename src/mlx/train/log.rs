//! The per-step training log: one JSON object per line, flushed as written, so a crashed
//! or interrupted run keeps every step it finished and tools can tail it live.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Appends [`StepRecord`]s to a JSONL file.
#[derive(Debug)]
pub struct StepLog {
    file: std::io::BufWriter<fs_err::File>,
}

impl StepLog {
    /// Creates (or truncates) the log; `append` keeps earlier lines (for `--resume`).
    pub fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
        })
    }

    /// Writes one record and flushes it.
    pub fn write(&mut self, record: &StepRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, record)?;
        self.file.write_all(b"\n")?;
        self.file.flush()
    }
}

/// Reads a step log (for reports and resume), skipping a torn last line.
pub fn read_step_log(path: &Path) -> std::io::Result<Vec<StepRecord>> {
    let text = fs_err::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> StepRecord {
        StepRecord {
            step,
            loss: 1.5,
            lr: 1e-4,
            seconds: 0.5,
            trained_tokens: 20,
            processed_tokens: 150,
            trained_tokens_per_second: 40.0,
            processed_tokens_per_second: 300.0,
            peak_memory_bytes: 1 << 30,
            grad_norm: Some(0.5),
            valid_loss: None,
            cached_positions: 0,
        }
    }

    #[test]
    fn round_trips_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let mut log = StepLog::open(&path, false).unwrap();
        log.write(&record(1)).unwrap();
        log.write(&record(2)).unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"step\":3,\"lo").unwrap();
        let back = read_step_log(&path).unwrap();
        assert_eq!(back, vec![record(1), record(2)]);
        let mut log = StepLog::open(&path, false).unwrap();
        log.write(&record(9)).unwrap();
        drop(log);
        assert_eq!(
            read_step_log(&path).unwrap(),
            vec![record(9)],
            "no append: truncated"
        );
    }
}
