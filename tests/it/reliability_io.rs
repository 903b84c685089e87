//! I/O faults and concurrency (issue #18, items 2 and 3): a disk that fills up while a
//! stage's out is stored in the cache, and several `pipe run` at once on one workspace.
//! Each must end with one clear message, a valid cache and lock file, and a next run that
//! completes.

use crate::support::Ws;
use std::path::Path;
use std::process::Command;

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounting needs root (CI and the README's setup run as root); elsewhere `None`.
    fn mount(size: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed although running as root");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn pipe_command(root: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    c.current_dir(root).env("NO_COLOR", "1");
    c
}

fn pipe(root: &Path, args: &[&str]) -> std::process::Output {
    pipe_command(root).args(args).output().unwrap()
}

#[test]
fn a_disk_that_fills_while_storing_an_out_fails_the_stage_clearly_and_keeps_the_cache_valid() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let root = disk.path();
    // 2.5 MB fits once on the 4 MB disk, not twice: the stage writes it, and storing the
    // copy in the cache runs out of space.
    std::fs::write(
        root.join("pipe.yaml"),
        "stages:\n  small:\n    cmd: echo hi > small.out\n    outs: [small.out]\n  big:\n    cmd: head -c 2500000 /dev/zero > big.out\n    outs: [big.out]\n",
    )
    .unwrap();
    let out = pipe(root, &["run", "-j", "1", "--keep-going"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot store out `big.out`") && err.contains("No space left on device"),
        "{err}"
    );
    // The stage that fitted is recorded; the lock file parses; the cache verifies and
    // holds no temporary file of the failed copy.
    let lock: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("pipe.lock")).unwrap()).unwrap();
    assert!(lock["stages"]["small"].is_mapping(), "{lock:?}");
    assert!(lock["stages"]["big"].is_null(), "{lock:?}");
    let verify = pipe(root, &["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let temps = std::fs::read_dir(root.join("cache/v1/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(temps, 0, "a temporary file of the failed copy is left");
    assert!(!root.join("big.out").exists(), "the partial out is removed");
    // With room again (a smaller out), the next run finishes and keeps `small`.
    std::fs::write(
        root.join("pipe.yaml"),
        "stages:\n  small:\n    cmd: echo hi > small.out\n    outs: [small.out]\n  big:\n    cmd: head -c 1000000 /dev/zero > big.out\n    outs: [big.out]\n",
    )
    .unwrap();
    let out = pipe(root, &["run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let has = |event: &str, stage: &str| {
        events
            .iter()
            .any(|e| e["event"] == event && e["stage"] == stage)
    };
    assert!(
        has("stage-cached", "small") && !has("stage-start", "small"),
        "{events:?}"
    );
    assert!(has("stage-finish", "big"), "{events:?}");
    let verify = pipe(root, &["cache", "verify"]);
    assert!(verify.status.success());
}

#[test]
fn parallel_runs_on_one_workspace_run_each_stage_once_and_keep_the_cache_valid() {
    let ws = Ws::new();
    ws.file("in.txt", "x\n").pipeline(
        r#"
stages:
  a: {cmd: "cat in.txt > a.out", deps: [in.txt], outs: [a.out]}
  b: {cmd: "cat a.out a.out > b.out", deps: [a.out], outs: [b.out]}
  c: {cmd: "cat in.txt b.out > c.out", deps: [in.txt, b.out], outs: [c.out]}
"#,
    );
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            pipe_command(ws.dir.path())
                .args(["run", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut finishes = 0;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        finishes += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(r#""event":"stage-finish""#))
            .count();
    }
    // The runs took turns at the workspace lock: the first ran the three stages, the
    // others found them up to date.
    assert_eq!(finishes, 3);
    assert_eq!(ws.read("c.out"), "x\nx\nx\n");
    let verify = pipe(ws.dir.path(), &["cache", "verify"]);
    assert!(verify.status.success());
}
