//! The launchd backend (macOS): one LaunchAgent per schedule,
//! `~/Library/LaunchAgents/dev.pipe.schedule.<name>.plist`, loaded with
//! `launchctl bootstrap gui/<uid>` and removed with `launchctl bootout`.
//!
//! The plist is built by [`plist_xml`], which every platform compiles and tests (a golden
//! file, and a strict parse back with the `plist` crate), so the part that can be checked
//! off a Mac is; only the `launchctl` calls need one. launchd runs a job whose time passed
//! while the Mac slept once, at wake (cron on a sleeping Linux laptop skips it).

use super::cron::{CalendarInterval, CronExpr};
use super::{Installed, Schedule, Scheduler};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Labels of pipe's agents start with this.
pub const LABEL_PREFIX: &str = "dev.pipe.schedule.";

/// More calendar entries than this is surely a mistake (`*/2 * * * 1-5` is 150).
const MAX_INTERVALS: usize = 500;

/// Where Homebrew puts programs (Apple silicon, then Intel): launchd's default PATH
/// (`/usr/bin:/bin:/usr/sbin:/sbin`) lacks them, and pipelines call Homebrew's tools.
const HOMEBREW_PATHS: &[&str] = &["/opt/homebrew/bin", "/usr/local/bin"];

/// A LaunchAgent property list: the keys pipe writes (launchd.plist(5)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Agent {
    /// `dev.pipe.schedule.<name>`.
    pub label: String,
    /// `pipe schedule run <name> --root <root>`.
    pub program_arguments: Vec<String>,
    /// The workspace root.
    pub working_directory: PathBuf,
    /// The captured environment, with Homebrew's PATH.
    pub environment_variables: BTreeMap<String, String>,
    /// When to run.
    pub start_calendar_interval: Vec<Interval>,
    /// Where launchd sends stdout.
    pub standard_out_path: PathBuf,
    /// Where launchd sends stderr.
    pub standard_error_path: PathBuf,
}

/// One `StartCalendarInterval` dictionary; a missing key means any value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Interval {
    /// Minute 0-59.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub minute: Option<u32>,
    /// Hour 0-23.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hour: Option<u32>,
    /// Day of month 1-31.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub day: Option<u32>,
    /// Month 1-12.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub month: Option<u32>,
    /// Day of week, 0 = Sunday.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub weekday: Option<u32>,
}

impl From<CalendarInterval> for Interval {
    fn from(c: CalendarInterval) -> Self {
        Self {
            minute: c.minute,
            hour: c.hour,
            day: c.day,
            month: c.month,
            weekday: c.weekday,
        }
    }
}

/// The label of a schedule's agent.
pub fn label(name: &str) -> String {
    format!("{LABEL_PREFIX}{name}")
}

/// The agent for a schedule.
pub fn agent(schedule: &Schedule) -> Result<Agent, String> {
    let expr = CronExpr::parse(&schedule.cron)?;
    let mut env = schedule.env.clone();
    let path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    let mut dirs: Vec<&str> = HOMEBREW_PATHS
        .iter()
        .copied()
        .filter(|h| !path.split(':').any(|p| p == *h))
        .collect();
    dirs.push(&path);
    env.insert("PATH".into(), dirs.join(":"));
    let out = super::scheduler_out_path(&schedule.root, &schedule.name);
    Ok(Agent {
        label: label(&schedule.name),
        program_arguments: super::command_args(schedule),
        working_directory: schedule.root.clone(),
        environment_variables: env,
        start_calendar_interval: expr
            .calendar_intervals(MAX_INTERVALS)?
            .into_iter()
            .map(Interval::from)
            .collect(),
        standard_out_path: out.clone(),
        standard_error_path: out,
    })
}

/// The agent's plist as XML (what is written to `~/Library/LaunchAgents`).
pub fn plist_xml(schedule: &Schedule) -> Result<Vec<u8>, String> {
    let agent = agent(schedule)?;
    let mut bytes = Vec::new();
    plist::to_writer_xml(&mut bytes, &agent).map_err(|e| format!("cannot write the plist: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads an agent plist back (strictly: unknown keys or wrong types are errors).
pub fn parse(bytes: &[u8]) -> Result<Agent, String> {
    plist::from_bytes(bytes).map_err(|e| e.to_string())
}

/// The user's LaunchAgents, through `launchctl`.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(target_os = "macos"),
    allow(
        dead_code,
        reason = "selected on macOS only; compiled everywhere so it is checked"
    )
)]
pub struct Launchd {
    agents: PathBuf,
    uid: u32,
}

#[cfg_attr(
    not(target_os = "macos"),
    allow(
        dead_code,
        reason = "selected on macOS only; compiled everywhere so it is checked"
    )
)]
impl Launchd {
    /// The current user's agents folder and GUI domain.
    pub fn for_user() -> Self {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        Self {
            agents: home.join("Library").join("LaunchAgents"),
            // SAFETY: getuid cannot fail and has no preconditions.
            uid: unsafe { libc::getuid() },
        }
    }

    fn plist_path(&self, name: &str) -> PathBuf {
        self.agents.join(format!("{}.plist", label(name)))
    }

    fn launchctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        std::process::Command::new("launchctl")
            .args(args)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run `launchctl`: {e}"))
    }

    fn bootout(&self, name: &str) -> anyhow::Result<()> {
        // Not loaded is fine: the agent may never have been, or the Mac rebooted since.
        self.launchctl(&["bootout", &format!("gui/{}/{}", self.uid, label(name))])?;
        Ok(())
    }

    fn read_agent(path: &Path) -> Option<Agent> {
        parse(&std::fs::read(path).ok()?).ok()
    }
}

impl Scheduler for Launchd {
    fn kind(&self) -> &'static str {
        "launchd"
    }

    fn installed(&self) -> anyhow::Result<Vec<Installed>> {
        let Ok(dir) = std::fs::read_dir(&self.agents) else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file
                .strip_prefix(LABEL_PREFIX)
                .and_then(|f| f.strip_suffix(".plist"))
            else {
                continue;
            };
            let Some(agent) = Self::read_agent(&entry.path()) else {
                continue;
            };
            let cron = super::read(&agent.working_directory, name)
                .map(|s| s.cron)
                .unwrap_or_default();
            out.push(Installed {
                name: name.to_owned(),
                root: agent.working_directory,
                cron,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn install(&self, schedule: &Schedule) -> anyhow::Result<()> {
        let xml = plist_xml(schedule).map_err(anyhow::Error::msg)?;
        let path = self.plist_path(&schedule.name);
        self.bootout(&schedule.name)?;
        crate::atomic_write::write_atomic(&path, &xml)?;
        let out = self.launchctl(&[
            "bootstrap",
            &format!("gui/{}", self.uid),
            &path.to_string_lossy(),
        ])?;
        if !out.status.success() {
            anyhow::bail!(
                "`launchctl bootstrap` refused {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn uninstall(&self, name: &str) -> anyhow::Result<bool> {
        let path = self.plist_path(name);
        if !path.exists() {
            return Ok(false);
        }
        self.bootout(name)?;
        fs_err::remove_file(&path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = include_str!("testdata/dev.pipe.schedule.nightly.plist");

    fn nightly() -> Schedule {
        Schedule {
            name: "nightly".into(),
            pipeline: "pipelines/nightly.yaml".into(),
            sets: vec!["train.steps=100".into()],
            cron: "30 2 * * 1-5".into(),
            pipe: "/Users/me/.cargo/bin/pipe".into(),
            root: "/Users/me/proj".into(),
            env: BTreeMap::from([
                ("PATH".into(), "/usr/bin:/bin:/usr/local/bin".into()),
                ("PIPE_CACHE_DIR".into(), "/Users/me/cache".into()),
                ("MLFLOW_TRACKING_URI".into(), "http://mlflow:5000".into()),
            ]),
            notify: None,
        }
    }

    #[test]
    fn plist_matches_the_golden_file() {
        let xml = String::from_utf8(plist_xml(&nightly()).unwrap()).unwrap();
        assert_eq!(xml, GOLDEN, "the plist changed; new text:\n{xml}");
    }

    #[test]
    fn golden_file_parses_as_a_launch_agent() {
        // Parsed by the plist crate into the strict type (unknown keys, wrong types fail).
        let agent = parse(GOLDEN.as_bytes()).unwrap();
        assert_eq!(agent.label, "dev.pipe.schedule.nightly");
        assert_eq!(
            agent.program_arguments,
            [
                "/Users/me/.cargo/bin/pipe",
                "schedule",
                "run",
                "nightly",
                "--root",
                "/Users/me/proj"
            ]
        );
        // Homebrew's bin first; /usr/local/bin was already on PATH, so it is not repeated.
        assert_eq!(
            agent.environment_variables["PATH"],
            "/opt/homebrew/bin:/usr/bin:/bin:/usr/local/bin"
        );
        // Weekdays 1-5 at 02:30.
        assert_eq!(agent.start_calendar_interval.len(), 5);
        assert!(
            agent
                .start_calendar_interval
                .iter()
                .all(|i| i.hour == Some(2) && i.minute == Some(30) && i.day.is_none())
        );
        // And it is a generic plist dictionary with the types launchd expects.
        let value = plist::Value::from_reader_xml(GOLDEN.as_bytes()).unwrap();
        let dict = value.as_dictionary().unwrap();
        assert!(dict["StartCalendarInterval"].as_array().is_some());
        assert!(
            dict["StartCalendarInterval"].as_array().unwrap()[0]
                .as_dictionary()
                .unwrap()["Hour"]
                .as_unsigned_integer()
                .is_some()
        );
    }
}
