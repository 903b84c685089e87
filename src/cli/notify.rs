//! After `pipe run`: the pipeline's `notify:` webhook, when the outcome calls for it. A
//! webhook that is down or refuses is a warning; it never changes the run's exit code.

use super::output::Printer;
use pipe_engine::history::record::RunRecord;
use pipe_engine::notify;
use pipe_engine::spec::Pipeline;

/// Sends the notification the run's outcome calls for, if any.
pub(super) fn after_run(printer: &Printer, pipeline: &Pipeline, record: Option<&RunRecord>) {
    let Some(config) = &pipeline.notify else {
        return;
    };
    let Some(record) = record else {
        printer.warn("no notification sent: the run history could not be written, and the message is made from it");
        return;
    };
    let Some(event) = notify::event(config, record.status, &record.stages) else {
        return;
    };
    let schedule = std::env::var("PIPE_SCHEDULE").ok();
    let body = notify::body(event, record, schedule.as_deref());
    let sent = notify::url(config).and_then(|url| {
        notify::send(&url, &body)?;
        Ok(url)
    });
    match sent {
        Ok(url) => printer.status(&format!(
            "notified {} ({})",
            notify::redact(&url),
            event.as_str()
        )),
        Err(e) => printer.warn(&format!("notification ({}) not sent: {e}", event.as_str())),
    }
}
