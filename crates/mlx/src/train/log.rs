//! The per-step training log: one JSON object per line, flushed as written, so a crashed
//! or interrupted run keeps every step it finished and tools can tail it live.

use std::io::Write;
use std::path::Path;

pub use pipe_schema::train::StepRecord;

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

    /// Opens the log of a run that starts at step `start` (0: a fresh run, which truncates
    /// it). A resumed run keeps the records up to its checkpoint's step and drops later
    /// ones (steps a killed or diverged run took after its last checkpoint, which the
    /// resumed run takes again), so the log reads as one uninterrupted run. The kept part
    /// is rewritten atomically; a torn last line goes with it.
    pub fn open_at(path: &Path, start: u64) -> std::io::Result<Self> {
        if start == 0 {
            return Self::open(path, false);
        }
        let kept: Vec<StepRecord> = match read_step_log(path) {
            Ok(records) => records.into_iter().filter(|r| r.step <= start).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut text = Vec::new();
        for record in &kept {
            serde_json::to_writer(&mut text, record)?;
            text.push(b'\n');
        }
        pipe_engine::atomic_write::write_atomic(path, &text)?;
        Self::open(path, true)
    }

    /// Writes one record and flushes it.
    pub fn write(&mut self, record: &StepRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, record)?;
        self.file.write_all(b"\n")?;
        self.file.flush()
    }
}

pub use pipe_engine::stages::train::read_step_log;

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

    #[test]
    fn a_resumed_log_drops_the_steps_after_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let mut log = StepLog::open_at(&path, 0).unwrap();
        for step in 1..=5 {
            log.write(&record(step)).unwrap();
        }
        drop(log);
        // Resumed from the checkpoint of step 3: steps 4 and 5 are taken again.
        let mut log = StepLog::open_at(&path, 3).unwrap();
        log.write(&record(4)).unwrap();
        drop(log);
        let steps: Vec<u64> = read_step_log(&path)
            .unwrap()
            .iter()
            .map(|r| r.step)
            .collect();
        assert_eq!(steps, [1, 2, 3, 4]);
        let fresh = dir.path().join("missing.jsonl");
        drop(StepLog::open_at(&fresh, 7).unwrap());
        assert_eq!(read_step_log(&fresh).unwrap(), []);
    }
}
