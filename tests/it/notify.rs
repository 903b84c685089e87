//! `notify:` against a real HTTP server (Python's `http.server`, started by the test): a
//! failed run, a regression and a success each POST one Slack-compatible JSON body; the
//! default list stays quiet on success; a dead or refusing webhook, or a missing URL
//! variable, is a warning and never changes the run's exit code; bad settings exit 2.
//! `desktop: true` against a real notification server (dunst on Xvfb, with its own session
//! bus), and without any desktop session, where it is a warning.

use crate::support::Ws;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// Appends each POST (path, content type, JSON body) as a line to the file given, and
/// answers 500 on paths starting with /fail, 200 otherwise.
const RECEIVER: &str = r#"
import http.server, json, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        rec = {"path": self.path, "content_type": self.headers.get('Content-Type'),
               "body": json.loads(body)}
        with open(out, 'a') as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(500 if self.path.startswith('/fail') else 200)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The receiving server; stopped on drop.
pub(crate) struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    pub(crate) fn start(ws: &Ws) -> Self {
        let log = ws.path("received.jsonl");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(RECEIVER)
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Self { child, port, log }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every POST received so far (each was written before it was answered, and pipe waits
    /// for the answer, so a finished run's POST is here).
    pub(crate) fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipeline(notify: &str, cmd: &str) -> String {
    format!(
        r#"name: nightly
notify:
{notify}
stages:
  prepare:
    cmd: mkdir -p out && echo ok > out/prepare.txt
    outs: [out/prepare.txt]
  watch:
    cmd: >-
      {cmd}
    deps: [out/prepare.txt]
    outs: [out/watch.json]
    metrics: [out/watch.json]
"#
    )
}

const FAILS: &str = "exit 3";
const REGRESSES: &str = r#"echo '{"regression": true, "exact_match": 0.4}' > out/watch.json"#;
const HEALTHY: &str = r#"echo '{"regression": false, "exact_match": 0.8}' > out/watch.json"#;

fn pipe_run(ws: &Ws) -> (i32, String) {
    let out = ws.pipe().arg("run").output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failure_regression_and_success_each_post_one_slack_compatible_body() {
    let ws = Ws::new();
    let hook = Receiver::start(&ws);
    let url = hook.url("/hooks/T0/secret");

    // A failed stage: one POST, the run still exits 1.
    ws.pipeline(&pipeline(&format!("  webhook: {url}"), FAILS));
    let (code, err) = pipe_run(&ws);
    assert_eq!(code, 1, "{err}");
    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let post = &got[0];
    assert_eq!(post["path"], "/hooks/T0/secret");
    assert_eq!(post["content_type"], "application/json");
    let body = &post["body"];
    assert_eq!(body["event"], "failure");
    assert_eq!(body["pipeline"], "nightly");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["failed"], serde_json::json!(["watch"]));
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("pipe: `nightly` failed: stage `watch` failed (run "),
        "{text}"
    );
    assert!(text.contains(body["run"].as_str().unwrap()), "{text}");
    // Messages show the host, never the secret path.
    assert!(
        err.contains(&format!(
            "notified http://127.0.0.1:{}/… (failure)",
            hook.port
        )),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");

    // A regression (a stage reports `regression: true`), with success notices on too.
    ws.pipeline(&pipeline(
        &format!("  webhook: {url}\n  on: [regression, success]"),
        REGRESSES,
    ));
    let (code, err) = pipe_run(&ws);
    assert_eq!(code, 0, "{err}");
    let got = hook.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    let body = &got[1]["body"];
    assert_eq!(body["event"], "regression");
    assert_eq!(body["regressed"], serde_json::json!(["watch"]));
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("found a regression in `watch`")
    );

    // Nothing ran this time (all cached): a success, and no regression again.
    let (code, _) = pipe_run(&ws);
    assert_eq!(code, 0);
    let got = hook.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2]["body"]["event"], "success");

    // The default list (failure, regression) says nothing about a healthy run.
    ws.pipeline(&pipeline(&format!("  webhook: {url}"), HEALTHY));
    let (code, _) = pipe_run(&ws);
    assert_eq!(code, 0);
    assert_eq!(hook.received().len(), 3);

    // The schedule's name travels in the body when a schedule runs it.
    ws.pipeline(&pipeline(
        &format!("  webhook: {url}\n  on: [success]"),
        HEALTHY,
    ));
    let out = ws
        .pipe()
        .args(["run", "--force"])
        .env("PIPE_SCHEDULE", "nightly-2am")
        .output()
        .unwrap();
    assert!(out.status.success());
    let got = hook.received();
    assert_eq!(got[3]["body"]["schedule"], "nightly-2am");
    assert!(
        got[3]["body"]["text"]
            .as_str()
            .unwrap()
            .contains("schedule `nightly-2am`")
    );
}

#[test]
fn a_dead_or_refusing_webhook_never_changes_the_outcome() {
    let ws = Ws::new();
    let hook = Receiver::start(&ws);

    // Refused (HTTP 500): a warning; the run's own exit code.
    ws.pipeline(&pipeline(
        &format!("  webhook: {}", hook.url("/fail")),
        FAILS,
    ));
    let (code, err) = pipe_run(&ws);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "warning: notification (failure) not sent: webhook http://127.0.0.1:{}/… answered HTTP 500",
            hook.port
        )),
        "{err}"
    );

    // Nobody listening: a warning, and success stays success.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    ws.pipeline(&pipeline(
        &format!("  webhook: http://127.0.0.1:{port}/x\n  on: [success]"),
        HEALTHY,
    ));
    let (code, err) = pipe_run(&ws);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("notification (success) not sent: webhook"),
        "{err}"
    );

    // The URL from a variable that is not set.
    ws.pipeline(&pipeline(
        "  webhook_env: PIPE_TEST_NO_SUCH_HOOK\n  on: [success]",
        HEALTHY,
    ));
    let out = ws
        .pipe()
        .args(["run", "--force"])
        .env_remove("PIPE_TEST_NO_SUCH_HOOK")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the environment variable PIPE_TEST_NO_SUCH_HOOK is not set"),
        "{err}"
    );

    // ...and from one that is.
    ws.pipeline(&pipeline(
        "  webhook_env: PIPE_TEST_HOOK\n  on: [success]",
        HEALTHY,
    ));
    let out = ws
        .pipe()
        .args(["run", "--force"])
        .env("PIPE_TEST_HOOK", hook.url("/from-env"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let got = hook.received();
    assert_eq!(got.last().unwrap()["path"], "/from-env");
}

#[test]
fn bad_notify_settings_are_located_and_exit_2() {
    let ws = Ws::new();
    ws.pipeline(&pipeline("  webhook: hooks.slack.com/x", HEALTHY));
    let out = ws.pipe().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipe.yaml:3"), "{err}");
    assert!(
        err.contains("`notify`: `webhook`: `hooks.slack.com/x` is not an http(s) URL"),
        "{err}"
    );
    ws.pipeline(&pipeline("  webhook: http://x\n  on: [sometimes]", HEALTHY));
    let out = ws.pipe().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
}

/// A desktop session of its own: an X server (Xvfb), a session bus and dunst, a real
/// freedesktop notification server that keeps what it showed in a history. Stopped on drop.
pub(crate) struct Desktop {
    children: Vec<Child>,
    pub(crate) bus: String,
    display: String,
}

impl Desktop {
    pub(crate) fn start() -> Self {
        let need = |program: &str| {
            Command::new(program).arg("--version").output().unwrap_or_else(|e| {
                panic!("`{program}`: {e}; run tools/test-deps.sh (it installs xvfb, dunst, dbus and libnotify-bin)")
            })
        };
        need("dunst");
        need("notify-send");
        let mut children = Vec::new();
        // Xvfb picks a free display and writes its number once it accepts clients.
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb; run tools/test-deps.sh");
        let display = format!(":{}", first_line(xvfb.stdout.take().unwrap()));
        children.push(xvfb);
        // The bus may start dunst itself (D-Bus activation, on the first call to the name):
        // that one must find the X server too.
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .env("DISPLAY", &display)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let address = first_line(bus.stdout.take().unwrap());
        children.push(bus);
        let dunst = Command::new("dunst")
            .args(["-config", "/dev/null"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("DISPLAY", &display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst");
        children.push(dunst);
        let desktop = Self {
            children,
            bus: address,
            display,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !desktop.dunstctl(&["count"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "dunst did not take the bus name"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        desktop
    }

    fn dunstctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("dunstctl")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("DISPLAY", &self.display)
            .output()
            .unwrap()
    }

    /// (application, title, body) of every notification shown so far, oldest first.
    pub(crate) fn shown(&self) -> Vec<(String, String, String)> {
        // dunst's history holds the notifications closed; close the ones on screen.
        assert!(self.dunstctl(&["close-all"]).status.success());
        let out = self.dunstctl(&["history"]);
        let history: Value = serde_json::from_slice(&out.stdout).expect("dunstctl history is JSON");
        let field = |n: &Value, k: &str| n[k]["data"].as_str().unwrap().to_owned();
        let mut shown: Vec<_> = history["data"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"]["data"].as_i64().unwrap(),
                    field(n, "appname"),
                    field(n, "summary"),
                    field(n, "body"),
                )
            })
            .collect();
        shown.sort();
        shown.into_iter().map(|(_, a, s, b)| (a, s, b)).collect()
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn first_line(out: impl std::io::Read) -> String {
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    line.trim().to_owned()
}

#[test]
fn desktop_notifications_reach_a_real_notification_server_and_never_fail_a_run() {
    let ws = Ws::new();
    let desktop = Desktop::start();
    let on_desktop = |cmd: &mut assert_cmd::Command| {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)
            .env("DISPLAY", &desktop.display);
    };

    // A failed stage: one notification, the run still exits 1.
    ws.pipeline(&pipeline("  desktop: true", FAILS));
    let mut run = ws.pipe();
    run.arg("run");
    on_desktop(&mut run);
    let out = run.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("notified the desktop (failure)"), "{err}");
    let shown = desktop.shown();
    assert_eq!(shown.len(), 1, "{shown:?}");
    let (app, title, body) = &shown[0];
    assert_eq!((app.as_str(), title.as_str()), ("pipe", "pipe: nightly"));
    assert!(
        body.starts_with("failed: stage watch failed (run "),
        "{body}"
    );
    assert!(body.contains("pipe runs show "), "{body}");

    // With a webhook too, each hears once; a schedule's name is in the text.
    let hook = Receiver::start(&ws);
    ws.pipeline(&pipeline(
        &format!(
            "  webhook: {}\n  desktop: true\n  on: [success]",
            hook.url("/h")
        ),
        HEALTHY,
    ));
    let mut run = ws.pipe();
    run.args(["run"]).env("PIPE_SCHEDULE", "nightly-2am");
    on_desktop(&mut run);
    let out = run.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hook.received().len(), 1);
    let shown = desktop.shown();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[1].2.starts_with("succeeded ("), "{shown:?}");
    assert!(shown[1].2.contains("schedule nightly-2am"), "{shown:?}");

    // No desktop session (a server, or cron without the bus address): a warning that says
    // why, and the outcome is the run's own.
    ws.pipeline(&pipeline("  desktop: true", FAILS));
    let out = ws
        .pipe()
        .arg("run")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("desktop notification (failure) not shown"),
        "{err}"
    );
    assert!(err.contains("no DBUS_SESSION_BUS_ADDRESS"), "{err}");
    assert_eq!(desktop.shown().len(), 2);
}
