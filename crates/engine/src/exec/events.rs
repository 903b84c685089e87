//! Run events: the wire format of `pipe run --json` and the single source of every line
//! the human output shows.
//!
//! With `--json`, each event is one JSON object per line on stdout, tagged by `event`:
//!
//! | `event`          | fields                                                       |
//! |------------------|--------------------------------------------------------------|
//! | `stage-start`    | `stage`, `reasons` (list of [`DirtyReason`]), `log`         |
//! | `stage-progress` | `stage`, `step`, and when known `total`, `loss`, `valid_loss`, `tokens_per_second` (see [`super::progress`]) |
//! | `stage-cached`   | `stage`, `frozen` (the stage was up to date, or frozen)      |
//! | `stage-restored` | `stage`, `reasons`: outs came back from the run cache, nothing ran |
//! | `stage-finish`   | `stage`, `duration_ms`, `outs_changed` (false = early cutoff) |
//! | `stage-failed`   | `stage`, `error`, `log` (may be null), `duration_ms`         |
//! | `stage-skipped`  | `stage`, `because` (an upstream stage failed)                |
//! | `summary`        | `ran`, `restored`, `cached`, `failed`, `skipped`, `interrupted`, `duration_ms` |
//!
//! Every event also carries `ts`, an RFC 3339 UTC timestamp. `DirtyReason` objects have a
//! `reason` tag (`first-run`, `dep-changed`, `param-changed`, ...). New fields may be added;
//! consumers should ignore unknown ones.

use super::DirtyReason;
use super::progress::Progress;
use serde::Serialize;
use std::path::PathBuf;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage started running.
    StageStart {
        /// The stage.
        stage: String,
        /// Why it runs.
        reasons: Vec<DirtyReason>,
        /// Its log file.
        log: PathBuf,
    },
    /// A running stage reported how far it is.
    StageProgress {
        /// The stage.
        stage: String,
        /// How far.
        #[serde(flatten)]
        progress: Progress,
    },
    /// A stage was up to date (or frozen) and was not run.
    StageCached {
        /// The stage.
        stage: String,
        /// Skipped because `frozen: true`.
        frozen: bool,
    },
    /// A stage's outs were restored from the run cache without running it.
    StageRestored {
        /// The stage.
        stage: String,
        /// Why it was stale.
        reasons: Vec<DirtyReason>,
        /// The remote its outs were pulled from first (`pipe run --pull`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pulled_from: Option<String>,
    },
    /// `--pull` could not use the remote for a stage (unreachable, or an object failed its
    /// hash check and was refused); the stage runs here instead.
    RemoteRefused {
        /// The stage.
        stage: String,
        /// Why.
        error: String,
    },
    /// A stage finished successfully.
    StageFinish {
        /// The stage.
        stage: String,
        /// Wall time.
        duration_ms: u64,
        /// Whether its outs differ from the previous run (false: downstream is cut off).
        outs_changed: bool,
    },
    /// A stage failed (or was interrupted).
    StageFailed {
        /// The stage.
        stage: String,
        /// What went wrong.
        error: String,
        /// Its log file, when it got as far as starting.
        log: Option<PathBuf>,
        /// Wall time.
        duration_ms: u64,
    },
    /// A stage was not run because something upstream failed.
    StageSkipped {
        /// The stage.
        stage: String,
        /// The failed upstream stage.
        because: String,
    },
    /// The end of the run.
    Summary {
        /// Stages that ran.
        ran: usize,
        /// Stages restored from the run cache.
        restored: usize,
        /// Stages up to date.
        cached: usize,
        /// Stages that failed.
        failed: usize,
        /// Stages skipped after a failure.
        skipped: usize,
        /// Whether the run was interrupted.
        interrupted: bool,
        /// Wall time of the whole run.
        duration_ms: u64,
    },
}

impl Event {
    /// The stage the event is about, if any.
    pub fn stage(&self) -> Option<&str> {
        match self {
            Event::StageStart { stage, .. }
            | Event::StageProgress { stage, .. }
            | Event::StageCached { stage, .. }
            | Event::StageRestored { stage, .. }
            | Event::RemoteRefused { stage, .. }
            | Event::StageFinish { stage, .. }
            | Event::StageFailed { stage, .. }
            | Event::StageSkipped { stage, .. } => Some(stage),
            Event::Summary { .. } => None,
        }
    }
}

/// An event with its timestamp, as written by `--json`.
#[derive(Serialize)]
pub struct Stamped<'a> {
    /// RFC 3339 UTC.
    pub ts: String,
    /// The event.
    #[serde(flatten)]
    pub event: &'a Event,
}

/// Now as RFC 3339 UTC with seconds (`2026-11-25T18:00:01Z`).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `secs` since the epoch as RFC 3339 UTC.
pub fn utc(secs: u64) -> String {
    // Howard Hinnant's civil_from_days; avoids a date-time dependency for one format.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_events_are_flat() {
        let event = super::Event::StageProgress {
            stage: "train".into(),
            progress: super::Progress {
                step: 3,
                total: Some(60),
                loss: Some(1.5),
                valid_loss: None,
                tokens_per_second: Some(40.0),
            },
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"event": "stage-progress", "stage": "train", "step": 3,
                               "total": 60, "loss": 1.5, "tokens_per_second": 40.0})
        );
    }

    #[test]
    fn formats_utc() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(1_795_629_601), "2026-11-25T18:00:01Z");
    }
}
