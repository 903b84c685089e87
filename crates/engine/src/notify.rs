//! Telling someone how an unattended run went (`notify:`): one JSON POST to a webhook per
//! run at most, on the outcomes the pipeline asks for.
//!
//! The body carries Slack's `text` (Slack and Mattermost incoming webhooks show it as is)
//! and the facts as fields for other receivers: `event`, `pipeline`, `run`, `status`,
//! `failed` and `regressed` stage names, `schedule` (from `PIPE_SCHEDULE`, set by
//! `pipe schedule run`) and `host`. Sending never fails or slows a run for long: a dead or
//! refusing webhook is a warning, after at most [`TIMEOUT`].

use crate::history::record::{RunRecord, RunStatus, StageRecord, StageStatus};
use pipe_schema::notify::{NotifyConfig, NotifyOn};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest a webhook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// The JSON body for a run.
pub fn body(event: NotifyOn, record: &RunRecord, schedule: Option<&str>) -> Value {
    let failed: Vec<&str> = record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let regressed = regressed(&record.stages);
    let host = hostname();
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = match event {
        NotifyOn::Failure if failed.is_empty() => "failed".to_owned(),
        NotifyOn::Failure => format!("failed: stage {} failed", quoted(&failed)),
        NotifyOn::Regression => format!("found a regression in {}", quoted(&regressed)),
        NotifyOn::Success => format!("succeeded ({})", record.stage_counts()),
    };
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

/// The webhook URL: written in the pipeline, or read from the variable it names.
pub fn url(config: &NotifyConfig) -> Result<String, String> {
    if let Some(url) = &config.webhook {
        return Ok(url.clone());
    }
    let var = config.webhook_env.as_deref().unwrap_or_default();
    let url = std::env::var(var)
        .map_err(|_| format!("`notify.webhook_env`: the environment variable {var} is not set"))?;
    pipe_schema::notify::check_url(&url).map_err(|e| format!("{var}: {e}"))?;
    Ok(url)
}

/// The URL without its path and query, which for Slack hold the secret.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// POSTs `body` to `url`; any answer but 2xx, or none within [`TIMEOUT`], is an error.
pub fn send(url: &str, body: &Value) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let shown = redact(url);
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .map_err(|e| format!("webhook {shown}: {e}"))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("webhook {shown} answered HTTP {status}"))
    }
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

    #[test]
    fn redaction_hides_the_secret_path() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://user:pw@host:8080/x?y"), "http://host:8080/…");
    }
}
