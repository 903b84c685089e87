//! A pipeline's `notify:`: who hears about a run that nobody watches (a scheduled one).
//!
//! ```yaml
//! notify:
//!   webhook_env: SLACK_WEBHOOK_URL      # or `webhook: https://hooks.slack.com/services/...`
//!   desktop: true                       # and/or a notification on this machine's desktop
//!   on: [failure, regression, success]  # default: [failure, regression]
//! ```
//!
//! The webhook gets one JSON POST per run at most, with Slack's `text` field (so a Slack or
//! Mattermost incoming webhook shows it as is) and the facts as fields for other receivers.
//! The desktop notification goes to macOS's Notification Center, or to the freedesktop
//! notification service on Linux.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `notify:` mapping as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The webhook URL (`http://` or `https://`) that receives a JSON POST.
    #[serde(default)]
    pub webhook: Option<String>,
    /// The environment variable holding the webhook URL (Slack's URLs are secrets: this
    /// keeps them out of the pipeline file).
    #[serde(default)]
    pub webhook_env: Option<String>,
    /// Also show a desktop notification on the machine that ran the pipeline (macOS
    /// Notification Center; on Linux, the desktop's notification service via `notify-send`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub desktop: bool,
    /// The outcomes that send a notification (default: `[failure, regression]`).
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
}

/// A run outcome worth a notification.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// A stage failed (or the run could not finish).
    Failure,
    /// A stage reported `regression: true` in its metrics (the `monitor` stage does when
    /// the model got worse).
    Regression,
    /// The run succeeded with no regression.
    Success,
}

impl NotifyOn {
    /// The word used in messages and the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failure => "failure",
            NotifyOn::Regression => "regression",
            NotifyOn::Success => "success",
        }
    }
}

fn default_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failure, NotifyOn::Regression]
}

impl NotifyConfig {
    /// The first problem, with the key it concerns.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match (&self.webhook, &self.webhook_env) {
            (None, None) if self.desktop => {}
            (None, None) => {
                return Err((
                    "",
                    "give `webhook: URL`, `webhook_env: VARIABLE` (the variable holding the URL) or `desktop: true`"
                        .into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err((
                    "webhook_env",
                    "give `webhook` or `webhook_env`, not both".into(),
                ));
            }
            (Some(url), None) => check_url(url).map_err(|m| ("webhook", m))?,
            (None, Some(var)) => {
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err((
                        "webhook_env",
                        format!("`{var}` is not an environment variable name"),
                    ));
                }
            }
        }
        if self.on.is_empty() {
            return Err((
                "on",
                "the list is empty: name at least one of failure, regression, success".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that a webhook URL is one pipe can POST to.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not an http(s) URL; a webhook is an address like https://hooks.slack.com/services/..."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> NotifyConfig {
        crate::from_value(&v).unwrap()
    }

    #[test]
    fn defaults() {
        let n = parse(serde_json::json!({"webhook": "http://127.0.0.1:9/x"}));
        assert_eq!(n.on, [NotifyOn::Failure, NotifyOn::Regression]);
        assert!(n.check().is_ok());
        let n = parse(serde_json::json!({"webhook_env": "HOOK", "on": ["success"]}));
        assert_eq!(n.on, [NotifyOn::Success]);
        assert!(n.check().is_ok());
        let n = parse(serde_json::json!({"desktop": true}));
        assert!(n.desktop && n.webhook.is_none());
        assert!(n.check().is_ok());
    }

    #[test]
    fn refuses_what_cannot_work() {
        assert_eq!(parse(serde_json::json!({})).check().unwrap_err().0, "");
        let off = parse(serde_json::json!({"desktop": false}));
        assert_eq!(off.check().unwrap_err().0, "");
        let n = parse(serde_json::json!({"webhook": "hooks.slack.com/x"}));
        assert_eq!(n.check().unwrap_err().0, "webhook");
        let n = parse(serde_json::json!({"webhook": "http://x", "on": []}));
        assert_eq!(n.check().unwrap_err().0, "on");
        let e = crate::from_value::<NotifyConfig>(&serde_json::json!({"on": ["sometimes"]}))
            .unwrap_err();
        assert_eq!(e.path, ["on", "0"]);
    }
}
