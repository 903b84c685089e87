//! Schedules: a pipeline run by the system's scheduler (cron on Linux, launchd on macOS)
//! without anyone at the keyboard.
//!
//! A schedule has two halves:
//! - the **definition**, in the workspace (`runs/schedules/<name>/schedule.json`): which
//!   pipeline, `--set` overrides, the cron expression, the absolute `pipe` binary and the
//!   environment captured when it was added (cron starts jobs with an almost empty one);
//! - the **entry** in the scheduler ([`crontab`] block or [`launchd`] agent), which only says
//!   when to call `pipe schedule run <name>` in that workspace.
//!
//! `pipe schedule run` is what the scheduler calls, and what a user calls to run it now:
//! it rotates the log, runs `pipe run --skip-if-running` with the captured environment and
//! its output appended to `runs/schedules/<name>/log`, and records the outcome in
//! `last.json` for `pipe schedule status`. Overlap is prevented by pipe's own workspace lock
//! (not `flock`, which macOS lacks): a run that finds the lock held exits 75 (EX_TEMPFAIL)
//! and is recorded as skipped.

pub mod cron;
pub mod crontab;
pub mod launchd;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The exit code of a run skipped because another held the workspace lock (sysexits.h
/// `EX_TEMPFAIL`: try again later).
pub const EXIT_BUSY: i32 = 75;

/// Environment variables a scheduled run gets as they were when the schedule was added:
/// where programs and caches are, and where tracking goes. Credentials
/// (`MLFLOW_TRACKING_TOKEN`, passwords) are deliberately not captured: they would be written
/// in plain text into the crontab or a plist.
pub const CAPTURED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "TZ",
    "PIPE_CACHE_DIR",
    "XDG_CACHE_HOME",
    "PIPE_PYTHON",
    "MLFLOW_TRACKING_URI",
    "OPENBLAS_NUM_THREADS",
    // The user's session bus (`unix:path=/run/user/UID/bus` on systemd desktops), which
    // cron does not give its jobs: without it `notify: {desktop: true}` cannot reach the
    // Linux desktop. launchd agents run in the GUI session and need nothing.
    "DBUS_SESSION_BUS_ADDRESS",
];

/// How big a schedule's log may grow before it is rotated (`log` → `log.1` → … `log.3`).
pub const LOG_ROTATE_BYTES: u64 = 4 << 20;
/// How many rotated logs are kept.
pub const LOG_KEEP: u32 = 3;

/// A schedule's definition, as stored in the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique among the user's schedules (it names the crontab entry or launchd label).
    pub name: String,
    /// The pipeline file, as given (relative to the workspace root, or absolute).
    pub pipeline: String,
    /// `--set` overrides.
    #[serde(default)]
    pub sets: Vec<String>,
    /// The five cron fields.
    pub cron: String,
    /// The absolute path of the `pipe` binary that added it.
    pub pipe: PathBuf,
    /// The absolute workspace root.
    pub root: PathBuf,
    /// The environment the run gets ([`CAPTURED_ENV`] as it was at `add`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Who hears about this schedule's runs, besides the pipeline's own `notify:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<pipe_schema::notify::NotifyConfig>,
}

/// The variable through which `pipe schedule run` hands the schedule's `notify` to the
/// `pipe run` it starts (JSON).
pub const NOTIFY_ENV: &str = "PIPE_SCHEDULE_NOTIFY";

/// The outcome of a schedule's last run, as `pipe schedule run` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// Start, RFC 3339 UTC.
    pub started: String,
    /// Seconds since the epoch at start.
    pub started_unix: i64,
    /// End, RFC 3339 UTC; `None` while running.
    pub finished: Option<String>,
    /// Duration in seconds; `None` while running.
    pub duration_s: Option<f64>,
    /// `pipe run`'s exit code; `None` while running (or when killed by a signal).
    pub exit_code: Option<i32>,
    /// `running`, `succeeded`, `failed` or `skipped` (another run held the lock).
    pub outcome: String,
    /// The process running it (to tell a crashed run from a running one).
    pub pid: u32,
    /// The log it wrote to.
    pub log: PathBuf,
}

/// Checks a schedule name: it becomes part of a launchd label, a crontab comment and a
/// folder name, so only letters, digits, `-`, `_` and `.`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schedule name `{name}`: use up to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// The folder of a schedule's definition, log and last run in the workspace at `root`.
pub fn dir(root: &Path, name: &str) -> PathBuf {
    root.join("runs").join("schedules").join(name)
}

/// The definition file.
pub fn definition_path(root: &Path, name: &str) -> PathBuf {
    dir(root, name).join("schedule.json")
}

/// The log `pipe schedule run` appends to.
pub fn log_path(root: &Path, name: &str) -> PathBuf {
    dir(root, name).join("log")
}

/// The last run's record.
pub fn last_path(root: &Path, name: &str) -> PathBuf {
    dir(root, name).join("last.json")
}

/// Where the scheduler sends what `pipe` prints before it can open the log (a missing
/// binary, a bad flag): cron would otherwise mail it, usually to nobody.
pub fn scheduler_out_path(root: &Path, name: &str) -> PathBuf {
    dir(root, name).join("scheduler.out")
}

/// Reads a schedule's definition.
pub fn read(root: &Path, name: &str) -> anyhow::Result<Schedule> {
    let path = definition_path(root, name);
    let text = fs_err::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The schedules defined in the workspace at `root` (`runs/schedules/*/schedule.json`),
/// by name. `pipe schedule remove` deletes a definition, so these are the live ones;
/// unreadable definitions are left out.
pub fn definitions(root: &Path) -> Vec<Schedule> {
    let Ok(entries) = std::fs::read_dir(root.join("runs").join("schedules")) else {
        return Vec::new();
    };
    let mut out: Vec<Schedule> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| read(root, &name).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The schedules in the workspace at `root` that run the pipeline file `pipeline` with
/// exactly the overrides `sets` (a schedule's pipeline is relative to its root).
pub fn for_pipeline(root: &Path, pipeline: &Path, sets: &[String]) -> Vec<Schedule> {
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    definitions(root)
        .into_iter()
        .filter(|s| same_file(&s.root.join(&s.pipeline), pipeline) && s.sets == sets)
        .collect()
}

/// Writes a schedule's definition (atomically).
pub fn write(schedule: &Schedule) -> std::io::Result<()> {
    crate::atomic_write::write_json(&definition_path(&schedule.root, &schedule.name), schedule)
}

/// Reads the last run's record, if any.
pub fn read_last(root: &Path, name: &str) -> Option<LastRun> {
    let text = std::fs::read_to_string(last_path(root, name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The environment to capture now: [`CAPTURED_ENV`] where set.
pub fn capture_env() -> BTreeMap<String, String> {
    CAPTURED_ENV
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), std::env::var(k).ok()?)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Rotates `log` when it has grown past `max_bytes`: `log.N-1` → `log.N` … `log` → `log.1`,
/// keeping `keep` old logs. A missing log is fine.
pub fn rotate(log: &Path, max_bytes: u64, keep: u32) -> std::io::Result<()> {
    match std::fs::metadata(log) {
        Ok(m) if m.len() > max_bytes => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let numbered = |n: u32| {
        let mut s = log.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    };
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            fs_err::rename(&from, numbered(n + 1))?;
        }
    }
    fs_err::rename(log, numbered(1))
}

/// Single-quotes a word for `sh` (crontab lines run through `/bin/sh -c`).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line the scheduler runs (also shown by `pipe schedule list`).
pub fn command_args(schedule: &Schedule) -> Vec<String> {
    vec![
        schedule.pipe.to_string_lossy().into_owned(),
        "schedule".into(),
        "run".into(),
        schedule.name.clone(),
        "--root".into(),
        schedule.root.to_string_lossy().into_owned(),
    ]
}

/// What a scheduler backend has installed for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Installed {
    /// The schedule's name.
    pub name: String,
    /// Its workspace root.
    pub root: PathBuf,
    /// Its cron expression, as the entry says.
    pub cron: String,
}

/// A system scheduler: cron's crontab or launchd's agents.
pub trait Scheduler {
    /// `cron` or `launchd`.
    fn kind(&self) -> &'static str;
    /// The schedules pipe has installed for this user.
    fn installed(&self) -> anyhow::Result<Vec<Installed>>;
    /// Installs (or replaces) the entry for `schedule`.
    fn install(&self, schedule: &Schedule) -> anyhow::Result<()>;
    /// Removes the entry named `name`; `false` if there was none.
    fn uninstall(&self, name: &str) -> anyhow::Result<bool>;
}

/// The scheduler of this system: launchd on macOS, cron elsewhere.
pub fn system() -> Box<dyn Scheduler> {
    #[cfg(target_os = "macos")]
    {
        Box::new(launchd::Launchd::for_user())
    }
    #[cfg(not(target_os = "macos"))]
    {
        Box::new(crontab::Crontab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("nightly-v2.1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/pipe"), "/usr/bin/pipe");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn schedules_of_a_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.yaml"), "").unwrap();
        std::fs::write(root.join("b.yaml"), "").unwrap();
        let def = |name: &str, pipeline: &str, sets: &[&str]| Schedule {
            name: name.into(),
            pipeline: pipeline.into(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            cron: "0 2 * * *".into(),
            pipe: "/usr/bin/pipe".into(),
            root: root.clone(),
            env: BTreeMap::new(),
            notify: None,
        };
        write(&def("nightly", "a.yaml", &[])).unwrap();
        write(&def("long", "a.yaml", &["steps=9"])).unwrap();
        write(&def("other", "b.yaml", &[])).unwrap();
        let names = |p: &str, sets: &[String]| -> Vec<String> {
            for_pipeline(&root, &root.join(p), sets)
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names("a.yaml", &[]), ["nightly"]);
        assert_eq!(names("./a.yaml", &["steps=9".into()]), ["long"]);
        assert_eq!(names("b.yaml", &[]), ["other"]);
        assert!(names("c.yaml", &[]).is_empty());
        assert_eq!(definitions(&root).len(), 3);
    }

    #[test]
    fn rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        for round in 0..5 {
            std::fs::write(&log, format!("gen {round} ........")).unwrap();
            rotate(&log, 4, 3).unwrap();
        }
        assert!(!log.exists());
        let read = |n: u32| std::fs::read_to_string(dir.path().join(format!("log.{n}"))).unwrap();
        assert!(read(1).starts_with("gen 4"));
        assert!(read(2).starts_with("gen 3"));
        assert!(read(3).starts_with("gen 2"));
        assert!(!dir.path().join("log.4").exists());
        // Small logs stay.
        std::fs::write(&log, "x").unwrap();
        rotate(&log, 4, 3).unwrap();
        assert!(log.exists());
    }
}
