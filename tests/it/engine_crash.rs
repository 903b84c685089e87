//! Crash and concurrency safety: SIGKILL mid-stage then rerun, SIGINT cleanup, a second
//! run waiting for the first, stale locks.

use crate::support::{Ws, set};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.file("slow.txt", "s1\n")
        .file("other.txt", "o1\n")
        .pipeline(
            r#"
stages:
  slow:
    cmd: cat slow.txt > slow.out && if [ -f delay ]; then sleep 30; echo woke > woke.txt; fi
    deps: [slow.txt]
    outs: [slow.out]
  after:
    cmd: cat slow.out > after.out
    deps: [slow.out]
    outs: [after.out]
  other:
    cmd: cat other.txt > other.out
    deps: [other.txt]
    outs: [other.out]
"#,
        );
    ws
}

fn spawn_run(ws: &Ws, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .arg("run")
        .args(args)
        .current_dir(ws.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `slow.out` has `content` (the slow stage is then inside its `sleep`).
fn wait_for(ws: &Ws, rel: &str, content: &str) {
    let t = Instant::now();
    while std::fs::read_to_string(ws.path(rel)).ok().as_deref() != Some(content) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {rel}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

#[test]
fn sigkill_mid_stage_then_rerun_redoes_exactly_that_stage_and_its_dependents() {
    let ws = workspace();
    ws.run_ok(&[]);
    ws.file("delay", "")
        .file("slow.txt", "s2\n")
        .file("other.txt", "o2\n");
    let mut child = spawn_run(&ws, &["-j", "1"]);
    wait_for(&ws, "slow.out", "s2\n");
    signal(&child, "-KILL");
    child.wait().unwrap();
    std::fs::remove_file(ws.path("delay")).unwrap();
    let r = ws.run_ok(&[]);
    // `other` never got to run (-j 1), so it reruns too; `slow` and `after` must.
    assert_eq!(r.ran(), set(&["slow", "after", "other"]));
    assert!(
        r.stderr.contains("was killed"),
        "stale lock not reported: {}",
        r.stderr
    );
    assert_eq!(ws.read("after.out"), "s2\n");
    assert!(ws.run_ok(&[]).started().is_empty());
}

#[test]
fn sigkill_after_some_stages_keeps_the_finished_ones() {
    let ws = workspace();
    ws.run_ok(&[]);
    ws.file("delay", "")
        .file("slow.txt", "s2\n")
        .file("other.txt", "o2\n");
    // `other` (independent, quick) finishes while `slow` sleeps.
    let mut child = spawn_run(&ws, &["-j", "2"]);
    wait_for(&ws, "slow.out", "s2\n");
    wait_for(&ws, "other.out", "o2\n");
    let t = Instant::now();
    while !ws
        .read("pipe.lock")
        .contains(&blake3::hash(b"o2\n").to_hex().to_string())
    {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-KILL");
    child.wait().unwrap();
    std::fs::remove_file(ws.path("delay")).unwrap();
    assert_eq!(ws.run_ok(&[]).ran(), set(&["slow", "after"]));
}

#[test]
fn sigint_stops_the_command_and_removes_partial_outs() {
    let ws = workspace();
    ws.file("delay", "");
    let mut child = spawn_run(&ws, &["-j", "1"]);
    wait_for(&ws, "slow.out", "s1\n");
    signal(&child, "-INT");
    let out = child.wait().unwrap();
    // The command was stopped, not waited for: it never got past its sleep (this replaced
    // a 10 s stopwatch; `woke.txt` is written only after the sleep ends on its own).
    assert!(!ws.exists("woke.txt"), "the stage ran to its end");
    assert_eq!(out.code(), Some(130));
    assert!(!ws.exists("slow.out"), "partial out must be removed");
    let record = ws.read("cache/logs/pipe/slow.json");
    assert!(record.contains("interrupted"), "{record}");
    std::fs::remove_file(ws.path("delay")).unwrap();
    assert!(ws.run_ok(&[]).ran().contains("slow"));
}

#[test]
fn a_second_run_waits_for_the_first() {
    let ws = workspace();
    ws.file("delay", "");
    let mut first = spawn_run(&ws, &["-j", "1"]);
    wait_for(&ws, "slow.out", "s1\n");
    // Without waiting: a clear failure naming the holder.
    let busy = ws
        .pipe()
        .args(["run", "--wait-timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    let mut second = spawn_run(&ws, &["--json"]);
    // Wait for the second run to say it found the lock busy (its stderr line), not a timer.
    let mut err = String::new();
    let mut stderr = std::io::BufReader::new(second.stderr.take().unwrap());
    while !err.contains("waiting for another pipe run") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the second run ended without waiting: {err}");
        err.push_str(&line);
    }
    std::fs::remove_file(ws.path("delay")).unwrap();
    // End the first run early; the waiting run then takes the lock and does the work.
    signal(&first, "-INT");
    assert_eq!(first.wait().unwrap().code(), Some(130));
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    let out = second.wait_with_output().unwrap();
    assert!(
        err.contains(&format!(
            "waiting for another pipe run (pid {})",
            first.id()
        )),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(ws.read("after.out"), "s1\n");
}

/// A nightly run outlives an upgrade: when `pipe`'s file is replaced while a run is going
/// (here removed, as a reinstall or rebuild does first), the stages after it still start,
/// from the program that started the run.
#[test]
fn a_run_goes_on_after_its_pipe_file_is_replaced() {
    let ws = Ws::new();
    let copy = ws.path("bin/pipe");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    for program in ["pipe", "pipe-mlx"] {
        let into = copy.with_file_name(program);
        std::fs::copy(assert_cmd::cargo::cargo_bin(program), into).unwrap();
    }
    ws.file(
        "raw/data.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n",
    )
    .pipeline(
        r#"
stages:
  upgrade:
    cmd: rm bin/pipe && echo gone > upgraded.txt
    outs: [upgraded.txt]
  ingest:
    kind: ingest
    needs: [upgrade]
    with: {source: raw/data.jsonl, out: clean, split: {valid: 0.0, test: 0.0}}
"#,
    );
    let out = Command::new(&copy)
        .args(["run", "--json"])
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!copy.exists(), "the stage removed the program's file");
    assert_eq!(ws.read("clean/train.jsonl").lines().count(), 1);
}
