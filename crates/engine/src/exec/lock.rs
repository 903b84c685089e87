//! The workspace lock: one `pipe run` per workspace at a time.
//!
//! `<root>/cache/run.lock` is locked with an OS file lock (`File::try_lock`) and holds the
//! holder's PID as text. The OS drops the lock when its holder dies, even by `kill -9`, so
//! a stale lock is taken over without any guessing; the PID is only for messages ("waiting
//! for another pipe run (pid 1234)") and to report that a dead run left its file behind.
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
    #[error("another pipe run{} holds {path}; gave up after {waited_s}s (--wait-timeout)", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// The holder, if known.
        pid: Option<u32>,
        /// Seconds waited.
        waited_s: u64,
    },
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

fn read_pid(file: &mut std::fs::File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Takes the lock of the workspace at `root`, waiting up to `timeout` (forever if `None`).
/// `on_wait` is called once, with the holder's PID, if the lock is busy.
pub fn acquire(
    root: &Path,
    timeout: Option<Duration>,
    mut on_wait: impl FnMut(Option<u32>),
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
                let pid = read_pid(&mut file);
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
                    on_wait(pid);
                    told = true;
                }
                if timeout.is_some_and(|t| start.elapsed() >= t) {
                    return Err(LockError::Timeout {
                        path,
                        pid,
                        waited_s: start.elapsed().as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let stale_pid =
        read_pid(&mut file).filter(|&p| p != std::process::id() && !crate::process::is_alive(p));
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
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
