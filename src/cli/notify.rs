//! After `pipe run`: the pipeline's `notify:` webhook and desktop notification (and a
//! schedule's), when the outcome calls for it. A webhook that is down or refuses, or a
//! desktop that cannot show the notification, is a warning; it never changes the run's
//! exit code.

use super::output::Printer;
use pipe_engine::history::record::RunRecord;
use pipe_engine::notify;
use pipe_engine::schedule;
use pipe_engine::spec::Pipeline;
use pipe_schema::notify::NotifyConfig;

/// Sends the notifications the run's outcome calls for, if any: to the pipeline's
/// `notify:` and, in a scheduled run, to the schedule's (`pipe schedule add --notify-*`),
/// each by its own `on:` list; a URL both name gets one POST, and the desktop one
/// notification.
pub(super) fn after_run(printer: &Printer, pipeline: &Pipeline, record: Option<&RunRecord>) {
    let mut receivers: Vec<NotifyConfig> = pipeline.notify.iter().cloned().collect();
    if let Ok(text) = std::env::var(schedule::NOTIFY_ENV) {
        match serde_json::from_str::<NotifyConfig>(&text) {
            Ok(config) => receivers.push(config),
            Err(e) => printer.warn(&format!(
                "the schedule's notify settings ({}) do not parse: {e}",
                schedule::NOTIFY_ENV
            )),
        }
    }
    if receivers.is_empty() {
        return;
    }
    let Some(record) = record else {
        printer.warn("no notification sent: the run history could not be written, and the message is made from it");
        return;
    };
    let schedule_name = std::env::var("PIPE_SCHEDULE").ok();
    let mut sent_to = Vec::new();
    let mut desktop_shown = false;
    for config in &receivers {
        let Some(event) = notify::event(config, record.status, &record.stages) else {
            continue;
        };
        if config.desktop && !desktop_shown {
            desktop_shown = true;
            let message = notify::desktop_message(event, record, schedule_name.as_deref());
            match notify::desktop::show(&message) {
                Ok(()) => printer.status(&format!("notified the desktop ({})", event.as_str())),
                Err(e) => printer.warn(&format!(
                    "desktop notification ({}) not shown: {e}",
                    event.as_str()
                )),
            }
        }
        if config.webhook.is_none() && config.webhook_env.is_none() {
            continue;
        }
        let body = notify::body(event, record, schedule_name.as_deref());
        let sent = notify::webhook::url(config).and_then(|url| {
            if !sent_to.contains(&url) {
                notify::webhook::send(&url, &body)?;
                sent_to.push(url.clone());
            }
            Ok(url)
        });
        match sent {
            Ok(url) => printer.status(&format!(
                "notified {} ({})",
                notify::webhook::redact(&url),
                event.as_str()
            )),
            Err(e) => printer.warn(&format!("notification ({}) not sent: {e}", event.as_str())),
        }
    }
}
