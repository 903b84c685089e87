//! `pipe schedule` with the real cron daemon (Debian's `cron`, installed by
//! `tools/test-deps.sh`, started here when it is not running): a schedule set for the next
//! minute really runs a pipeline and `status` reports it; a run while another holds the
//! workspace is skipped with exit 75 and says so; `remove` leaves the crontab exactly as it
//! was; bad expressions are refused without touching it; a schedule's own webhook hears
//! its runs' outcomes (a real local HTTP server).
//!
//! The tests edit the crontab of the user running them, inside pipe's marked block only,
//! and restore it; they take one lock so they never edit it at the same time.

use crate::support::Ws;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The crontab is one per user: one test edits it at a time.
static CRONTAB: Mutex<()> = Mutex::new(());

fn crontab() -> Option<String> {
    let out = Command::new("crontab")
        .arg("-l")
        .output()
        .expect("crontab is installed (tools/test-deps.sh)");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// Puts the crontab back as it was when made, even when a test fails.
struct Restore(Option<String>);

impl Drop for Restore {
    fn drop(&mut self) {
        if crontab() == self.0 {
            return;
        }
        match &self.0 {
            None => {
                let _ = Command::new("crontab").arg("-r").status();
            }
            Some(text) => {
                use std::io::Write;
                let mut child = Command::new("crontab")
                    .arg("-")
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait().unwrap();
            }
        }
    }
}

/// Starts Debian's cron daemon unless one is running (it forks into the background and
/// records its pid in /run/crond.pid).
fn ensure_cron() {
    let running = std::fs::read_to_string("/run/crond.pid")
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
    if running {
        return;
    }
    let status = Command::new("/usr/sbin/cron")
        .status()
        .expect("/usr/sbin/cron (install it with tools/test-deps.sh)");
    assert!(status.success(), "cron did not start");
}

/// Waits for `path` to hold JSON for which `done` is true.
fn wait_for_json(path: &Path, deadline: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(&done)
        {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "{} not done within {deadline:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn date(secs: i64, format: &str) -> String {
    let out = Command::new("date")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(format!("+{format}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const HELLO: &str = r#"name: hello
stages:
  hello:
    cmd: mkdir -p out && echo "hello from $PIPE_SCHEDULE" > out/hello.txt
    outs: [out/hello.txt]
"#;

#[test]
fn a_schedule_fires_from_cron_runs_the_pipeline_and_remove_restores_the_crontab() {
    let _one = CRONTAB.lock().unwrap_or_else(|e| e.into_inner());
    ensure_cron();
    let before = crontab();
    let _restore = Restore(before.clone());
    let ws = Ws::new();
    ws.pipeline(HELLO);
    let name = format!("it-fire-{}", std::process::id());

    // The next whole minute, or the one after when it is too close for cron to have read
    // the new crontab (it checks for changes once a minute, just before running jobs).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut at = (now / 60 + 1) * 60;
    if at - now < 15 {
        at += 60;
    }
    let expr = date(at, "%-M %-H %-d %-m *");
    let add = ws
        .pipe()
        .args([
            "schedule",
            "add",
            "pipe.yaml",
            "--cron",
            &expr,
            "--name",
            &name,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let added = json(&add);
    assert_eq!(added["cron"], expr);
    assert_eq!(added["next_unix"], at, "next time of `{expr}`");

    // The entry is in pipe's block, and nothing else changed: without our two lines (and
    // the block's markers, when the block is new) the crontab is what it was.
    let with = crontab().unwrap();
    assert!(
        with.contains(&format!("schedule run {name} --root ")),
        "{with}"
    );
    let had_block = before
        .as_deref()
        .is_some_and(|b| b.contains("# >>> pipe schedules"));
    let others: String = with
        .lines()
        .filter(|l| !l.contains(&format!("\"name\":\"{name}\"")))
        .filter(|l| !l.contains(&format!("schedule run {name} --root ")))
        .filter(|l| {
            had_block
                || !(l.starts_with("# >>> pipe schedules") || l.starts_with("# <<< pipe schedules"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        others,
        before.clone().unwrap_or_default(),
        "other lines changed:\n{with}"
    );
    let list = ws
        .pipe()
        .args(["schedule", "list", "--json"])
        .output()
        .unwrap();
    let list = json(&list);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list:#}"));
    assert_eq!(row["pipeline"], "pipe.yaml");
    assert!(row["env"]["PATH"].is_string(), "PATH is captured: {row:#}");

    // Cron runs it: wait for the finished record, with a deadline past the chosen minute.
    let last_file = ws.path(&format!("runs/schedules/{name}/last.json"));
    let last = wait_for_json(&last_file, Duration::from_secs(200), |v| {
        v["outcome"] != "running"
    });
    let log = ws.read(&format!("runs/schedules/{name}/log"));
    assert_eq!(last["outcome"], "succeeded", "{last:#}\nlog:\n{log}");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(ws.read("out/hello.txt"), format!("hello from {name}\n"));
    assert!(
        log.contains(&format!("=== pipe schedule run {name} succeeded")),
        "{log}"
    );

    // The run is in the history like any other.
    let runs = ws.pipe().args(["runs", "list", "--json"]).output().unwrap();
    let runs: Vec<Value> = String::from_utf8_lossy(&runs.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded");

    // `status` reports it, and the next time is a day or more away.
    let status = ws
        .pipe()
        .args(["schedule", "status", &name, "--json"])
        .output()
        .unwrap();
    let status = json(&status);
    let s = &status[0];
    assert_eq!(s["last"]["outcome"], "succeeded");
    assert_eq!(s["last"]["exit_code"], 0);
    assert!(s["last"]["duration_s"].as_f64().is_some());
    assert!(Path::new(s["log"].as_str().unwrap()).is_file());
    assert!(s["next_unix"].as_i64().unwrap() > at, "{s:#}");
    let text = ws
        .pipe()
        .args(["schedule", "status", &name])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("succeeded in"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "plain text without a terminal: {text:?}"
    );

    // Remove: the crontab is exactly as it was.
    let rm = ws
        .pipe()
        .args(["schedule", "remove", &name])
        .output()
        .unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert_eq!(crontab(), before);
    let again = ws
        .pipe()
        .args(["schedule", "remove", &name])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_run_while_another_holds_the_workspace_is_skipped_with_exit_75() {
    let _one = CRONTAB.lock().unwrap_or_else(|e| e.into_inner());
    let before = crontab();
    let _restore = Restore(before.clone());
    let ws = Ws::new();
    ws.pipeline(
        r#"name: slow
stages:
  slow:
    cmd: mkdir -p out && touch started && while [ ! -f go ]; do sleep 0.05; done && echo done > out/slow.txt
    outs: [out/slow.txt]
"#,
    );
    let name = format!("it-skip-{}", std::process::id());
    let add = ws
        .pipe()
        .args([
            "schedule",
            "add",
            "pipe.yaml",
            "--daily",
            "03:17",
            "--name",
            &name,
        ])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let stdout = String::from_utf8(add.stdout).unwrap();
    assert!(stdout.contains("`17 3 * * *`"), "{stdout}");

    // A run that holds the workspace until the test lets it go.
    let mut first = Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .args(["schedule", "run", &name])
        .current_dir(ws.dir.path())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ws.exists("started") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let second = ws.pipe().args(["schedule", "run", &name]).output().unwrap();
    assert_eq!(second.status.code(), Some(75), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("skipped, another pipe run holds the workspace lock"),
        "{err}"
    );
    let last: Value =
        serde_json::from_str(&ws.read(&format!("runs/schedules/{name}/last.json"))).unwrap();
    assert_eq!(last["outcome"], "skipped");
    assert_eq!(last["exit_code"], 75);
    let log = ws.read(&format!("runs/schedules/{name}/log"));
    assert!(log.contains("skipped: another pipe run (pid"), "{log}");

    // `pipe run --skip-if-running` itself.
    let direct = ws
        .pipe()
        .args(["run", "--skip-if-running"])
        .output()
        .unwrap();
    assert_eq!(direct.status.code(), Some(75));

    std::fs::write(ws.path("go"), "").unwrap();
    assert!(first.wait().unwrap().success());
    assert_eq!(ws.read("out/slow.txt"), "done\n");
    let status = ws
        .pipe()
        .args(["schedule", "status", &name, "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&status)[0]["last"]["outcome"], "succeeded");

    let rm = ws
        .pipe()
        .args(["schedule", "remove", &name])
        .output()
        .unwrap();
    assert!(rm.status.success());
    assert_eq!(crontab(), before);
}

#[test]
fn bad_schedules_are_refused_and_leave_the_crontab_alone() {
    let _one = CRONTAB.lock().unwrap_or_else(|e| e.into_inner());
    let before = crontab();
    let _restore = Restore(before.clone());
    let ws = Ws::new();
    ws.pipeline(HELLO);
    let out = ws
        .pipe()
        .args(["schedule", "add", "pipe.yaml", "--cron", "0 25 * * *"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: cron field 2 (hour) `25`: 25 is outside 0-23"
    );
    let out = ws
        .pipe()
        .args(["schedule", "add", "missing.yaml", "--daily", "02:30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = ws
        .pipe()
        .args([
            "schedule",
            "add",
            "pipe.yaml",
            "--daily",
            "02:30",
            "--name",
            "a b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule name `a b`"));
    let out = ws
        .pipe()
        .args(["schedule", "run", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = ws
        .pipe()
        .args(["schedule", "add", "pipe.yaml", "--daily", "02:30"])
        .args([
            "--notify-webhook-env",
            "HOOK",
            "--notify-on",
            "failure,sometimes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`sometimes` is not an outcome"), "{err}");
    let out = ws
        .pipe()
        .args(["schedule", "add", "pipe.yaml", "--daily", "02:30"])
        .args(["--notify-webhook", "hooks.example.com/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--notify-webhook: `hooks.example.com/x` is not an http(s) URL"),
        "{err}"
    );
    assert_eq!(crontab(), before);
}

/// `pipe schedule add --notify-webhook-env VAR --notify-desktop --notify-on ...`: the
/// schedule's runs notify that webhook and the desktop by its own list, on top of the
/// pipeline (which has no `notify:` here); the webhook variable comes from the scheduler's
/// environment at run time, the desktop's session bus from the one captured at `add`.
#[test]
fn a_schedule_notifies_its_own_webhook_by_its_own_outcomes() {
    let _one = CRONTAB.lock().unwrap_or_else(|e| e.into_inner());
    let before = crontab();
    let _restore = Restore(before.clone());
    let ws = Ws::new();
    let receiver = crate::notify::Receiver::start(&ws);
    let desktop = crate::notify::Desktop::start();
    let stage = |cmd: &str| {
        format!("name: nightly\nstages:\n  work:\n    cmd: {cmd}\n    outs: [out.txt]\n")
    };
    ws.pipeline(&stage("exit 3"));
    let name = format!("it-notify-{}", std::process::id());
    let add = ws
        .pipe()
        .args([
            "schedule",
            "add",
            "pipe.yaml",
            "--daily",
            "03:19",
            "--name",
            &name,
        ])
        .args([
            "--notify-webhook-env",
            "IT_HOOK",
            "--notify-desktop",
            "--notify-on",
            "failure,success",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let list = json(
        &ws.pipe()
            .args(["schedule", "list", "--json"])
            .output()
            .unwrap(),
    );
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["notify"]["webhook_env"], "IT_HOOK", "{row}");
    assert_eq!(row["notify"]["desktop"], true, "{row}");
    assert_eq!(
        row["notify"]["on"],
        serde_json::json!(["failure", "success"])
    );

    let run = |expect: i32| {
        let out = ws
            .pipe()
            .args(["schedule", "run", &name])
            .env("IT_HOOK", receiver.url("/hook"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(expect), "{out:?}");
    };
    run(1);
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["path"], "/hook");
    let body = &got[0]["body"];
    assert_eq!(body["event"], "failure", "{body}");
    assert_eq!(body["schedule"], name.as_str());
    assert_eq!(body["failed"], serde_json::json!(["work"]));
    let shown = desktop.shown();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].2.starts_with("failed: stage work failed")
            && shown[0].2.contains(&format!("schedule {name}")),
        "{shown:?}"
    );

    ws.pipeline(&stage("echo ok > out.txt"));
    run(0);
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["body"]["event"], "success", "{got:?}");
    assert_eq!(desktop.shown().len(), 2);
    let log = ws.read(&format!("runs/schedules/{name}/log"));
    assert!(log.contains("notified http://127.0.0.1:"), "{log}");

    // A plain `pipe run` of the same pipeline is not the schedule's: nobody is told.
    ws.pipe().arg("run").assert().success();
    assert_eq!(receiver.received().len(), 2);

    let rm = ws
        .pipe()
        .args(["schedule", "remove", &name])
        .output()
        .unwrap();
    assert!(rm.status.success());
    assert_eq!(crontab(), before);
}
