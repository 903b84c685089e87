//! Kill harness (issue #18, item 1): runs a command pipeline, SIGKILLs `pipe` (or one
//! stage's own process) at deterministic points, each reached by waiting for a journal
//! event or a marker the stage writes, then checks what the next run finds and leaves:
//!
//! - no process of the killed run is left once the next run has taken the workspace over
//!   (found through `/proc`: every process pipe starts for a workspace carries its
//!   `PIPE_ROOT`, and what those start inherit it);
//! - a stage that had not finished is never up to date (its partial out is not taken as
//!   done), the lock file parses, and `pipe cache verify` is clean, as is an independent
//!   check that every object's blake3 is its name;
//! - the next run completes, runs exactly the stages the killed run had not finished
//!   (the finished ones are reused), and leaves outs byte-identical to an uninterrupted
//!   run's, with no temporary files of the atomic writer beside them.
//!
//! Each stage copies its input through a background child (`work.sh`): the grandchild that
//! a killed `pipe` used to leave running. A stage whose gate (a fifo) exists writes half of
//! its out, marks `NAME.mid`, and blocks opening the fifo, which nothing ever writes: it
//! stays there until killed. The run after a kill sets `NO_GATE`, so its stages pass.
//!
//! `PIPE_KILL_ROUNDS=N` repeats every kill point N times (default 1) for a longer run by
//! hand; each kill point prints one line of figures (docs/reliability.md).

use crate::support::Ws;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORK_SH: &str = r#"# work.sh NAME OUT IN...: OUT is IN's lines prefixed with NAME, written in two halves
# by a background child; between them it marks NAME.mid and, when the fifo gate.NAME
# exists and NO_GATE is unset, blocks opening it (nothing writes it: only a kill ends it).
name=$1; out=$2; shift 2
(
  cat "$@" | sed "s/^/$name: /" | head -n 2 > "$out"
  : > "$name.mid"
  if [ -z "$NO_GATE" ] && [ -p "gate.$name" ]; then read _ < "gate.$name"; fi
  cat "$@" | sed "s/^/$name: /" | tail -n +3 >> "$out"
) &
wait
"#;

const PIPELINE: &str = r#"
stages:
  prep:
    cmd: sh work.sh prep prep.out in.txt
    deps: [work.sh, in.txt]
    outs: [prep.out]
  slow:
    cmd: sh work.sh slow slow.out prep.out
    deps: [work.sh, prep.out]
    outs: [slow.out]
  side:
    cmd: sh work.sh side side.out in.txt
    deps: [work.sh, in.txt]
    outs: [side.out]
  join:
    cmd: sh work.sh join join.out slow.out side.out
    deps: [work.sh, slow.out, side.out]
    outs: [join.out]
"#;

pub(crate) const OUTS: [&str; 4] = ["prep.out", "slow.out", "side.out", "join.out"];
pub(crate) const STAGES: [&str; 4] = ["prep", "slow", "side", "join"];

/// What the test waits for before the kill.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// The stage wrote half of its out and blocks at its gate.
    Mid(&'static str),
    /// The journal has the stage's `stage-finish`.
    Finished(&'static str),
}

/// One kill point: stages whose gate is closed, what to wait for, whom to kill.
struct Point {
    name: &'static str,
    gates: &'static [&'static str],
    wait: &'static [Mark],
    /// Kill this stage's own process (the `sh` pipe started) instead of `pipe`.
    kill_stage: Option<&'static str>,
}

const POINTS: &[Point] = &[
    Point {
        name: "prep and side mid-write",
        gates: &["prep", "side"],
        wait: &[Mark::Mid("prep"), Mark::Mid("side")],
        kill_stage: None,
    },
    Point {
        name: "side finished, prep mid-write",
        gates: &["prep"],
        wait: &[Mark::Finished("side"), Mark::Mid("prep")],
        kill_stage: None,
    },
    Point {
        name: "prep finished, slow and side mid-write",
        gates: &["slow", "side"],
        wait: &[Mark::Mid("slow"), Mark::Mid("side")],
        kill_stage: None,
    },
    Point {
        name: "prep and side finished, slow mid-write",
        gates: &["slow"],
        wait: &[Mark::Finished("side"), Mark::Mid("slow")],
        kill_stage: None,
    },
    Point {
        name: "join mid-write",
        gates: &["join"],
        wait: &[Mark::Mid("join")],
        kill_stage: None,
    },
    Point {
        name: "after the last stage finished",
        gates: &[],
        wait: &[Mark::Finished("join")],
        kill_stage: None,
    },
    Point {
        name: "slow's own process killed, pipe alive",
        gates: &["slow"],
        wait: &[Mark::Finished("side"), Mark::Mid("slow")],
        kill_stage: Some("slow"),
    },
];

pub(crate) fn workspace() -> Ws {
    let ws = Ws::new();
    ws.file("work.sh", WORK_SH)
        .file("in.txt", "alpha\nbeta\ngamma\ndelta\nepsilon\n")
        .pipeline(PIPELINE);
    ws
}

/// Waits for `cond`, failing after a generous deadline (a hung run is a failure).
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stages with a `stage-finish` event in the workspace's run journal.
pub(crate) fn finished_in_journal(ws: &Ws) -> BTreeSet<String> {
    let text = std::fs::read_to_string(ws.path("cache/v1/journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage-finish")
        .filter_map(|e| e["stage"].as_str().map(String::from))
        .collect()
}

/// Live (not zombie) processes carrying this workspace's `PIPE_ROOT`.
pub(crate) fn processes_of(root: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(root).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let ours = env
            .split(|&b| b == 0)
            .filter_map(|v| v.strip_prefix(b"PIPE_ROOT="))
            .any(|v| {
                std::fs::canonicalize(String::from_utf8_lossy(v).as_ref())
                    .ok()
                    .as_ref()
                    == Some(&want)
            });
        if ours {
            found.push(pid);
        }
    }
    found
}

/// The process group pipe recorded for `stage` (`cache/v1/groups/<pgid>.json`).
pub(crate) fn stage_process(ws: &Ws, stage: &str) -> Option<u32> {
    let dir = ws.path("cache/v1/groups");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
        (v["what"] == format!("stage `{stage}`")).then(|| v["pgid"].as_u64().unwrap() as u32)
    })
}

/// Whether `pid` is a live process (not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    !matches!(state, None | Some("Z" | "X"))
}

pub(crate) fn kill(pid: u32) {
    // SAFETY: kill(2) on a pid this test started (pipe) or read from pipe's own record.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

/// Every object's blake3 is its name, checked here without pipe's own code.
pub(crate) fn objects_are_sound(ws: &Ws) -> usize {
    let objects = ws.path("cache/v1/objects");
    let mut n = 0;
    if !objects.exists() {
        return n;
    }
    for entry in walkdir::WalkDir::new(&objects).min_depth(2).max_depth(2) {
        let entry = entry.unwrap();
        let fan = entry.path().parent().unwrap().file_name().unwrap();
        let name = format!(
            "{}{}",
            fan.to_string_lossy(),
            entry.file_name().to_string_lossy()
        );
        let hash = blake3::hash(&std::fs::read(entry.path()).unwrap());
        assert_eq!(hash.to_hex().as_str(), name, "{}", entry.path().display());
        n += 1;
    }
    n
}

/// Files the atomic writer leaves when killed (`.NAME.xxxxxx.tmp…`) among the outs: not
/// in the cache, nor in the run history (a run killed while writing its own record keeps
/// that hidden file in its folder; the history never rewrites older runs' folders).
pub(crate) fn temporary_files(ws: &Ws) -> Vec<PathBuf> {
    walkdir::WalkDir::new(ws.dir.path())
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() > 1 || (e.file_name() != "cache" && e.file_name() != "runs"))
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.starts_with('.') && n.contains(".tmp")
        })
        .map(|e| e.into_path())
        .collect()
}

pub(crate) fn pipe_run(ws: &Ws, gated: bool) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    c.args(["run", "--json", "-j", "2"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("NO_GATE");
    if !gated {
        c.env("NO_GATE", "1");
    }
    c
}

/// The outs of an uninterrupted run.
pub(crate) fn reference() -> Vec<String> {
    let ws = workspace();
    let out = pipe_run(&ws, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    OUTS.iter().map(|o| ws.read(o)).collect()
}

/// One kill at `point`, then the checks; returns a line of figures.
fn kill_at(point: &Point, reference: &[String]) -> String {
    let ws = workspace();
    for gate in point.gates {
        let path = ws.path(&format!("gate.{gate}"));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let mut run: Child = pipe_run(&ws, true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for mark in point.wait {
        match *mark {
            Mark::Mid(s) => wait_until(&format!("{s}.mid"), || ws.exists(&format!("{s}.mid"))),
            Mark::Finished(s) => wait_until(&format!("{s} to finish"), || {
                finished_in_journal(&ws).contains(s)
            }),
        }
    }
    let finished = finished_in_journal(&ws);
    let pipe_killed = match point.kill_stage {
        None => {
            kill(run.id());
            true
        }
        Some(stage) => {
            let pid = stage_process(&ws, stage).expect("the stage's process group is recorded");
            kill(pid);
            false
        }
    };
    let status = run.wait().unwrap();
    // The events of the killed run (small: the pipe buffer never fills).
    let events = {
        use std::io::Read;
        let mut s = String::new();
        run.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let left_before = processes_of(ws.dir.path()).len();
    if !pipe_killed {
        // pipe saw its stage die: the run failed and ended everything in that group, and
        // the other gated stages' groups were ended as the run stopped.
        assert_eq!(status.code(), Some(1), "{events}");
        assert!(events.contains("killed by signal 9"), "{events}");
        assert_eq!(
            left_before, 0,
            "pipe left processes running after a failed stage"
        );
    }

    // What the killed run left, as the next run and `pipe status` see it.
    let lock = ws.path("pipe.lock");
    if lock.exists() {
        serde_yaml::from_str::<serde_yaml::Value>(&ws.read("pipe.lock"))
            .unwrap_or_else(|e| panic!("{}: pipe.lock does not parse: {e}", point.name));
    }
    let status_json = ws.pipe().args(["status", "--json"]).output().unwrap();
    let status_json: serde_json::Value = serde_json::from_slice(&status_json.stdout).unwrap();
    for s in status_json["stages"].as_array().unwrap() {
        let name = s["stage"].as_str().unwrap();
        if !finished.contains(name) {
            assert_ne!(
                s["state"], "up-to-date",
                "{}: unfinished stage {name} looks done",
                point.name
            );
        }
    }
    let verify = ws
        .pipe()
        .args(["cache", "verify", "--json"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let objects = objects_are_sound(&ws);

    let next = pipe_run(&ws, false).output().unwrap();
    let next_err = String::from_utf8_lossy(&next.stderr);
    assert!(
        next.status.success(),
        "{}: next run failed: {next_err}",
        point.name
    );
    let left_after = processes_of(ws.dir.path());
    assert!(
        left_after.is_empty(),
        "{}: processes of the killed run still running after the next run: {left_after:?}",
        point.name
    );
    if left_before > 0 {
        assert!(next_err.contains("leftover process"), "{next_err}");
    }
    let ran: BTreeSet<String> = String::from_utf8_lossy(&next.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage-finish")
        .map(|e| e["stage"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = STAGES
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !finished.contains(s))
        .collect();
    assert_eq!(
        ran, expected,
        "{}: the next run must redo exactly the unfinished stages",
        point.name
    );
    for (out, want) in OUTS.iter().zip(reference) {
        assert_eq!(
            &ws.read(out),
            want,
            "{}: {out} differs from an uninterrupted run",
            point.name
        );
    }
    let temps = temporary_files(&ws);
    assert!(
        temps.is_empty(),
        "{}: temporary files left: {temps:?}",
        point.name
    );
    objects_are_sound(&ws);
    format!(
        "{}: killed {}; finished before the kill {}; processes left {left_before}; objects {objects}; next run ran {}",
        point.name,
        if pipe_killed { "pipe" } else { "the stage" },
        finished.len(),
        ran.len()
    )
}

#[test]
fn killed_anywhere_the_next_run_ends_leftovers_and_finishes_identically() {
    let rounds: usize = std::env::var("PIPE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let reference = reference();
    let mut kills = 0;
    for _ in 0..rounds {
        for point in POINTS {
            eprintln!("kill point: {}", kill_at(point, &reference));
            kills += 1;
        }
    }
    eprintln!(
        "kills survived: {kills} ({} points x {rounds} rounds)",
        POINTS.len()
    );
}
