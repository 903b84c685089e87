//! Live progress of a running stage, through a side file.
//!
//! Every stage process gets `PIPE_PROGRESS`, the path of a file beside its log
//! (`<stage>.progress`). A stage that knows how far it is (a `train` stage; any command may
//! too) replaces that file with one JSON object, e.g.
//! `{"step": 12, "total": 60, "loss": 1.52, "tokens_per_second": 48.3}`: the whole object
//! is written with [`crate::atomic_write::AtomicFile`] (a temporary file renamed over the
//! file), so a reader never sees half of one. The scheduler polls the files of running stages and turns each change into a
//! `stage-progress` event ([`super::Event::StageProgress`]), which a terminal shows on the
//! stage's live line, plain output (cron) as a periodic line, and `--json` as is.
//!
//! Only `step` is required; unknown fields are ignored. The stage log keeps its own plain
//! lines: this channel is for the display, not a record.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The environment variable holding the progress file's path.
pub const ENV: &str = "PIPE_PROGRESS";

/// How far a stage is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps done (optimizer steps, for training).
    pub step: u64,
    /// Steps in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The latest training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The latest validation loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Throughput, in (loss-carrying) tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
}

impl Progress {
    /// One line for people: `step 12/60 loss 1.5200 valid 1.4100 48.3 tok/s`.
    pub fn describe(&self) -> String {
        let mut s = match self.total {
            Some(t) => format!("step {}/{t}", self.step),
            None => format!("step {}", self.step),
        };
        if let Some(l) = self.loss {
            s.push_str(&format!(" loss {l:.4}"));
        }
        if let Some(v) = self.valid_loss {
            s.push_str(&format!(" valid {v:.4}"));
        }
        if let Some(t) = self.tokens_per_second {
            s.push_str(&format!(" {t:.1} tok/s"));
        }
        s
    }

    /// Writes this progress to the file named by `PIPE_PROGRESS`, if set. Failures are
    /// ignored: progress is a courtesy and must never fail a stage.
    pub fn report(&self) {
        if let Some(path) = std::env::var_os(ENV) {
            let _ = write(Path::new(&path), self);
        }
    }
}

/// The progress file of the stage whose log is `log`.
pub fn path_for(log: &Path) -> PathBuf {
    log.with_extension("progress")
}

/// Replaces `path` with `progress` (atomically; no fsync: a lost update after a crash
/// costs nothing).
pub fn write(path: &Path, progress: &Progress) -> std::io::Result<()> {
    let mut file = crate::atomic_write::AtomicFile::create(path)?.without_sync();
    std::io::Write::write_all(&mut file, &serde_json::to_vec(progress)?)?;
    file.commit()
}

/// Reads a progress file: `None` when it is missing or not a progress object.
pub fn read(path: &Path) -> Option<Progress> {
    parse(&std::fs::read(path).ok()?)
}

/// Parses a progress object.
pub fn parse(bytes: &[u8]) -> Option<Progress> {
    match serde_json::from_slice(bytes).ok()? {
        v @ serde_json::Value::Object(_) => serde_json::from_value(v).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_stages_write_and_ignores_the_rest() {
        let p = parse(
            br#"{"step": 12, "total": 60, "loss": 1.52, "tokens_per_second": 48.25, "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(p.describe(), "step 12/60 loss 1.5200 48.2 tok/s");
        let p = parse(br#"{"step": 3}"#).unwrap();
        assert_eq!(p.describe(), "step 3");
        let p = parse(br#"{"step": 5, "valid_loss": 0.5}"#).unwrap();
        assert_eq!(p.describe(), "step 5 valid 0.5000");
        for bad in [
            &b""[..],
            b"{\"step\": 1",
            b"{\"loss\": 1.0}",
            b"[1]",
            b"{\"step\": -1}",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn writes_replace_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("train@r=8.log"));
        assert_eq!(path.file_name().unwrap(), "train@r=8.progress");
        assert_eq!(read(&path), None);
        for step in 1..=3 {
            let p = Progress {
                step,
                total: Some(3),
                loss: Some(1.0 / step as f64),
                valid_loss: None,
                tokens_per_second: Some(10.0),
            };
            write(&path, &p).unwrap();
            assert_eq!(read(&path), Some(p));
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
