//! MLflow sync in the background of `pipe run`: stages are sent as they settle, on a
//! thread of their own, so a slow or dead server never slows a stage. Whatever is not
//! sent when the run ends stays in the history's outbox for `pipe runs sync` (or the next
//! `pipe run`, which tries pending runs first).

use super::output::Printer;
use pipe_engine::tracking::sync::{self, SyncError, SyncReport};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// How long `pipe run` waits at its end for the last sync (uploads of a finished run).
const FINAL_WAIT: Duration = Duration::from_secs(120);

enum Message {
    /// A stage settled: send what is new.
    Changed,
    /// The run is recorded as finished: send the rest and report.
    Finish,
    /// A stage that reads the registry is about to start: send what settled before it
    /// (a compare stage's alias move above all) and say when done.
    Flush(mpsc::Sender<Result<(), String>>),
}

/// The background sync of one run.
pub struct Background {
    tx: mpsc::Sender<Message>,
    done: mpsc::Receiver<Result<SyncReport, String>>,
}

impl Background {
    /// Starts syncing run `id` of the workspace at `root` (and, first, older runs still
    /// pending there).
    pub fn start(root: PathBuf, id: String) -> Self {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut down: Option<String> = None;
            for old in sync::pending(&root).into_iter().filter(|o| *o != id) {
                if let Err(e) = sync::sync_run(&root, &old, false) {
                    down = Some(e.to_string());
                    break;
                }
            }
            for message in rx {
                // After a failure, wait for the end: one more try then, not one per stage.
                if down.is_some() && matches!(message, Message::Changed) {
                    continue;
                }
                if let Message::Flush(reply) = message {
                    let outcome = sync::sync_run(&root, &id, true);
                    down = outcome.as_ref().err().map(ToString::to_string);
                    let _ = reply.send(outcome.map(|_| ()).map_err(|e| e.to_string()));
                    continue;
                }
                let outcome = sync::sync_run(&root, &id, matches!(message, Message::Finish));
                match (message, outcome) {
                    (Message::Finish, outcome) => {
                        let _ = done_tx.send(outcome.map_err(|e: SyncError| e.to_string()));
                        return;
                    }
                    (Message::Changed, Err(e)) => down = Some(e.to_string()),
                    (Message::Changed, Ok(_)) => down = None,
                    (Message::Flush(_), _) => unreachable!("answered above"),
                }
            }
        });
        Background { tx, done }
    }

    /// A stage settled.
    pub fn changed(&self) {
        let _ = self.tx.send(Message::Changed);
    }

    /// Sends everything settled so far and waits for it (a bounded time): a stage that
    /// reads the registry (`registry: NAME@ALIAS`) then finds the alias where this run's
    /// compare stage moved it, not where the previous run left it.
    pub fn flush(&self, printer: &Printer, stage: &str) {
        let (reply, answer) = mpsc::channel();
        if self.tx.send(Message::Flush(reply)).is_err() {
            return;
        }
        match answer.recv_timeout(FINAL_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => printer.warn(&format!(
                "{e}\nstage `{stage}` reads the registry as the server has it, which may not \
                 include this run's changes yet"
            )),
            Err(_) => printer.warn(&format!(
                "MLflow did not take this run's changes within {}s; stage `{stage}` reads \
                 the registry as it is",
                FINAL_WAIT.as_secs()
            )),
        }
    }

    /// The run is over: waits (a bounded time) for the last sync and says how it went.
    pub fn finish(self, printer: &Printer, server: &str) {
        let _ = self.tx.send(Message::Finish);
        match self.done.recv_timeout(FINAL_WAIT) {
            Ok(Ok(report)) if report.complete => {
                printer.status(&format!("tracked on MLflow at {server}"));
                for w in &report.warnings {
                    printer.warn(w);
                }
            }
            Ok(Ok(_)) => printer.warn(&format!(
                "MLflow at {server}: another sync of this run is in progress; `pipe runs sync` \
                 finishes it"
            )),
            Ok(Err(e)) => printer.warn(&format!(
                "{e}\nthe run is recorded locally and waits in the outbox: `pipe runs sync` \
                 sends it (the next `pipe run` tries too)"
            )),
            Err(_) => printer.warn(&format!(
                "MLflow at {server} did not take the run within {}s; `pipe runs sync` sends \
                 the rest",
                FINAL_WAIT.as_secs()
            )),
        }
    }
}
