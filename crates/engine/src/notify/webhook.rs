//! The webhook: one JSON POST per notification, to a URL written in the pipeline or held by
//! an environment variable (Slack's URLs are secrets). Sending never fails or slows a run
//! for long: a dead or refusing webhook is an error the caller reports as a warning, after
//! at most [`TIMEOUT`].

use pipe_schema::notify::NotifyConfig;
use serde_json::Value;
use std::time::Duration;

/// The longest a webhook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_the_secret_path() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://user:pw@host:8080/x?y"), "http://host:8080/…");
    }
}
