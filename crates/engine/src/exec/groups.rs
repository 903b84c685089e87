//! The process groups a run started, recorded in `cache/v1/groups/<pgid>.json` while they
//! run, so that the run taking the workspace over after a `kill -9` ends what survived.
//!
//! Why: every stage command and tune trial runs in its own process group and, on Linux,
//! dies with the process that started it (`PR_SET_PDEATHSIG`, [`super::launch`]). That
//! signal reaches only the direct child: what the command started itself (the `python`
//! under `sh -c`, the `cat > out` of a shell pipeline) is handed to init and keeps running,
//! writing outs that the next run is about to rebuild or that are hardlinked into the
//! cache. A record names the group, the process that started it and the outs being
//! written; it is removed as soon as the command has ended.
//!
//! [`reap`] runs once the workspace lock is held. A record whose starting process is gone
//! belongs to a dead run: its group is killed and its outs (and the atomic writer's
//! temporary files beside them) are removed, since they can only be partial.
//!
//! A process group id is a process id, which the system may reuse once the group is
//! empty. So on Linux a group is killed only if one of its members has this workspace's
//! `PIPE_ROOT` in its environment (every process pipe starts for a pipeline gets it, and
//! what those start inherit it). Elsewhere there is no such check: a group that still
//! exists is reported with the command that ends it, not killed.
//!
//! Stages run as Slurm jobs (`--executor slurm`) are recorded the same way, as
//! `slurm-<job id>.json`: a job outlives a killed `pipe run` (the cluster runs it), so the
//! next run cancels it with `scancel`, waits for it to end, and removes its partial outs.
//!
//! Not covered: a process that left its group (`setsid`, a daemon), and a grandchild
//! started in the microseconds between `spawn` and the record being written.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What is recorded about a running group.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The group (the pid of the command pipe started).
    pgid: u32,
    /// The process that started it (`pipe run`, or a tune stage for its trials).
    owner: u32,
    /// What it runs for: a stage name, or `tune trial` and the trial's folder.
    what: String,
    /// Workspace-relative outs the command writes.
    outs: Vec<String>,
    /// The Slurm job the stage runs as, for a record of a job rather than a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slurm_job: Option<String>,
}

/// A record on disk, removed when dropped (the command has ended).
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The folder of records of the workspace at `root`.
fn dir(root: &Path) -> PathBuf {
    root.join("cache").join("v1").join("groups")
}

/// Records that group `pgid`, just started by this process for `what`, writes `outs`.
///
/// Not synced: after a power loss no process of the group is left to end.
pub fn register(
    root: &Path,
    pgid: u32,
    what: &str,
    outs: &[String],
) -> std::io::Result<Registration> {
    let record = Record {
        pgid,
        owner: std::process::id(),
        what: what.to_owned(),
        outs: outs.to_vec(),
        slurm_job: None,
    };
    write(root, &format!("{pgid}.json"), &record)
}

/// Records that Slurm job `job`, just submitted by this process for `what`, writes `outs`.
pub fn register_slurm_job(
    root: &Path,
    job: &str,
    what: &str,
    outs: &[String],
) -> std::io::Result<Registration> {
    let record = Record {
        pgid: 0,
        owner: std::process::id(),
        what: what.to_owned(),
        outs: outs.to_vec(),
        slurm_job: Some(job.to_owned()),
    };
    write(root, &format!("slurm-{job}.json"), &record)
}

fn write(root: &Path, name: &str, record: &Record) -> std::io::Result<Registration> {
    let path = dir(root).join(name);
    let bytes = serde_json::to_vec(record)?;
    let mut file = crate::atomic_write::AtomicFile::create(&path)?.without_sync();
    std::io::Write::write_all(&mut file, &bytes)?;
    file.commit()?;
    Ok(Registration { path })
}

/// What [`reap`] did about one group of a dead run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The group (0 for a Slurm job).
    pub pgid: u32,
    /// The Slurm job, when the stage ran as one.
    pub slurm_job: Option<String>,
    /// What it ran for.
    pub what: String,
    /// Processes of the group that were still running and were killed.
    pub killed: usize,
    /// Whether processes of the group may still be running (not killed: no way to check
    /// they are ours on this system, or they did not die in time).
    pub still_running: bool,
    /// Outs and temporary files removed.
    pub removed: Vec<PathBuf>,
}

/// Ends the groups that dead runs left in the workspace at `root`, and removes what they
/// were writing. Call it only while holding the workspace lock. Records of live owners are
/// left alone (a tune stage of this very run, say).
pub fn reap(store: &crate::cache::Store) -> Vec<Leftover> {
    let root = store.root();
    let Ok(entries) = std::fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            // A torn or foreign file names no group we could end.
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if crate::process::is_alive(record.owner) {
            continue;
        }
        let (killed, still_running) = match &record.slurm_job {
            Some(job) => super::slurm::cancel_leftover(job),
            None => end_group(root, record.pgid),
        };
        let mut removed = Vec::new();
        if !still_running {
            for out in &record.outs {
                let target = root.join(out);
                for temp in crate::atomic_write::temporary_files_of(&target) {
                    if std::fs::remove_file(&temp).is_ok() {
                        removed.push(temp);
                    }
                }
                if target.symlink_metadata().is_ok() && store.remove(out).is_ok() {
                    removed.push(target);
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        found.push(Leftover {
            pgid: record.pgid,
            slurm_job: record.slurm_job,
            what: record.what,
            killed,
            still_running,
            removed,
        });
    }
    // Task files of a dead run's job arrays: its jobs have ended unless one could not be
    // stopped, whose task may still read its file.
    if found.iter().all(|l| !l.still_running) {
        super::slurm::array::remove_orphans(root);
    }
    found.sort_by_key(|l| l.pgid);
    found
}

/// Kills what is left of group `pgid` if it is this workspace's; returns how many
/// processes were killed and whether any may still run.
#[cfg(target_os = "linux")]
fn end_group(root: &Path, pgid: u32) -> (usize, bool) {
    let members = crate::process::group_members(pgid);
    if members.is_empty() {
        return (0, false);
    }
    if !members.iter().any(|&pid| linux::runs_for(pid, root)) {
        // The id was reused by someone else's group: not ours to end.
        return (0, false);
    }
    let _ = crate::process::signal_group(pgid, crate::process::Signal::Kill);
    // The outs are removed only once nothing can write them any more.
    let gone = crate::process::wait_group_gone(pgid);
    (members.len(), !gone)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn end_group(_root: &Path, pgid: u32) -> (usize, bool) {
    // No portable way to tell our group from a reused id: report, don't kill.
    let exists = i32::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        // SAFETY: signal 0 sends nothing; it asks whether the group exists.
        .is_some_and(|p| unsafe { libc::kill(-p, 0) } == 0);
    (0, exists)
}

#[cfg(not(unix))]
fn end_group(_root: &Path, _pgid: u32) -> (usize, bool) {
    (0, false)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    /// Whether `pid` carries `PIPE_ROOT` naming the workspace at `root`.
    pub(super) fn runs_for(pid: u32, root: &Path) -> bool {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let want = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        env.split(|&b| b == 0)
            .filter_map(|var| var.strip_prefix(b"PIPE_ROOT="))
            .any(|value| {
                use std::os::unix::ffi::OsStrExt;
                let value = Path::new(std::ffi::OsStr::from_bytes(value));
                std::fs::canonicalize(value).is_ok_and(|v| v == want)
            })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::cache::Store;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// Starts `sh -c script` in its own group with `PIPE_ROOT=root`, like a stage.
    fn start(root: &Path, script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", script])
            .env("PIPE_ROOT", root)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn write_record(root: &Path, record: &Record) {
        let path = dir(root).join(format!("{}.json", record.pgid));
        crate::atomic_write::write_json(&path, record).unwrap();
    }

    /// A process id that is certainly dead: a child that was reaped.
    fn dead_pid() -> u32 {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_dead_runs_group_is_killed_and_its_outs_removed() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path();
        std::fs::write(root.join("out.txt"), "partial").unwrap();
        std::fs::write(root.join(".out.txt.abc123.tmp.txt"), "half").unwrap();
        // The grandchild `sleep` is what outlives a killed pipe; `wait` keeps sh in place.
        let mut child = start(root, "sleep 600 & wait");
        let pgid = child.id();
        write_record(
            root,
            &Record {
                pgid,
                owner: dead_pid(),
                what: "stage".into(),
                outs: vec!["out.txt".into()],
                slurm_job: None,
            },
        );
        let found = reap(&Store::open(root));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pgid, pgid);
        assert_eq!(found[0].killed, 2, "sh and sleep: {found:?}");
        assert!(!found[0].still_running);
        assert!(!root.join("out.txt").exists());
        assert!(!root.join(".out.txt.abc123.tmp.txt").exists());
        assert!(crate::process::group_members(pgid).is_empty());
        child.wait().unwrap();
        assert!(reap(&Store::open(root)).is_empty(), "the record is gone");
    }

    #[test]
    fn a_live_owners_group_and_another_workspaces_group_are_left_alone() {
        let ws = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut ours = start(ws.path(), "sleep 600 & wait");
        let mut theirs = start(other.path(), "sleep 600 & wait");
        // Ours, but its owner (this test process) is alive.
        write_record(
            ws.path(),
            &Record {
                pgid: ours.id(),
                owner: std::process::id(),
                what: "live".into(),
                outs: vec![],
                slurm_job: None,
            },
        );
        // A record whose group id now belongs to another workspace's processes.
        write_record(
            ws.path(),
            &Record {
                pgid: theirs.id(),
                owner: dead_pid(),
                what: "reused".into(),
                outs: vec![],
                slurm_job: None,
            },
        );
        let found = reap(&Store::open(ws.path()));
        assert_eq!(found.len(), 1, "only the dead owner's record: {found:?}");
        assert_eq!((found[0].what.as_str(), found[0].killed), ("reused", 0));
        assert!(!crate::process::group_members(ours.id()).is_empty());
        assert!(!crate::process::group_members(theirs.id()).is_empty());
        for c in [&mut ours, &mut theirs] {
            crate::process::signal_group(c.id(), crate::process::Signal::Kill).unwrap();
            c.wait().unwrap();
        }
    }
}
