//! Telling someone how an unattended run went (`notify:`), on the outcomes the pipeline
//! asks for: a webhook ([`webhook`]) and a desktop notification on the machine that ran it
//! ([`desktop`]), each at most once per run.
//!
//! The webhook body carries Slack's `text` (Slack and Mattermost incoming webhooks show it
//! as is) and the facts as fields for other receivers: `event`, `pipeline`, `run`,
//! `status`, `failed` and `regressed` stage names, `schedule` (from `PIPE_SCHEDULE`, set by
//! `pipe schedule run`) and `host`. Neither way of telling ever fails a run: the caller
//! reports an error as a warning.

pub mod desktop;
pub mod webhook;

use crate::history::record::{RunRecord, RunStatus, StageRecord, StageStatus};
use pipe_schema::notify::{NotifyConfig, NotifyOn};
use serde_json::{Value, json};

/// The metric a stage reports as `true` (1) when it found a regression.
pub const REGRESSION_METRIC: &str = "regression";

/// Stages that ran in this run and reported a regression.
pub fn regressed(stages: &[StageRecord]) -> Vec<&str> {
    stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .filter(|s| s.metrics.get(REGRESSION_METRIC).is_some_and(|&v| v > 0.0))
        .map(|s| s.name.as_str())
        .collect()
}

/// Which notification a run's outcome calls for, if any: a failure beats a regression;
/// success means no failure and no regression. Interrupted runs notify nobody (someone
/// stopped them).
pub fn event(config: &NotifyConfig, status: RunStatus, stages: &[StageRecord]) -> Option<NotifyOn> {
    let wanted = |e| config.on.contains(&e).then_some(e);
    match status {
        RunStatus::Failed | RunStatus::Crashed => wanted(NotifyOn::Failure),
        RunStatus::Succeeded if !regressed(stages).is_empty() => wanted(NotifyOn::Regression),
        RunStatus::Succeeded => wanted(NotifyOn::Success),
        RunStatus::Running | RunStatus::Interrupted => None,
    }
}

/// What happened, in a few words, with stage names in backticks: "failed: stage `watch`
/// failed", "found a regression in `monitor`", "succeeded (2 ran, 1 cached)".
pub fn headline(event: NotifyOn, record: &RunRecord) -> String {
    let failed = failed(record);
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match event {
        NotifyOn::Failure if failed.is_empty() => "failed".to_owned(),
        NotifyOn::Failure => format!("failed: stage {} failed", quoted(&failed)),
        NotifyOn::Regression => format!(
            "found a regression in {}",
            quoted(&regressed(&record.stages))
        ),
        NotifyOn::Success => format!("succeeded ({})", record.stage_counts()),
    }
}

fn failed(record: &RunRecord) -> Vec<&str> {
    record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Failed)
        .map(|s| s.name.as_str())
        .collect()
}

/// The desktop notification for a run: the pipeline as its title, and what happened with
/// the command that shows the run (desktops show no Markdown, so no backticks).
pub fn desktop_message(
    event: NotifyOn,
    record: &RunRecord,
    schedule: Option<&str>,
) -> desktop::Notification {
    let by = schedule
        .map(|s| format!(", schedule {s}"))
        .unwrap_or_default();
    desktop::Notification {
        title: format!("pipe: {}", record.pipeline),
        message: format!(
            "{} (run {}{by}; pipe runs show {})",
            headline(event, record).replace('`', ""),
            record.id,
            record.id
        ),
    }
}

/// The JSON body for a run.
pub fn body(event: NotifyOn, record: &RunRecord, schedule: Option<&str>) -> Value {
    let failed = failed(record);
    let regressed = regressed(&record.stages);
    let host = hostname();
    let what = headline(event, record);
    let by = schedule
        .map(|s| format!(", schedule `{s}`"))
        .unwrap_or_default();
    let text = format!(
        "pipe: `{}` {what} (run {} on {host}{by}; `pipe runs show {}`)",
        record.pipeline, record.id, record.id
    );
    json!({
        "text": text,
        "event": event.as_str(),
        "pipeline": record.pipeline,
        "run": record.id,
        "status": record.status.as_str(),
        "failed": failed,
        "regressed": regressed,
        "schedule": schedule,
        "host": host,
        "started": record.started,
        "ended": record.ended,
    })
}

/// This machine's name, for "which machine ran it".
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match ok {
        true if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "this machine".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(on: &[NotifyOn]) -> NotifyConfig {
        NotifyConfig {
            webhook: Some("http://127.0.0.1:9/hook".into()),
            webhook_env: None,
            desktop: false,
            on: on.to_vec(),
        }
    }

    #[test]
    fn events() {
        use NotifyOn::*;
        let all = config(&[Failure, Regression, Success]);
        assert_eq!(event(&all, RunStatus::Failed, &[]), Some(Failure));
        assert_eq!(event(&all, RunStatus::Succeeded, &[]), Some(Success));
        assert_eq!(event(&all, RunStatus::Interrupted, &[]), None);
        let default = config(&[Failure, Regression]);
        assert_eq!(event(&default, RunStatus::Succeeded, &[]), None);
    }
}
