//! `notify:` against a real HTTP server (Python's `http.server`, started by the test): a
//! failed run, a regression and a success each POST one Slack-compatible JSON body; the
//! default list stays quiet on success; a dead or refusing webhook, or a missing URL
//! variable, is a warning and never changes the run's exit code; bad settings exit 2.

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
