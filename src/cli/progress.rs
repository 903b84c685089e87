//! Human rendering of run events: a live display on a terminal (one line per running
//! stage with its elapsed time, via indicatif), plain timestamped lines otherwise (cron,
//! CI, pipes). Both are driven by the same [`Event`]s as `--json`.

use super::output::{Printer, Verbosity};
use crate::exec::{Event, describe, events::utc_now};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::time::Duration;

/// Renders events for people.
pub struct Human {
    printer: Printer,
    live: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
}

impl Human {
    /// A renderer for `printer`'s terminal (live only on a TTY and when not quiet).
    pub fn new(printer: &Printer) -> Self {
        let live = printer.is_interactive().then(MultiProgress::new);
        Self {
            printer: printer.clone(),
            live,
            bars: HashMap::new(),
        }
    }

    fn line(&self, text: &str) {
        if self.printer.verbosity() < Verbosity::Normal {
            return;
        }
        match &self.live {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => self.printer.status(&format!("{} {text}", utc_now())),
        }
    }

    /// Shows one event.
    pub fn event(&mut self, event: &Event) {
        let p = &self.printer.clone();
        match event {
            Event::StageStart { stage, reasons, .. } => {
                if let Some(mp) = &self.live {
                    let bar = mp.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    let mut why = describe(reasons);
                    if why.chars().count() > 60 {
                        why = why.chars().take(57).collect::<String>() + "...";
                    }
                    bar.set_message(format!("stage {stage} running ({why})"));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bars.insert(stage.clone(), bar);
                    if p.verbosity() >= Verbosity::Verbose {
                        self.line(&format!("stage {stage}: {}", describe(reasons)));
                    }
                } else {
                    self.line(&format!("stage {stage} started ({})", describe(reasons)));
                }
            }
            Event::StageCached { stage, frozen } => {
                if p.verbosity() >= Verbosity::Verbose {
                    let what = if *frozen { "frozen" } else { "up to date" };
                    self.line(&format!("stage {stage} {what}"));
                }
            }
            Event::StageRestored { stage, reasons } => {
                self.line(&format!(
                    "stage {stage} restored from the run cache, nothing ran ({})",
                    describe(reasons)
                ));
            }
            Event::StageFinish {
                stage,
                duration_ms,
                outs_changed,
            } => {
                self.finish_bar(stage);
                let cut = if *outs_changed {
                    ""
                } else {
                    ", outs unchanged"
                };
                let ok = p.paint("finished", "32");
                self.line(&format!(
                    "stage {stage} {ok} in {}{cut}",
                    secs(*duration_ms)
                ));
            }
            Event::StageFailed {
                stage, error, log, ..
            } => {
                self.finish_bar(stage);
                let mut msg = format!("stage {stage} failed: {error}");
                if let Some(log) = log {
                    msg.push_str(&format!("\n  log: {}", log.display()));
                    let tail = tail(log, 15);
                    if !tail.is_empty() {
                        msg.push_str("\n  last lines:\n");
                        msg.push_str(&tail);
                    }
                }
                match &self.live {
                    Some(mp) => {
                        mp.suspend(|| p.error(&msg));
                    }
                    None => p.error(&msg),
                }
            }
            Event::StageSkipped { stage, because } => {
                self.line(&format!(
                    "stage {stage} skipped: upstream `{because}` failed"
                ));
            }
            Event::Summary {
                ran,
                restored,
                cached,
                failed,
                skipped,
                interrupted,
                duration_ms,
            } => {
                if let Some(mp) = &self.live {
                    let _ = mp.clear();
                }
                let mut parts = Vec::new();
                for (n, what) in [
                    (ran, "ran"),
                    (restored, "restored"),
                    (cached, "up to date"),
                    (failed, "failed"),
                    (skipped, "skipped"),
                ] {
                    if *n > 0 {
                        parts.push(format!("{n} {what}"));
                    }
                }
                let head = if *interrupted {
                    "interrupted"
                } else if ran + restored + failed + skipped == 0 {
                    "nothing to do"
                } else {
                    "done"
                };
                self.line(&format!(
                    "{head}: {} in {}",
                    parts.join(", "),
                    secs(*duration_ms)
                ));
            }
        }
    }

    fn finish_bar(&mut self, stage: &str) {
        if let Some(bar) = self.bars.remove(stage) {
            bar.finish_and_clear();
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The last `n` lines of a log, indented.
fn tail(path: &std::path::Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
