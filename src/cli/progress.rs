//! Human rendering of run events: a live display on a terminal (one line per running
//! stage with its elapsed time and, for stages that report progress such as `train`, a
//! bar with step/total, loss and tokens/s; via indicatif), plain timestamped lines
//! otherwise (cron, CI, pipes), where progress is a line every tenth of the steps or every
//! minute. Both are driven by the same [`Event`]s as `--json`.

use super::output::{Printer, Verbosity};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipe_engine::exec::progress::Progress;
use pipe_engine::exec::{Event, describe, events::utc_now};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Renders events for people.
pub struct Human {
    printer: Printer,
    live: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Per stage, the step and time of the last plain progress line.
    printed: HashMap<String, (u64, Instant)>,
}

impl Human {
    /// A renderer for `printer`'s terminal (live only on a TTY and when not quiet).
    pub fn new(printer: &Printer) -> Self {
        let live = printer.is_interactive().then(MultiProgress::new);
        Self {
            printer: printer.clone(),
            live,
            bars: HashMap::new(),
            printed: HashMap::new(),
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
            Event::StageProgress { stage, progress } => {
                if let Some(bar) = self.bars.get(stage) {
                    bar.set_message(format!("stage {stage} {}", live_line(progress)));
                } else if self.live.is_none() {
                    let now = Instant::now();
                    if plain_line_due(self.printed.get(stage), progress, now) {
                        self.printed.insert(stage.clone(), (progress.step, now));
                        self.line(&format!("stage {stage} {}", progress.describe()));
                    }
                }
            }
            Event::StageCached { stage, frozen } => {
                if p.verbosity() >= Verbosity::Verbose {
                    let what = if *frozen { "frozen" } else { "up to date" };
                    self.line(&format!("stage {stage} {what}"));
                }
            }
            Event::StageRestored {
                stage,
                reasons,
                pulled_from,
            } => {
                let from = match pulled_from {
                    Some(remote) => format!("pulled from {remote} and restored"),
                    None => "restored from the run cache".into(),
                };
                self.line(&format!(
                    "stage {stage} {from}, nothing ran ({})",
                    describe(reasons)
                ));
            }
            Event::RemoteRefused { stage, error } => {
                let msg = format!("stage {stage}: not pulled, it runs here instead: {error}");
                match &self.live {
                    Some(mp) => mp.suspend(|| p.warn(&msg)),
                    None => p.warn(&msg),
                }
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

/// A progress bar in text, then the numbers: `[█████·······] step 12/60 loss ...`.
fn live_line(p: &Progress) -> String {
    match p.total.filter(|&t| t > 0) {
        Some(total) => {
            const CELLS: u64 = 12;
            let full = (p.step.min(total) * CELLS / total) as usize;
            format!(
                "[{}{}] {}",
                "█".repeat(full),
                "·".repeat(CELLS as usize - full),
                p.describe()
            )
        }
        None => p.describe(),
    }
}

/// Whether plain output (no terminal) shows this progress: the first report, the last
/// step, each tenth of the steps (every 10 steps when the total is unknown), or a minute
/// after the previous line.
fn plain_line_due(last: Option<&(u64, Instant)>, p: &Progress, now: Instant) -> bool {
    let Some(&(step, at)) = last else {
        return true;
    };
    if p.step <= step {
        return false;
    }
    if p.total == Some(p.step) {
        return true;
    }
    let every = p.total.map_or(10, |t| (t / 10).max(1));
    p.step / every > step / every || now.duration_since(at) >= Duration::from_secs(60)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: u64, total: Option<u64>) -> Progress {
        Progress {
            step,
            total,
            loss: Some(1.25),
            valid_loss: None,
            tokens_per_second: Some(50.0),
        }
    }

    #[test]
    fn plain_lines_come_every_tenth_of_the_steps_and_at_the_end() {
        let t0 = Instant::now();
        let shown = |steps: &[u64], total: Option<u64>| -> Vec<u64> {
            let mut last = None;
            let mut out = Vec::new();
            for &s in steps {
                if plain_line_due(last.as_ref(), &at(s, total), t0) {
                    last = Some((s, t0));
                    out.push(s);
                }
            }
            out
        };
        let every: Vec<u64> = (1..=60).collect();
        assert_eq!(
            shown(&every, Some(60)),
            [1, 6, 12, 18, 24, 30, 36, 42, 48, 54, 60]
        );
        assert_eq!(
            shown(&[1, 2, 3, 3, 2, 4], Some(4)),
            [1, 2, 3, 4],
            "no repeats"
        );
        assert_eq!(shown(&[2, 7, 9, 10, 25], None), [2, 10, 25]);
        assert_eq!(
            shown(&[3, 31, 33, 60], Some(60)),
            [3, 31, 60],
            "polls skip steps"
        );
        let later = t0 + Duration::from_secs(61);
        assert!(plain_line_due(Some(&(7, t0)), &at(8, Some(1000)), later));
        assert!(!plain_line_due(Some(&(7, t0)), &at(8, Some(1000)), t0));
    }

    #[test]
    fn the_live_line_has_a_bar_when_the_total_is_known() {
        assert_eq!(
            live_line(&at(30, Some(60))),
            "[██████······] step 30/60 loss 1.2500 50.0 tok/s"
        );
        assert_eq!(live_line(&at(70, Some(60))).matches('█').count(), 12);
        assert_eq!(live_line(&at(3, None)), "step 3 loss 1.2500 50.0 tok/s");
    }
}
