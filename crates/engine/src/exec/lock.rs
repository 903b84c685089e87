//! The workspace lock: one `pipe run` per workspace at a time.
//!
//! `<root>/cache/run.lock` is locked with an OS file lock (`File::try_lock`) and holds the
//! holder's PID as text, then what it is doing when that is not a `pipe run` (`pipe ui`
//! building an export, say). The OS drops the lock when its holder dies, even by `kill -9`,
//! so a stale lock is taken over without any guessing; the PID and description are only
//! for messages ("waiting for another pipe run (pid 1234)") and to report that a dead run
//! left its file behind.
//!
//! Other commands that write what a run reads or writes take the same lock: `pipe gc`,
//! `pipe pull`, `pipe data checkout`, and `pipe ui` while it builds an export from an
//! adapter folder (a training started meanwhile waits, rather than rewriting the folder
//! under it).
//! The lock file descriptor is close-on-exec, so stage commands never inherit the lock.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// I/O on the lock file failed (a read-only cache folder, say). The OS error is part
    /// of the message rather than a source: `pipe run`, `gc` and `data checkout` print
    /// this error alone, and the cause is what the user needs.
    #[error("cannot lock {path}: {error}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Another run held the lock for longer than `--wait-timeout`.
    #[error("{holder} holds {path}; gave up after {waited_s}s (--wait-timeout)")]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
        /// Seconds waited.
        waited_s: u64,
    },
}

/// Who holds the lock, as far as its file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Its process, if the file names one.
    pub pid: Option<u32>,
    /// What it is doing, if it is not a `pipe run` (`pipe ui, building an export`).
    pub what: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            Some(what) => write!(f, "{what}")?,
            None => write!(f, "another pipe run")?,
        }
        match self.pid {
            Some(pid) => write!(f, " (pid {pid})"),
            None => Ok(()),
        }
    }
}

/// The variable a stage process gets: the PID of the `pipe run` that started it.
pub const PARENT_RUN_ENV: &str = "PIPE_PARENT_RUN";

/// The held lock; released on drop.
#[derive(Debug)]
pub struct WorkspaceLock {
    file: std::fs::File,
    /// Held by the parent run (a `pipe run` started by one of its stages): this run neither
    /// took nor releases it.
    pub nested: bool,
    /// A PID found in the file that belonged to a dead process (a run that was killed).
    pub stale_pid: Option<u32>,
}

/// The file's first line is the PID; a second, if any, says what the holder is doing.
fn read_holder(file: &mut std::fs::File) -> Holder {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return Holder::default();
    }
    let mut lines = text.lines();
    Holder {
        pid: lines.next().and_then(|l| l.trim().parse().ok()),
        what: lines
            .next()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned),
    }
}

/// Takes the lock of the workspace at `root` for a `pipe run`, waiting up to `timeout`
/// (forever if `None`). `on_wait` is called once, with the holder, if the lock is busy.
pub fn acquire(
    root: &Path,
    timeout: Option<Duration>,
    on_wait: impl FnMut(&Holder),
) -> Result<WorkspaceLock, LockError> {
    acquire_as(root, timeout, None, on_wait)
}

/// [`acquire`] for a holder that is not a `pipe run`: `what` is shown to those who wait.
pub fn acquire_as(
    root: &Path,
    timeout: Option<Duration>,
    what: Option<&str>,
    mut on_wait: impl FnMut(&Holder),
) -> Result<WorkspaceLock, LockError> {
    let path = root.join("cache").join("run.lock");
    let io = |error| LockError::Io {
        path: path.clone(),
        error,
    };
    fs_err::create_dir_all(path.parent().expect("has parent")).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                let pid = holder.pid;
                // A stage of the run holding the lock started this run (a monitor's
                // retraining): waiting would wait for our own parent. Run inside its lock;
                // the parent waits for us, so nothing else runs meanwhile but its other
                // stages, which write other outs.
                if pid.is_some()
                    && std::env::var(PARENT_RUN_ENV)
                        .ok()
                        .and_then(|p| p.parse().ok())
                        == pid
                {
                    return Ok(WorkspaceLock {
                        file,
                        nested: true,
                        stale_pid: None,
                    });
                }
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                if timeout.is_some_and(|t| start.elapsed() >= t) {
                    return Err(LockError::Timeout {
                        path,
                        holder,
                        waited_s: start.elapsed().as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let stale_pid = read_holder(&mut file)
        .pid
        .filter(|&p| p != std::process::id() && !crate::process::is_alive(p));
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    match what {
        Some(what) => write!(file, "{}\n{}", std::process::id(), what.replace('\n', " ")),
        None => write!(file, "{}", std::process::id()),
    }
    .map_err(io)?;
    file.flush().map_err(io)?;
    Ok(WorkspaceLock {
        file,
        nested: false,
        stale_pid,
    })
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        if self.nested {
            return;
        }
        // Empty the PID first so nobody reads ours after we are gone; the lock itself is
        // released when the file is closed.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_told_who_holds_the_lock_and_what_it_is_doing() {
        let root = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let held = acquire_as(
            root.path(),
            None,
            Some("pipe ui, building an export"),
            |_| {},
        )
        .unwrap();
        let mut seen = None;
        let busy = acquire(root.path(), Some(Duration::ZERO), |h| {
            seen = Some(h.clone())
        });
        let Err(LockError::Timeout { holder, .. }) = busy else {
            panic!("the lock is held: {busy:?}");
        };
        assert_eq!(seen.as_ref(), Some(&holder));
        assert_eq!(
            holder.to_string(),
            format!("pipe ui, building an export (pid {me})")
        );
        drop(held);
        let run = acquire(root.path(), None, |_| {}).unwrap();
        let busy = acquire(root.path(), Some(Duration::ZERO), |_| {});
        let Err(LockError::Timeout { holder, .. }) = busy else {
            panic!("the lock is held: {busy:?}");
        };
        assert_eq!(holder.to_string(), format!("another pipe run (pid {me})"));
        drop(run);
    }
}
