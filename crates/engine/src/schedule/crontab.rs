//! The cron backend: pipe's schedules live in one marked block of the user's crontab,
//! read with `crontab -l` and written back whole with `crontab -`. Lines outside the block
//! are kept byte for byte; removing the last schedule removes the block, so the crontab is
//! left exactly as it was before the first `add` (or removed, if there was none).
//!
//! ```text
//! # >>> pipe schedules (managed by `pipe schedule`; edit with pipe schedule add/remove) >>>
//! # pipe-schedule {"name":"nightly","root":"/srv/proj","cron":"30 2 * * *"}
//! 30 2 * * * cd /srv/proj && /usr/local/bin/pipe schedule run nightly --root /srv/proj >>/srv/proj/runs/schedules/nightly/scheduler.out 2>&1
//! # <<< pipe schedules <<<
//! ```
//!
//! Each entry is a comment with its name, root and expression as JSON (what `list` reads; no
//! shell parsing) followed by the line cron runs.

use super::{Installed, Schedule, Scheduler, shell_quote};
use std::io::Write;
use std::process::{Command, Stdio};

/// The first line of pipe's block.
pub const BEGIN: &str =
    "# >>> pipe schedules (managed by `pipe schedule`; edit with pipe schedule add/remove) >>>";
/// The last line of pipe's block.
pub const END: &str = "# <<< pipe schedules <<<";
const MARK: &str = "# pipe-schedule ";

/// One entry of the block: what it says, and its two lines as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name, root and expression.
    pub installed: Installed,
    /// The marker comment and the cron line, each ending in a newline.
    pub lines: String,
}

/// A crontab split around pipe's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Everything before the block (or the whole crontab when there is none).
    pub head: String,
    /// pipe's entries.
    pub entries: Vec<Entry>,
    /// Everything after the block.
    pub tail: String,
}

/// Splits a crontab's text around pipe's block. A block whose end marker is gone (edited by
/// hand) is an error rather than a guess at where it ends.
pub fn split(text: &str) -> Result<Split, String> {
    let mut head = String::new();
    let mut tail = String::new();
    let mut entries = Vec::new();
    let mut state = 0; // 0 before, 1 inside, 2 after
    let mut pending: Option<(Installed, String)> = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        match state {
            0 if bare == BEGIN => state = 1,
            0 => head.push_str(line),
            1 if bare == END => state = 2,
            1 => {
                if let Some(json) = bare.strip_prefix(MARK) {
                    #[derive(serde::Deserialize)]
                    struct Mark {
                        name: String,
                        root: std::path::PathBuf,
                        cron: String,
                    }
                    let m: Mark = serde_json::from_str(json)
                        .map_err(|e| format!("crontab: bad pipe-schedule marker `{bare}`: {e}"))?;
                    pending = Some((
                        Installed {
                            name: m.name,
                            root: m.root,
                            cron: m.cron,
                        },
                        line.to_owned(),
                    ));
                } else if let Some((installed, mark)) = pending.take() {
                    entries.push(Entry {
                        installed,
                        lines: format!("{mark}{line}"),
                    });
                }
                // Anything else inside the block (a stray blank line) is dropped on rewrite.
            }
            _ => tail.push_str(line),
        }
    }
    if state == 1 {
        return Err(format!(
            "your crontab has pipe's start marker but not its end marker `{END}`; fix it with `crontab -e` (remove pipe's lines) and add the schedules again"
        ));
    }
    Ok(Split {
        head,
        entries,
        tail,
    })
}

/// Joins a split crontab back together; no entries means no block at all.
pub fn join(split: &Split) -> String {
    let mut out = split.head.clone();
    if !split.entries.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(BEGIN);
        out.push('\n');
        for e in &split.entries {
            out.push_str(&e.lines);
        }
        out.push_str(END);
        out.push('\n');
    }
    out.push_str(&split.tail);
    out
}

/// The block entry for a schedule: its marker and the line cron runs.
pub fn entry(schedule: &Schedule) -> Entry {
    let installed = Installed {
        name: schedule.name.clone(),
        root: schedule.root.clone(),
        cron: schedule.cron.clone(),
    };
    let mark = serde_json::json!({
        "name": installed.name,
        "root": installed.root,
        "cron": installed.cron,
    });
    let command: Vec<String> = super::command_args(schedule)
        .iter()
        .map(|a| shell_quote(a))
        .collect();
    let out = super::scheduler_out_path(&schedule.root, &schedule.name);
    let line = format!(
        "cd {} && {} >>{} 2>&1",
        shell_quote(&schedule.root.to_string_lossy()),
        command.join(" "),
        shell_quote(&out.to_string_lossy()),
    );
    // crontab(5): an unescaped `%` in the command ends it (the rest becomes stdin).
    let line = line.replace('%', r"\%");
    Entry {
        installed,
        lines: format!("{MARK}{mark}\n{} {line}\n", schedule.cron),
    }
}

/// Waits (at most a second) until the cron spool folder's mtime is in the past.
///
/// Vixie/Debian cron notices a changed crontab by comparing the spool folder's mtime, in
/// whole seconds, with the one it saw at its last look (once a minute). Two changes in the
/// same second with the daemon's look between them (a `remove` then an `add`) leave the
/// mtime as the daemon last saw it, and it never loads the new crontab. Writing only once
/// the current second is past the folder's mtime makes every change visible.
fn settle_spool_mtime() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for dir in ["/var/spool/cron/crontabs", "/var/spool/cron"] {
        let Ok(mtime) = std::fs::metadata(dir).and_then(|m| m.modified()) else {
            continue;
        };
        let deadline = SystemTime::now() + Duration::from_millis(1100);
        while secs(SystemTime::now()) <= secs(mtime) && SystemTime::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
}

/// The user's crontab, through the `crontab` program.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crontab;

impl Crontab {
    /// The crontab's text; empty when the user has none.
    pub fn read(&self) -> anyhow::Result<String> {
        let out = Command::new("crontab")
            .arg("-l")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run `crontab -l`: {e} (is cron installed?)"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("no crontab for") {
            return Ok(String::new());
        }
        anyhow::bail!("`crontab -l` failed: {}", err.trim())
    }

    /// Replaces the crontab with `text`; an empty text removes the crontab.
    pub fn write(&self, text: &str) -> anyhow::Result<()> {
        settle_spool_mtime();
        if text.is_empty() {
            let out = Command::new("crontab")
                .arg("-r")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| anyhow::anyhow!("cannot run `crontab -r`: {e}"))?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !err.contains("no crontab for") {
                anyhow::bail!("`crontab -r` failed: {}", err.trim());
            }
            return Ok(());
        }
        let mut child = Command::new("crontab")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run `crontab -`: {e} (is cron installed?)"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "`crontab -` refused the new crontab: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn split(&self) -> anyhow::Result<Split> {
        split(&self.read()?).map_err(anyhow::Error::msg)
    }
}

impl Scheduler for Crontab {
    fn kind(&self) -> &'static str {
        "cron"
    }

    fn installed(&self) -> anyhow::Result<Vec<Installed>> {
        Ok(self
            .split()?
            .entries
            .into_iter()
            .map(|e| e.installed)
            .collect())
    }

    fn install(&self, schedule: &Schedule) -> anyhow::Result<()> {
        let mut split = self.split()?;
        let new = entry(schedule);
        match split
            .entries
            .iter_mut()
            .find(|e| e.installed.name == schedule.name)
        {
            Some(e) => *e = new,
            None => split.entries.push(new),
        }
        self.write(&join(&split))
    }

    fn uninstall(&self, name: &str) -> anyhow::Result<bool> {
        let mut split = self.split()?;
        let before = split.entries.len();
        split.entries.retain(|e| e.installed.name != name);
        if split.entries.len() == before {
            return Ok(false);
        }
        self.write(&join(&split))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(name: &str, root: &str) -> Schedule {
        Schedule {
            name: name.into(),
            pipeline: "pipe.yaml".into(),
            sets: vec![],
            cron: "30 2 * * *".into(),
            pipe: "/usr/local/bin/pipe".into(),
            root: root.into(),
            env: Default::default(),
            notify: None,
        }
    }

    #[test]
    fn add_then_remove_restores_the_text() {
        for original in ["", "MAILTO=me\n0 1 * * * backup\n", "# no newline at end"] {
            let mut s = split(original).unwrap();
            assert!(s.entries.is_empty());
            s.entries.push(entry(&schedule("a", "/srv/a b")));
            s.entries.push(entry(&schedule("b", "/srv/100%")));
            let with = join(&s);
            assert!(with.starts_with(original.trim_end_matches('\n')));
            let mut again = split(&with).unwrap();
            assert_eq!(again.entries, s.entries);
            again.entries.clear();
            let back = join(&again);
            if original.ends_with('\n') || original.is_empty() {
                assert_eq!(back, original);
            } else {
                assert_eq!(back, format!("{original}\n"));
            }
        }
    }

    #[test]
    fn lines_are_quoted_for_sh_and_cron() {
        let e = entry(&schedule("a", "/srv/100% sure"));
        let cron_line = e.lines.lines().nth(1).unwrap();
        assert_eq!(
            cron_line,
            r"30 2 * * * cd '/srv/100\% sure' && /usr/local/bin/pipe schedule run a --root '/srv/100\% sure' >>'/srv/100\% sure/runs/schedules/a/scheduler.out' 2>&1"
        );
    }

    #[test]
    fn lines_around_the_block_stay() {
        let mut s = split("A\n").unwrap();
        s.entries.push(entry(&schedule("a", "/r")));
        let text = format!("{}Z\n", join(&s));
        let s = split(&text).unwrap();
        assert_eq!(s.head, "A\n");
        assert_eq!(s.tail, "Z\n");
        assert_eq!(s.entries[0].installed.name, "a");
    }

    #[test]
    fn a_broken_block_is_an_error() {
        let e = split(&format!("{BEGIN}\n0 * * * * x\n")).unwrap_err();
        assert!(e.contains("end marker"), "{e}");
    }
}
