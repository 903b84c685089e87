//! Test workspace builder: a temp directory with files and a pipeline, and helpers to run
//! the `pipe` binary in it and read its JSON Lines events.

use assert_cmd::Command;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A temporary workspace.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

/// The outcome of `pipe run --json`.
pub struct Run {
    pub code: i32,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Run {
    fn stages(&self, event: &str) -> BTreeSet<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == event)
            .map(|e| e["stage"].as_str().unwrap().to_owned())
            .collect()
    }
    /// Stages whose command ran to success.
    pub fn ran(&self) -> BTreeSet<String> {
        self.stages("stage-finish")
    }
    /// Stages restored from the run cache.
    pub fn restored(&self) -> BTreeSet<String> {
        self.stages("stage-restored")
    }
    /// Stages that started (ran, whatever the outcome).
    pub fn started(&self) -> BTreeSet<String> {
        self.stages("stage-start")
    }
    pub fn failed(&self) -> BTreeSet<String> {
        self.stages("stage-failed")
    }
    pub fn event(&self, event: &str, stage: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == event && e["stage"] == stage)
            .unwrap_or_else(|| panic!("no {event} for {stage} in {:#?}", self.events))
    }
}

/// A set of stage names, for comparisons.
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

impl Ws {
    pub fn new() -> Self {
        // Several tests run MLX in this process. At exit, glibc then runs OpenBLAS's and
        // MLX's library destructors, which can hang or abort (seen once as "malloc_consolidate():
        // unaligned fastbin chunk" after every test had passed); the binaries avoid them with
        // this guard, which keeps the exit status. Nearly every test makes a workspace.
        pipe_mlx_core::exit_guard::install();
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating directories).
    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Outs restored from the cache may be read-only hardlinks: replace, don't write through.
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, content).unwrap();
        self
    }

    /// Writes `pipe.yaml`.
    pub fn pipeline(&self, yaml: &str) -> &Self {
        self.file("pipe.yaml", yaml)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// The `pipe` command, in the workspace.
    pub fn pipe(&self) -> Command {
        let mut c = Command::cargo_bin("pipe").unwrap();
        c.current_dir(self.dir.path()).env("NO_COLOR", "1");
        c
    }

    /// `pipe run --json <args>`, parsed.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// [`Ws::run`] with environment variables added.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = self
            .pipe()
            .envs(env.iter().copied())
            .arg("run")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Run {
            code: out.status.code().unwrap_or(-1),
            events,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `pipe run --json`, asserting success.
    pub fn run_ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "pipe run failed: {}\n{:#?}", r.stderr, r.events);
        r
    }
}
