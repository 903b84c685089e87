//! I/O faults and concurrency (issue #18, items 2 and 3): a disk that fills up while a
//! stage's out is stored in the cache, a read-only cache folder, and several `pipe run` at
//! once on one workspace.
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

/// `dir` bind-mounted read-only onto itself for the test (needs root), unmounted on drop.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn mount(dir: &'a Path) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: a read-only bind mount needs root");
            return None;
        }
        let run = |args: &[&str]| Command::new("mount").args(args).arg(dir).status().unwrap();
        // `mount --bind DIR DIR`, then a read-only remount of that bind.
        let bound = Command::new("mount")
            .arg("--bind")
            .arg(dir)
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            bound.success(),
            "mount --bind failed although running as root"
        );
        assert!(run(&["-o", "remount,bind,ro"]).success());
        Some(Self(dir))
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// A read-only cache folder (as root, permissions do not stop writes, so it is a read-only
/// bind mount): `pipe run` ends with one message giving the cause, `pipe status` still
/// answers, the cache verifies, and once writable the next run finishes. Found: the lock
/// error dropped its cause ("cannot lock …/run.lock" and nothing else), and `pipe status`
/// failed because it could not save its stat cache.
#[test]
fn a_read_only_cache_folder_gives_one_clear_message_and_keeps_the_cache_valid() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  a:\n    cmd: echo $V > a.out\n    outs: [a.out]\n  b:\n    cmd: cat a.out > b.out\n    deps: [a.out]\n    outs: [b.out]\n",
    );
    let root = ws.dir.path();
    let first = pipe_command(root)
        .arg("run")
        .env("V", "1")
        .output()
        .unwrap();
    assert!(first.status.success());
    let lock_before = ws.read("pipe.lock");
    ws.file("a.out", "edited by hand\n");
    let cache = ws.path("cache");
    {
        let Some(_ro) = ReadOnly::mount(&cache) else {
            return;
        };
        let out = pipe_command(root)
            .arg("run")
            .env("V", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("cannot lock") && err.contains("Read-only file system"),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
        let status = pipe(root, &["status"]);
        let serr = String::from_utf8_lossy(&status.stderr);
        assert!(
            !serr.contains("error"),
            "status on a read-only cache: {serr}"
        );
        assert!(
            String::from_utf8_lossy(&status.stdout).contains('b'),
            "{}",
            String::from_utf8_lossy(&status.stdout)
        );
        let verify = pipe(root, &["cache", "verify"]);
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    assert_eq!(
        ws.read("pipe.lock"),
        lock_before,
        "the lock file is untouched"
    );
    let again = pipe_command(root)
        .arg("run")
        .env("V", "1")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(ws.read("b.out"), "1\n");
}

/// Files of a dep folder deleted and written again while pipe hashes it (a sync tool or
/// an editor at work): every `pipe run` ends with success or one clear message naming the
/// file, never a panic; the cache verifies; and once the folder holds still, the next run
/// finishes and its out matches the folder.
#[test]
fn dep_files_vanishing_while_they_are_hashed_give_a_clear_error_or_a_good_run() {
    let ws = Ws::new();
    let root = ws.dir.path().to_owned();
    for i in 0..400 {
        ws.file(&format!("docs/{i:03}.txt"), &"x".repeat(4096 + i));
    }
    ws.pipeline(
        "stages:\n  count:\n    cmd: ls docs | wc -l > n.txt\n    deps: [docs]\n    outs: [n.txt]\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, docs) = (stop.clone(), root.join("docs"));
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let file = docs.join(format!("{:03}.txt", round % 400));
                let _ = std::fs::remove_file(&file);
                let _ = std::fs::write(&file, "y".repeat(4096 + round % 997));
                round += 1;
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..15 {
        let out = pipe(&root, &["run"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "exit {:?}: {stderr}",
            out.status.code()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.code() == Some(1) {
            assert!(
                stderr.contains("docs/"),
                "the message names the file: {stderr}"
            );
            // Gone when opened, or a different length when read: both say why.
            assert!(
                stderr.contains("deleted or replaced while pipe read it")
                    || stderr.contains("changed while it was read"),
                "and says what happened: {stderr}"
            );
        }
        outcomes.push(out.status.code());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    eprintln!("exit codes while the folder changed: {outcomes:?}");

    let verify = pipe(&root, &["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let run = pipe(&root, &["run"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(ws.read("n.txt").trim(), "400");
    let status = pipe(&root, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["stages"][0]["state"], "up-to-date", "{v}");
}
