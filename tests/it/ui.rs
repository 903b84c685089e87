//! `pipe ui` over HTTP, as a browser or script meets it: a run started from the command
//! line appears on the live runs stream and its events stream resumes by offset with no
//! gap; a run started from the API is an ordinary detached `pipe run` (it survives the UI
//! being killed, and stops on SIGINT); form errors are `pipe run`'s messages; uploads are
//! checked by the ingest reader; the security rules (Host, token, Origin, paths, size).

use crate::support::Ws;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A stage that logs and reports step i (loss 10 - i) and then waits for the file
/// `gate<i>`, so a test decides when each step happens and never races the run. (The log
/// line comes first, so a test that saw the step's progress finds it in the log.)
pub const GATED: &str = r#"name: gated
params:
  valid: 0.1
  steps: 3
stages:
  ingest:
    kind: ingest
    with:
      source: data/train.jsonl
      out: data/clean
      split: {valid: "{{ params.valid }}", test: 0.1}
  work:
    cmd: >-
      for i in $(seq 1 {{ params.steps }}); do echo "reported step $i";
      printf '{"step":%s,"total":{{ params.steps }},"loss":%s}' $i $((10 - i)) > "$PIPE_PROGRESS.tmp" &&
      mv "$PIPE_PROGRESS.tmp" "$PIPE_PROGRESS";
      while [ ! -e gate$i ]; do sleep 0.05; done; done;
      echo '{"final_loss": 7}' > m.json
    params: [steps]
    outs: [m.json]
    metrics: [m.json]
"#;

/// A workspace holding [`GATED`] as `gated.yaml` and its data.
pub fn gated_ws() -> Ws {
    let ws = Ws::new();
    let rows: String = (1..=30)
        .map(|i| format!("{{\"prompt\": \"p{i}\", \"completion\": \"c{i}\"}}\n"))
        .collect();
    ws.file("gated.yaml", GATED).file("data/train.jsonl", &rows);
    ws
}

/// A running `pipe ui`, killed when dropped.
pub struct Ui {
    pub child: Child,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base: String,
    pub agent: ureq::Agent,
}

impl Ui {
    pub fn start(ws: &Ws, extra: &[&str]) -> Self {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("pipe"))
            .args(["ui", "--port", "0", "--root"])
            .arg(ws.dir.path())
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first line is the address, printed once the socket listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("pipe ui: ")
            .unwrap_or_else(|| panic!("{line}"));
        let base = url
            .split("/?")
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self { child, base, agent }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, json_body(&mut r))
    }

    /// A POST as the UI's page sends it (with its Origin).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Origin", &self.base)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let status = r.status().as_u16();
        (status, json_body(&mut r))
    }

    /// An open server-sent event stream.
    pub fn sse(&self, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        Sse(BufReader::new(Box::new(r.into_body().into_reader())))
    }
}

/// A response's JSON body (`null` when it has none).
fn json_body(r: &mut ureq::http::Response<ureq::Body>) -> Value {
    let text = r.body_mut().read_to_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server-sent event stream being read.
pub struct Sse(BufReader<Box<dyn Read + Send>>);

/// One event: `(event name, id, data)`.
pub type SseEvent = (String, Option<String>, String);

impl Sse {
    /// The next event (blocks until it comes; keep-alive comments are skipped).
    pub fn next(&mut self) -> SseEvent {
        let (mut name, mut id, mut data) = ("message".to_owned(), None, String::new());
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "stream closed");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return (name, id, data);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
}

/// `pipe run gated.yaml` in the background.
pub fn cli_run(ws: &Ws, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .args(["run", "gated.yaml", "--quiet"])
        .args(args)
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads the live runs stream until a run matching `pred` is on it.
pub fn wait_for_run(ui: &Ui, pred: impl Fn(&Value) -> bool) -> Value {
    let mut stream = ui.sse("/api/runs/stream", None);
    loop {
        let (name, _, data) = stream.next();
        assert_eq!(name, "runs");
        let page: Value = serde_json::from_str(&data).unwrap();
        if let Some(r) = page["runs"].as_array().unwrap().iter().find(|r| pred(r)) {
            return r.clone();
        }
    }
}

/// Polls the run's record until `pred` holds (the record is a file another process
/// writes; there is nothing to wait on), failing after a minute.
fn wait_record(ui: &Ui, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = ui.get(&format!("/api/runs/{id}"));
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "run {id} never got there: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cli_run_shows_up_live_and_its_stream_resumes_without_gaps() {
    let ws = gated_ws();
    let ui = Ui::start(&ws, &[]);
    let mut run = cli_run(&ws, &[]);
    let summary = wait_for_run(&ui, |r| r["status"] == "running");
    let id = summary["id"].as_str().unwrap().to_owned();
    assert_eq!(summary["pipeline"], "gated");

    // First connection: read up to step 1, then drop it.
    let path = format!("/api/runs/{id}/events");
    let mut first = ui.sse(&path, None);
    let mut seen: Vec<Value> = Vec::new();
    let last_id = loop {
        let (name, eid, data) = first.next();
        assert_eq!(name, "message");
        let v: Value = serde_json::from_str(&data).unwrap();
        seen.push(v.clone());
        if v["event"] == "stage-progress" && v["step"] == 1 {
            break eid.unwrap();
        }
    };
    drop(first);
    ws.file("gate1", "");

    // Reconnect as a browser does, with Last-Event-ID: the rest, nothing twice.
    let mut second = ui.sse(&path, Some(&last_id));
    let mut gated = 1;
    let end = loop {
        let (name, _, data) = second.next();
        let v: Value = serde_json::from_str(&data).unwrap();
        if name == "end" {
            break v;
        }
        if v["event"] == "stage-progress" {
            let step = v["step"].as_u64().unwrap();
            assert!(step > gated - 1);
            gated = step;
            ws.file(&format!("gate{step}"), "");
        }
        seen.push(v);
    };
    assert_eq!(end["status"], "succeeded");
    assert!(run.wait().unwrap().success());

    // Exactly the lines of the run's events.jsonl, in order: no gap, no repeat.
    let file: Vec<Value> = ws
        .read(&format!("runs/history/{id}/events.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen, file);
    let steps: Vec<u64> = seen
        .iter()
        .filter(|e| e["event"] == "stage-progress")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3]);

    // The finished run's page: its stages, metrics and the work stage's live curve.
    let (status, view) = ui.get(&format!("/api/runs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(view["run"]["status"], "succeeded");
    let work = view["run"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "work")
        .unwrap();
    assert_eq!(work["metrics"]["final_loss"], 7.0);
    let curve = &view["curves"][0];
    assert_eq!(
        (curve["stage"].as_str(), curve["name"].as_str()),
        (Some("work"), Some("loss"))
    );
    assert_eq!(
        curve["points"],
        serde_json::json!([[1, 9.0], [2, 8.0], [3, 7.0]])
    );

    // Compared with a second run (up to date: its stages were cached, same metrics).
    let second = ws.run_ok(&["gated.yaml", "--set", "valid=0.2"]);
    assert_eq!(second.code, 0);
    let (status, cmp) = ui.get("/api/compare?ids=latest,latest~1");
    assert_eq!(status, 200, "{cmp}");
    assert_eq!(cmp["runs"].as_array().unwrap().len(), 2);
    assert_eq!(cmp["runs"][1]["summary"]["id"], id.as_str());
    let row = |rows: &Value, key: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {rows:#}"))
            .clone()
    };
    let loss = row(&cmp["metrics"], "work.final_loss");
    assert_eq!(
        (loss["values"].clone(), loss["differs"].clone()),
        (serde_json::json!([7.0, 7.0]), Value::Bool(false))
    );
    let valid = row(&cmp["params"], "ingest.split.valid");
    assert_eq!(
        (valid["values"].clone(), valid["differs"].clone()),
        (serde_json::json!([0.2, 0.1]), Value::Bool(true))
    );
    let (status, _) = ui.get(&format!("/api/compare?ids={id}"));
    assert_eq!(status, 400, "one run is no comparison");

    // The stage's log, kept with the run.
    let mut r = ui
        .agent
        .get(format!("{}/api/runs/{id}/log?stage=work", ui.base))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = r.body_mut().read_to_string().unwrap();
    assert!(
        log.contains("reported step 1\nreported step 2\nreported step 3"),
        "{log}"
    );

    // Its metrics file downloads; anything not listed as its artifact does not.
    let mut r = ui
        .agent
        .get(format!("{}/api/runs/{id}/download?path=m.json", ui.base))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.body_mut().read_to_string().unwrap().trim(),
        r#"{"final_loss": 7}"#
    );
    for bad in ["gated.yaml", "../../../etc/passwd", "/etc/passwd"] {
        let (status, body) = ui.get(&format!("/api/runs/{id}/download?path={bad}"));
        assert_eq!(status, 404, "{bad}: {body}");
    }
}

#[test]
fn runs_started_from_the_ui_are_checked_like_pipe_run_detached_and_stoppable() {
    let ws = gated_ws();
    let ui = Ui::start(&ws, &[]);

    // The form: params typed by the schema of the option they feed.
    let (status, form) = ui.get("/api/pipelines/form?file=gated.yaml");
    assert_eq!(status, 200, "{form}");
    let valid = form["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["param"] == "valid")
        .unwrap();
    assert_eq!(valid["schema"]["type"], "number");
    assert_eq!(
        valid["used_by"],
        serde_json::json!(["ingest.with.split.valid"])
    );
    assert!(
        valid["schema"]["description"]
            .as_str()
            .unwrap()
            .contains("validation")
    );
    let (_, list) = ui.get("/api/pipelines");
    assert_eq!(list["pipelines"][0]["file"], "gated.yaml");

    // A bad value: pipe run's own message, word for word.
    let (status, err) = ui.post(
        "/api/runs",
        &serde_json::json!({"pipeline": "gated.yaml", "sets": {"valid": "abc"}}),
    );
    assert_eq!(status, 400);
    let cli = ws
        .pipe()
        .args(["run", "gated.yaml", "--set", "valid=abc"])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2));
    let cli_err = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(
        err["error"].as_str().unwrap(),
        cli_err.trim_end().strip_prefix("error: ").unwrap()
    );
    let history = std::fs::read_dir(ws.path("runs/history")).map_or(0, |d| d.count());
    assert_eq!(history, 0, "nothing started");

    // Start one, then kill the UI: the run goes on (it is not the UI's child in any way
    // that matters), and a new UI shows it.
    let (status, started) = ui.post(
        "/api/runs",
        &serde_json::json!({"pipeline": "gated.yaml", "sets": {"steps": "2"}}),
    );
    assert_eq!(status, 200, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let pid = started["pid"].as_u64().unwrap() as u32;
    drop(ui);
    let ui = Ui::start(&ws, &[]);
    let view = wait_record(&ui, &id, |v| v["progress"]["work"]["step"] == 1);
    assert_eq!(view["run"]["status"], "running");
    assert_eq!(view["run"]["sets"], serde_json::json!(["steps=2"]));
    assert_eq!(view["run"]["pid"], pid);
    let mut r = ui
        .agent
        .get(format!("{}/api/runs/{id}/log?stage=work", ui.base))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("reported step 1")
    );

    // Stop: SIGINT, as Ctrl-C; the run ends interrupted.
    let (status, body) = ui.post(&format!("/api/runs/{id}/stop"), &Value::Null);
    assert_eq!(status, 200, "{body}");
    let view = wait_record(&ui, &id, |v| v["run"]["status"] != "running");
    assert_eq!(view["run"]["status"], "interrupted");
    let (status, body) = ui.post(&format!("/api/runs/{id}/stop"), &Value::Null);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("is not running"));
}

#[test]
fn uploads_are_checked_by_the_ingest_reader() {
    let ws = Ws::new();
    let ui = Ui::start(&ws, &["--max-upload-mb", "1"]);
    let upload = |name: &str, body: &str| {
        let mut r = ui
            .agent
            .post(format!("{}/api/datasets?name={name}", ui.base))
            .header("Origin", &ui.base)
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, json_body(&mut r))
    };
    let bad = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\"}\nnot json\n";
    let (status, v) = upload("bad.jsonl", bad);
    assert_eq!(status, 422);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("data/uploads/bad.jsonl:2: missing field `completion`"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("data/uploads/bad.jsonl:3: invalid JSON"),
        "{errors:?}"
    );
    assert!(
        !ws.exists("data/uploads/bad.jsonl"),
        "a bad file is not kept"
    );

    let good = "prompt,completion\nwalk,walked\nrun,ran\n";
    let (status, v) = upload("verbs.csv", good);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stats"]["examples"], 2);
    assert_eq!(v["stats"]["formats"]["completions"], 2);
    assert_eq!(ws.read("data/uploads/verbs.csv"), good);
    let (_, list) = ui.get("/api/datasets");
    assert_eq!(list["datasets"][0]["file"], "data/uploads/verbs.csv");

    // Names are never paths; sizes are limited.
    for name in ["..%2Fevil.jsonl", "%2Ftmp%2Fx.jsonl", "x.sh"] {
        let (status, v) = upload(name, good);
        assert_eq!(status, 400, "{name}: {v}");
    }
    // Over the limit: 413. Sent by hand, one byte past the limit of a body announced as
    // 2 MiB, so the server refuses it while the client is done writing (a client still
    // writing would see the connection closed under it instead of the answer).
    let addr = ui.base.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/datasets?name=big.jsonl HTTP/1.1\r\nHost: {addr}\r\nOrigin: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        ui.base,
        2 << 20
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&vec![b'x'; (1 << 20) + 1]).unwrap();
    let mut status_line = String::new();
    BufReader::new(conn).read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert!(!ws.exists("data/uploads/big.jsonl"));
}

#[test]
fn security_host_origin_token_and_paths() {
    let ws = gated_ws();
    let ui = Ui::start(&ws, &[]);
    let call = |req: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
        req.call().unwrap().status().as_u16()
    };
    // DNS rebinding: a foreign Host is refused even on loopback.
    assert_eq!(
        call(
            ui.agent
                .get(format!("{}/api/runs", ui.base))
                .header("Host", "evil.example:80")
        ),
        403
    );
    assert_eq!(call(ui.agent.get(format!("{}/api/runs", ui.base))), 200);
    // CSRF: no Origin, or another site's, cannot start a run.
    let start = |origin: Option<&str>| {
        let mut req = ui.agent.post(format!("{}/api/runs", ui.base));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.header("Content-Type", "application/json")
            .send(r#"{"pipeline": "gated.yaml"}"#)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(start(None), 403);
    assert_eq!(start(Some("http://evil.example")), 403);
    // Paths out of the workspace.
    for bad in ["../x.yaml", "/etc/passwd", "gated.yaml/../../x.yaml"] {
        let (status, v) = ui.get(&format!("/api/pipelines/form?file={bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, _) = ui.get("/api/runs/..%2F..%2Fetc");
    assert_eq!(status, 400);
    drop(ui);

    // Beyond loopback: the token, by bearer header or by the cookie the printed address sets.
    let ui = Ui::start(&ws, &["--host", "0.0.0.0", "--token", "s3cret"]);
    let url = |p: &str| format!("{}{p}", ui.base);
    assert_eq!(call(ui.agent.get(url("/api/runs"))), 401);
    assert_eq!(
        call(
            ui.agent
                .get(url("/api/runs"))
                .header("Authorization", "Bearer wrong")
        ),
        401
    );
    assert_eq!(
        call(
            ui.agent
                .get(url("/api/runs"))
                .header("Authorization", "Bearer s3cret")
        ),
        200
    );
    let no_redirect: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let r = no_redirect.get(url("/?token=s3cret")).call().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        call(ui.agent.get(url("/api/runs")).header("Cookie", pair)),
        200
    );
    assert_eq!(call(no_redirect.get(url("/?token=wrong"))), 401);
}

/// Two stages, one reading the other's out; `count` fails when `in.txt` says `bad`.
const CHAIN: &str = r#"name: chain
stages:
  prep:
    cmd: mkdir -p out && cp in.txt out/a.txt
    deps: [in.txt]
    outs: [out/a.txt]
  count:
    cmd: wc -c < out/a.txt > out/n.txt && ! grep -q bad out/a.txt
    deps: [out/a.txt]
    outs: [out/n.txt]
"#;

/// One stage on the workspace page: `(state, why, needs, depth)`.
type StageState = (String, String, Value, u64);

/// The stages of `file` on the workspace page, by name.
fn stage_states(ui: &Ui, file: &str) -> (Value, BTreeMap<String, StageState>) {
    let (status, v) = ui.get(&format!("/api/workspace?file={file}"));
    assert_eq!(status, 200, "{v}");
    let stages = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["stage"].as_str().unwrap().to_owned();
            let state = s["state"].as_str().unwrap().to_owned();
            let why = s["why"].as_str().unwrap().to_owned();
            (
                name,
                (state, why, s["needs"].clone(), s["depth"].as_u64().unwrap()),
            )
        })
        .collect();
    (v, stages)
}

#[test]
fn the_workspace_shows_each_stage_on_the_dag_up_to_date_stale_running_or_failed() {
    let ws = gated_ws();
    ws.file("chain.yaml", CHAIN).file("in.txt", "hello\n");
    let ui = Ui::start(&ws, &[]);
    let state = |file: &str, stage: &str| stage_states(&ui, file).1[stage].clone();

    // Never run: both stale, `count` one column right of `prep`, which it reads.
    let (v, stages) = stage_states(&ui, "chain.yaml");
    assert_eq!(v["pipeline"], "chain");
    assert!(v["latest"].is_null(), "{v}");
    assert_eq!(stages["prep"].0, "stale", "{v}");
    assert_eq!((stages["prep"].2.clone(), stages["prep"].3), (json!([]), 0));
    assert_eq!(
        (stages["count"].2.clone(), stages["count"].3),
        (json!(["prep"]), 1)
    );

    // After a run: up to date, and the latest run is linked.
    let ok = ws.pipe().args(["run", "chain.yaml"]).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (v, stages) = stage_states(&ui, "chain.yaml");
    assert_eq!(v["latest"]["status"], "succeeded", "{v}");
    assert!(stages.values().all(|s| s.0 == "up-to-date"), "{v}");

    // An edited input: prep is stale because of it, count because of prep.
    ws.file("in.txt", "bad\n");
    let (prep, count) = (state("chain.yaml", "prep"), state("chain.yaml", "count"));
    assert_eq!(prep.0, "stale");
    assert!(prep.1.contains("in.txt"), "{prep:?}");
    assert_eq!(count.0, "stale");
    assert!(count.1.contains("prep"), "{count:?}");

    // A run that fails in count: prep is up to date again, count failed, with the error.
    let failed = ws.pipe().args(["run", "chain.yaml"]).output().unwrap();
    assert!(!failed.status.success());
    let (v, stages) = stage_states(&ui, "chain.yaml");
    assert_eq!(v["latest"]["status"], "failed", "{v}");
    assert_eq!(stages["prep"].0, "up-to-date", "{v}");
    assert_eq!(stages["count"].0, "failed", "{v}");
    assert!(stages["count"].1.contains("exited with status 1"), "{v}");

    // A run in progress: the stage it is executing reads running.
    let mut run = cli_run(&ws, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while state("gated.yaml", "work").0 != "running" {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            state("gated.yaml", "work")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 1..=3 {
        ws.file(&format!("gate{i}"), "");
    }
    assert!(run.wait().unwrap().success());
    assert_eq!(state("gated.yaml", "work").0, "up-to-date");

    // A file outside the workspace or not a pipeline is refused, as for the form.
    let (status, v) = ui.get("/api/workspace?file=../etc/passwd");
    assert_eq!(status, 400, "{v}");
}

/// The datasets page's token counts: `pipe tokens` on an upload, with a known model only.
#[test]
fn an_upload_is_counted_in_tokens_through_the_models_chat_template() {
    let ws = Ws::new();
    ws.file(
        "data/uploads/verbs.csv",
        "prompt,completion\nWhat is the past tense of 'walk'?,walked\nAnd of 'go'?,went\n",
    );
    let ui = Ui::start(&ws, &[]);
    let (status, list) = ui.get("/api/datasets");
    assert_eq!(status, 200);
    assert_eq!(list["models"], json!(["smollm2-135m-instruct"]));
    let ask = |body: Value| ui.post("/api/datasets/tokens", &body);

    let (status, v) =
        ask(json!({"name": "verbs.csv", "model": "smollm2-135m-instruct", "max_seq_len": 8}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stats"]["examples"], 2, "{v}");
    assert_eq!(v["stats"]["truncated"], 2, "{v}");
    assert_eq!(v["stats"]["max_seq_len"], 8, "{v}");
    assert!(v["stats"]["tokens"].as_u64().unwrap() > 10, "{v}");
    let text = v["preview"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("<|im_start|>user\nWhat is the past tense of 'walk'?<|im_end|>"),
        "{text}"
    );
    assert!(
        text.contains("<|im_start|>assistant\nwalked<|im_end|>"),
        "{text}"
    );

    // Only known models and uploaded files; never a path.
    let (status, v) = ask(json!({"name": "verbs.csv", "model": "/etc/passwd"}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not a known model"),
        "{v}"
    );
    let (status, _) = ask(json!({"name": "../../gated.yaml", "model": "smollm2-135m-instruct"}));
    assert_eq!(status, 400);
    let (status, _) = ask(json!({"name": "other.csv", "model": "smollm2-135m-instruct"}));
    assert_eq!(status, 404);
    // Like every change-making request, it needs the page's Origin.
    let r = ui
        .agent
        .post(format!("{}/api/datasets/tokens", ui.base))
        .header("Content-Type", "application/json")
        .send(json!({"name": "verbs.csv", "model": "smollm2-135m-instruct"}).to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}
