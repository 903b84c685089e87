//! Running one trial: a command, or a train run followed by an optional evaluation, each a
//! child process, watched for intermediate values so the pruning rule can stop it early.
//!
//! A command trial runs in the workspace root with:
//! - `PIPE_TRIAL_DIR`: its own folder (absolute), where it writes `metrics.json` (the
//!   objective is read from it) and may append `{"step": N, "value": X}` lines to
//!   `intermediate.jsonl` for pruning. Once the pruning rule has judged the first N
//!   reports and let the trial go on, pipe writes N to `judged` there: a trial may wait
//!   for it before spending more (Optuna's `should_prune`); one that is pruned is stopped
//!   instead;
//! - `PIPE_TRIAL_PARAMS`: `params.json` in that folder, the trial's parameters nested by
//!   their dotted names; `PIPE_TRIAL_INDEX`, and `PIPE_TRIAL_ITERS` when the budget sets
//!   per-trial iterations;
//! - its argument placeholders filled in (see [`render`]).
//!
//! A train trial runs `pipe __run-stage train` with the point set into its options and its
//! `out_dir` in the trial folder; its validation losses (`train_log.jsonl`) are the
//! intermediate values. Then `pipe __run-stage evaluate` scores the adapter. The metrics
//! are `{"train": <train metrics.json>, "eval": <evaluate output>}`.
//!
//! Children run in their own process groups, so a pruned trial is stopped with everything
//! it started; an interrupt of the tune stage is forwarded to them (see [`Children`]).

use super::store::Store;
use crate::process::{Signal, signal_group};
use crate::spec::Cmd;
use crate::stages::Kind;
use crate::tune::prune::{Judge, Peer, Rule};
use crate::tune::suggest::Direction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It ran to the end and reported its objective.
    Complete,
    /// The pruning rule stopped it.
    Pruned,
    /// It failed (non-zero exit, or no objective in its metrics).
    Failed,
}

/// What a finished trial left behind (`trial.json` in its folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Why it was pruned or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `(step, value)` it reported while running.
    #[serde(default)]
    pub intermediate: Vec<(u64, f64)>,
    /// Wall time.
    pub seconds: f64,
    /// Peak memory, when the trial reported it (`peak_memory_bytes` in its metrics).
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// For a pruned trial, the rule that pruned it ([`rule_id`]): under another rule it
    /// runs again, since being pruned says nothing about the point under that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_under: Option<String>,
}

/// A pruning rule and the direction of its values, as recorded with the trials it pruned.
pub fn rule_id(rule: &Rule, direction: Direction) -> String {
    serde_json::json!({"rule": rule, "direction": direction}).to_string()
}

impl Outcome {
    /// Whether this finished trial stands under `pruning` (the rule and direction of the
    /// study now): complete and failed trials always do; a pruned one only under the rule
    /// that pruned it.
    pub fn stands_under(&self, pruning: Option<(&Rule, Direction)>) -> bool {
        self.status != Status::Pruned
            || self.pruned_under == pruning.map(|(rule, direction)| rule_id(rule, direction))
    }
}

/// What to run for one trial.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// A command with `{name}` placeholders.
    Cmd(Cmd),
    /// A train stage's options, and an evaluate stage's (without adapter and out).
    Train {
        /// `with:` of the train run (out_dir is set when it runs).
        train: Value,
        /// `with:` of the evaluate run, if any.
        evaluate: Option<Value>,
    },
}

/// One trial to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its position in the study.
    pub index: usize,
    /// Its trial key.
    pub key: String,
    /// Its parameters, nested by dotted name.
    pub params: Value,
    /// Per-trial iterations, when the budget sets them.
    pub iters: Option<u64>,
    /// A command's placeholder values (see [`render`]); `trial_dir` is added here.
    pub vars: BTreeMap<String, String>,
    /// What to run.
    pub plan: Plan,
}

/// Set when the tune stage is interrupted: trials ending after that were cut off, not
/// finished, so they are not stored (they run again next time).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The process groups of running trials, for interrupt forwarding and pruning.
#[derive(Debug, Default)]
pub struct Children(Mutex<Vec<u32>>);

impl Children {
    fn add(&self, pid: u32) {
        self.0.lock().expect("children").push(pid);
    }
    fn remove(&self, pid: u32) {
        self.0.lock().expect("children").retain(|p| *p != pid);
    }
    /// Sends `signal` to every running trial's process group (each was spawned with
    /// `process_group(0)`). A trial that has just ended is no error.
    pub fn signal_all(&self, signal: Signal) {
        for &pid in self.0.lock().expect("children").iter() {
            let _ = signal_group(pid, signal);
        }
    }
}

/// Pruning: the rule, the direction of intermediate values, and what every trial of the
/// study reported (shared between trials running at the same time).
pub struct Pruning<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// Whether intermediate values are minimised or maximised.
    pub direction: Direction,
    /// The reports of every trial by its index: finished trials (this run's and earlier
    /// runs'), and running trials as far as their reports were judged. A trial's own entry
    /// is left out when it is judged.
    pub peers: &'a Mutex<BTreeMap<usize, Peer>>,
}

/// Fills `{name}` placeholders in a trial command: a parameter's dotted name, `iters`,
/// `trial_dir`, `index`, and `args` (`--name=value` for every parameter). `${...}` (shell
/// variables) and braces holding anything but a name (`{a,b}`) are left alone; a name
/// that is none of these is an error, so a typo cannot run a trial without its parameter.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let close = after.find('}');
        let name = close.map(|c| &after[1..c]);
        let is_name = name.is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                && !n.starts_with('.')
        });
        match (name, close) {
            (Some(n), Some(c)) if is_name && !before.ends_with('$') => {
                let value = vars.get(n).ok_or_else(|| {
                    let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                    format!(
                        "unknown placeholder `{{{n}}}` in the trial command; known: {}",
                        known.join(", ")
                    )
                })?;
                out.push_str(value);
                rest = &after[c + 1..];
            }
            _ => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills the placeholders of every part of a command.
pub fn render_cmd(cmd: &Cmd, vars: &BTreeMap<String, String>) -> Result<Cmd, String> {
    Ok(match cmd {
        Cmd::Shell(line) => Cmd::Shell(render(line, vars)?),
        Cmd::Argv(argv) => Cmd::Argv(
            argv.iter()
                .map(|a| render(a, vars))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A JSON scalar as command text (strings without quotes).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Quotes `text` for `sh` when it holds anything beyond a safe set of characters.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=+@%".contains(c));
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A trial that has finished, here or in another tune stage.
#[derive(Debug)]
pub struct Finished {
    /// Its folder in the store.
    pub dir: PathBuf,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether another tune stage ran it while this one waited (see [`Store::claim`]).
    pub reused: bool,
}

/// Runs `job` in a fresh staging folder and moves the folder into the store, holding the
/// trial's claim meanwhile: when another tune stage (of this pipeline or another one in the
/// workspace) is running the same trial, this waits for it and takes its result instead.
/// Errors are only those of the tune stage itself (a folder that cannot be written); a
/// trial that fails is an [`Outcome`] with [`Status::Failed`].
pub fn run(
    root: &Path,
    store: &Store,
    job: &Job,
    pruning: Option<&Pruning<'_>>,
    children: &Children,
) -> anyhow::Result<Finished> {
    let _claim = store.claim(&job.key)?;
    let done = store.trial_dir(&job.key);
    if let Some(outcome) = std::fs::read_to_string(done.join("trial.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Outcome>(&t).ok())
        .filter(|o| o.stands_under(pruning.map(|p| (p.rule, p.direction))))
    {
        return Ok(Finished {
            dir: done,
            outcome,
            reused: true,
        });
    }
    let staging = store.staging_dir(&job.key)?;
    crate::atomic_write::write_json(&staging.join("params.json"), &job.params)?;
    let started = Instant::now();
    let log = fs_err::File::create(staging.join("log.txt"))?;
    let mut outcome = match &job.plan {
        Plan::Cmd(template) => {
            let mut vars = job.vars.clone();
            vars.insert("trial_dir".into(), staging.to_string_lossy().into_owned());
            let cmd = render_cmd(template, &vars).map_err(anyhow::Error::msg)?;
            let mut command = match &cmd {
                Cmd::Shell(line) => {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(line);
                    c
                }
                Cmd::Argv(argv) => {
                    let mut c = Command::new(&argv[0]);
                    c.args(&argv[1..]);
                    c
                }
            };
            leave_the_group(&mut command);
            command
                .env("PIPE_TRIAL_DIR", &staging)
                .env("PIPE_TRIAL_PARAMS", staging.join("params.json"))
                .env("PIPE_TRIAL_INDEX", job.index.to_string());
            if let Some(iters) = job.iters {
                command.env("PIPE_TRIAL_ITERS", iters.to_string());
            }
            let watch = staging.join("intermediate.jsonl");
            let judge = pruning.map(|p| (p, job.index));
            let judge = judge.map(|(p, i)| (p, i, Some(staging.join("judged"))));
            let (status, reports) = watch_child(command, root, &log, &watch, judge, children);
            let metrics = read_json(&staging.join("metrics.json"));
            finish(status, reports, metrics.ok(), &staging, &log)
        }
        Plan::Train { train, evaluate } => {
            let rel = staging.strip_prefix(root).unwrap_or(&staging);
            let train_dir = rel.join("train");
            let mut train = train.clone();
            train["out_dir"] = Value::from(train_dir.to_string_lossy().into_owned());
            let mut command = run_stage_command(Kind::TRAIN, root, &train)?;
            leave_the_group(&mut command);
            let watch = root.join(&train_dir).join("train_log.jsonl");
            let judge = pruning.map(|p| (p, job.index, None));
            let (status, reports) = watch_child(command, root, &log, &watch, judge, children);
            let train_metrics = read_json(&root.join(&train_dir).join("metrics.json"));
            match (status, train_metrics) {
                (ChildEnd::Exited(0), Ok(train_metrics)) => {
                    let mut metrics = serde_json::json!({ "train": train_metrics });
                    let mut status = ChildEnd::Exited(0);
                    if let Some(evaluate) = evaluate {
                        let mut evaluate = evaluate.clone();
                        let eval_out = rel.join("eval.json");
                        evaluate["adapter"] = Value::from(train_dir.to_string_lossy().into_owned());
                        evaluate["out"] = Value::from(eval_out.to_string_lossy().into_owned());
                        let mut command = run_stage_command(Kind::EVALUATE, root, &evaluate)?;
                        leave_the_group(&mut command);
                        status = watch_child(command, root, &log, Path::new(""), None, children).0;
                        if let Ok(report) = read_json(&root.join(&eval_out)) {
                            metrics["eval"] = report;
                        }
                    }
                    crate::atomic_write::write_json(&staging.join("metrics.json"), &metrics)?;
                    finish(status, reports, Some(metrics), &staging, &log)
                }
                (status, _) => finish(status, reports, None, &staging, &log),
            }
        }
    };
    outcome.seconds = started.elapsed().as_secs_f64();
    if outcome.status == Status::Pruned {
        outcome.pruned_under = pruning.map(|p| rule_id(p.rule, p.direction));
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    crate::atomic_write::write_json(&staging.join("trial.json"), &outcome)?;
    drop(log);
    let dir = store.commit(&staging, &job.key)?;
    Ok(Finished {
        dir,
        outcome,
        reused: false,
    })
}

/// The variables that make a process one rank of a distributed group. A tune stage that
/// runs over ranks is such a process; its trials are not ranks of its group, so they must
/// not inherit them (a train trial would try to join the tune's group).
const RANK_VARIABLES: [&str; 7] = [
    "MLX_RANK",
    "MLX_HOSTFILE",
    "MLX_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_RANK",
    "PMI_SIZE",
];

fn leave_the_group(command: &mut Command) {
    for var in RANK_VARIABLES {
        command.env_remove(var);
    }
    // An `srun` step's task variables would make a train trial one of the step's ranks.
    command.env_remove("SLURM_STEP_NUM_TASKS");
}

/// The command of a trial's train or evaluate run: `with` is resolved exactly as a stage's
/// would be, so a trial runs what the same stage would.
fn run_stage_command(kind: Kind, root: &Path, with: &Value) -> anyhow::Result<Command> {
    let resolved = kind
        .resolve(with)
        .map_err(|e| anyhow::anyhow!("trial `{}` options: {e}", kind.name()))?;
    Ok(crate::exec::launch::run_stage_command(
        kind.name(),
        root,
        &resolved.config,
    )?)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// How a child process ended.
#[derive(Debug, Clone, PartialEq)]
enum ChildEnd {
    Exited(i32),
    Signalled(i32),
    Pruned(String),
    NotStarted(String),
}

/// Spawns `command` and waits for it, reading `watch` (JSON lines with `step` and `value`
/// or `valid_loss`) from every 2 ms at first up to every 200 ms, and asking the pruning
/// rule about each new report, in order, for trial `judge.1`. Every judged report is
/// shared with the other trials at once; a pruned trial's reports end at the one that
/// stopped it. A trial allowed to go on is told how many reports were judged through the
/// file `judge.2`, if given.
fn watch_child(
    mut command: Command,
    root: &Path,
    log: &fs_err::File,
    watch: &Path,
    judge: Option<(&Pruning<'_>, usize, Option<PathBuf>)>,
    children: &Children,
) -> (ChildEnd, Vec<(u64, f64)>) {
    let mut reports = Vec::new();
    let mut judged = 0;
    let spawned =
        crate::exec::launch::configure_child(&mut command, root, log.file()).and_then(|()| {
            crate::exec::launch::spawn_registered(&mut command, root, "a tune trial", &[])
        });
    let (mut child, registration): (Child, _) = match spawned {
        Ok(c) => c,
        Err(e) => return (ChildEnd::NotStarted(e.to_string()), reports),
    };
    let pid = child.id();
    children.add(pid);
    // Poll often at first, so a trial that takes milliseconds (a cheap objective) is not
    // charged a whole 200 ms interval, then settle at 200 ms for long trials.
    let mut interval = Duration::from_millis(2);
    let end = loop {
        let status = child.try_wait();
        reports = read_reports(watch);
        if let Ok(Some(status)) = status {
            break exit_of(status);
        }
        if let Err(e) = status {
            break ChildEnd::NotStarted(format!("cannot wait for the trial: {e}"));
        }
        if let Some((p, index, ack)) = &judge
            && judged < reports.len()
        {
            let index = *index;
            let peers: Vec<Peer> = {
                let all = p.peers.lock().expect("peers");
                all.iter()
                    .filter(|(i, _)| **i != index)
                    .map(|(_, peer)| peer.clone())
                    .collect()
            };
            let mut verdict = None;
            while judged < reports.len() && verdict.is_none() {
                judged += 1;
                verdict = p.rule.check(p.direction, &reports[..judged], &peers);
            }
            reports.truncate(judged);
            p.peers.lock().expect("peers").insert(
                index,
                Peer {
                    complete: false,
                    reports: reports.clone(),
                },
            );
            if let Some(reason) = verdict {
                let _ = signal_group(pid, Signal::Kill);
                let _ = child.wait();
                break ChildEnd::Pruned(reason);
            }
            if let Some(ack) = ack {
                // Renamed into place, so a trial never reads half a number. Not synced:
                // it matters only while this process and the trial live.
                let tmp = ack.with_extension("tmp");
                if std::fs::write(&tmp, judged.to_string()).is_ok() {
                    let _ = std::fs::rename(&tmp, ack);
                }
            }
            // A trial that waits for the verdict should not wait out a long interval.
            interval = Duration::from_millis(1);
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(200));
    };
    // What the trial left running in its group must not outlive it (see
    // `process::wait_and_end_group`; here the child is already reaped).
    let _ = signal_group(pid, Signal::Kill);
    crate::process::wait_group_gone(pid);
    drop(registration);
    children.remove(pid);
    (end, reports)
}

fn exit_of(status: std::process::ExitStatus) -> ChildEnd {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return ChildEnd::Signalled(sig);
        }
    }
    ChildEnd::Exited(status.code().unwrap_or(-1))
}

/// `(step, value)` pairs from a JSON lines file: `{"step", "value"}` from commands,
/// `{"step", "valid_loss"}` from the trainer's step log (lines without one are skipped).
fn read_reports(path: &Path) -> Vec<(u64, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| {
            let step = v.get("step")?.as_u64()?;
            // The step log has `valid_loss: null` on steps that did not validate.
            let raw = v.get("value").or_else(|| v.get("valid_loss"))?;
            if raw.is_null() {
                return None;
            }
            Some((step, raw.as_f64().unwrap_or(f64::NAN)))
        })
        .collect()
}

fn finish(
    end: ChildEnd,
    intermediate: Vec<(u64, f64)>,
    metrics: Option<Value>,
    staging: &Path,
    log: &fs_err::File,
) -> Outcome {
    let _ = log.file().sync_all();
    let tail = || {
        let text = std::fs::read_to_string(staging.join("log.txt")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        if lines.is_empty() {
            String::new()
        } else {
            let shown: Vec<&str> = lines.into_iter().rev().collect();
            format!("; its log ends: {}", shown.join(" | "))
        }
    };
    let peak_memory_bytes = metrics.as_ref().and_then(|m| {
        m.get("peak_memory_bytes")
            .or_else(|| m.get("train").and_then(|t| t.get("peak_memory_bytes")))
            .and_then(Value::as_u64)
    });
    let (status, reason) = match end {
        ChildEnd::Exited(0) if metrics.is_some() => (Status::Complete, None),
        ChildEnd::Exited(0) => (
            Status::Failed,
            Some("it exited 0 but wrote no readable metrics.json".to_owned()),
        ),
        ChildEnd::Exited(code) => (
            Status::Failed,
            Some(format!("it exited with status {code}{}", tail())),
        ),
        ChildEnd::Signalled(sig) => (
            Status::Failed,
            Some(format!("it was killed by signal {sig}{}", tail())),
        ),
        ChildEnd::Pruned(why) => (Status::Pruned, Some(why)),
        ChildEnd::NotStarted(why) => (Status::Failed, Some(format!("cannot start it: {why}"))),
    };
    Outcome {
        status,
        reason,
        intermediate,
        seconds: 0.0,
        peak_memory_bytes,
        pruned_under: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("lr", "0.001"), ("lora.rank", "8")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_shell_syntax_is_left_alone() {
        assert_eq!(
            render(
                "train --lr {lr} --rank={lora.rank} ${HOME} {a,b} {} x{",
                &vars()
            )
            .unwrap(),
            "train --lr 0.001 --rank=8 ${HOME} {a,b} {} x{"
        );
        let err = render("train --lr {lrr}", &vars()).unwrap_err();
        assert!(
            err.contains("`{lrr}`") && err.contains("lora.rank, lr"),
            "{err}"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("1e-05"), "1e-05");
    }

    #[test]
    fn reports_come_from_commands_and_the_step_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        fs_err::write(
            &path,
            "{\"step\": 1, \"value\": 0.5}\n{\"step\": 2, \"loss\": 3}\n{\"step\": 3, \"valid_loss\": 0.25}\n{\"step\": 4, \"valid_loss\": null}\n{\"st",
        )
        .unwrap();
        assert_eq!(read_reports(&path), [(1, 0.5), (3, 0.25)]);
        assert!(read_reports(&dir.path().join("none")).is_empty());
    }
}
