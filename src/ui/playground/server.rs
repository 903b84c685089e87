//! The playground's model server: one `pipe serve` child on a free loopback port, started
//! on demand with the base model a request needs, holding one model in memory at a time
//! (a request for another base stops it and starts a new one). Adapters are added to it
//! through its loopback admin route as requests name them. It is stopped when unused for
//! the idle time, when a run takes the `mlx` slot ([`super::slot`]), and when `pipe ui`
//! ends; on Linux it also dies with `pipe ui` if that is killed.
//!
//! Its output goes to `runs/ui/playground.log`, where a failed start can be read in full.

use pipe_engine::process::{self, Signal};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a model may take to load (a first use also downloads it).
const START_LIMIT: Duration = Duration::from_secs(600);

/// How long a stopped server may take to exit before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A running `pipe serve`.
#[derive(Debug)]
pub struct Running {
    /// Its process (the `pipe serve`, which became `pipe-mlx serve` in place).
    pub pid: u32,
    /// The base model it holds.
    pub model: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Adapter names loaded into it.
    pub adapters: BTreeSet<String>,
    exited: Arc<Mutex<Option<ExitStatus>>>,
}

impl Running {
    /// Whether the process is still there.
    pub fn alive(&self) -> bool {
        self.exited.lock().map(|e| e.is_none()).unwrap_or(false)
    }

    /// SIGINT (the server's own graceful stop), then SIGKILL if it lingers; waits for it.
    pub fn stop(&self) {
        if !self.alive() {
            return;
        }
        let _ = process::signal(self.pid, Signal::Interrupt);
        let deadline = Instant::now() + STOP_LIMIT;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            let _ = process::signal(self.pid, Signal::Kill);
            while self.alive() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Starts `pipe serve --model MODEL --port 0` in `root` and waits until it listens.
pub fn start(pipe_exe: &Path, root: &Path, model: &str) -> Result<Running, String> {
    let log_path = root.join("runs").join("ui").join("playground.log");
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let _ = writeln!(log, "--- pipe serve --model {model}");
    let mut command = Command::new(pipe_exe);
    command
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model",
            model,
        ])
        .current_dir(root)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        // Its own group: the terminal's Ctrl-C reaches `pipe ui`, which stops it in order.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    process::die_with_parent(&mut command);
    let exited = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (url_tx, url_rx) = std::sync::mpsc::channel::<String>();
    let seen = exited.clone();
    // This thread spawns the child and waits for it, so it lives exactly as long as the
    // child: the death signal above fires when it ends, i.e. only if `pipe ui` dies.
    std::thread::spawn(move || {
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = started_tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = started_tx.send(Ok(child.id()));
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut url_tx = Some(url_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                    // "serving base, ... on http://127.0.0.1:PORT (Ctrl-C to stop)"
                    if let Some(at) = line.find("on http://")
                        && let Some(tx) = url_tx.take()
                    {
                        let url = line[at + 3..].split_whitespace().next().unwrap_or("");
                        let _ = tx.send(url.to_owned());
                    }
                }
            });
        }
        let status = child.wait();
        if let Ok(mut e) = seen.lock() {
            *e = Some(status.unwrap_or_default());
        }
    });
    let pid = started_rx
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start {} serve: {e}", pipe_exe.display()))?;
    let mut running = Running {
        pid,
        model: model.to_owned(),
        url: String::new(),
        adapters: BTreeSet::new(),
        exited,
    };
    match url_rx.recv_timeout(START_LIMIT) {
        Ok(url) => {
            running.url = url;
            Ok(running)
        }
        Err(e) => {
            running.stop();
            let why = match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => "did not listen in time",
                std::sync::mpsc::RecvTimeoutError::Disconnected => "exited before listening",
            };
            Err(format!(
                "pipe serve --model {model} {why}; its output is in {}:\n{}",
                log_path.display(),
                last_lines(&log_path, 8)
            ))
        }
    }
}

/// The last `n` lines of `path`.
fn last_lines(path: &PathBuf, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
