//! `pipe ui` in a real browser: Debian's Chromium, headless, driven through chromedriver
//! with plain WebDriver JSON (the HTTP client the tests already use). The page shows a
//! run started from the command line as it runs, its loss chart gaining a point per step;
//! a run starts from the generated form; a bad value shows `pipe run`'s error.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`tools/test-deps.sh`); it fails,
//! never skips, without them. `PIPE_UI_SCREENSHOTS=DIR` saves a PNG of each page there.

use crate::support::Ws;
use crate::ui::{Ui, cli_run, gated_ws};
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed when dropped (also when starting the session fails).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A chromedriver process and one headless Chromium session.
pub(crate) struct Browser {
    _driver: Driver,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> Self {
        let mut driver = Command::new("/usr/bin/chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; run tools/test-deps.sh)");
        // chromedriver says which port it took: "... started successfully on port N."
        let mut out = driver.stdout.take().unwrap();
        let driver = Driver(driver);
        let mut seen = String::new();
        let port = loop {
            let mut byte = [0u8];
            assert_eq!(
                out.read(&mut byte).unwrap(),
                1,
                "chromedriver ended: {seen}"
            );
            seen.push(byte[0] as char);
            if let Some(rest) = seen.split("successfully on port ").nth(1)
                && let Some(port) = rest.strip_suffix('.')
            {
                break port.to_owned();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let profile = tempfile::tempdir().unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let v = send(&agent, "POST", &format!("{base}/session"), Some(&caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Self {
            _driver: driver,
            base,
            session,
            agent,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let v = self.try_cmd(method, path, body);
        assert!(v.get("error").is_none(), "{method} {path}: {v}");
        v
    }

    fn try_cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        send(&self.agent, method, &url, body)
    }

    /// Finds `css` and runs `act` on it. The page re-renders lists from live events, so an
    /// element found a moment ago may be gone by the time it is used: then it is found again,
    /// as a user's second look would.
    fn on_element(&self, css: &str, act: impl Fn(&str) -> Value) {
        for _ in 0..20 {
            let v = act(&self.element(css));
            match v.get("error").and_then(Value::as_str) {
                None => return,
                Some("stale element reference") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(_) => panic!("{css}: {v}"),
            }
        }
        panic!("{css}: still stale after 20 tries");
    }

    pub(crate) fn open(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub(crate) fn js(&self, script: &str) -> Value {
        let v = self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        );
        v["value"].clone()
    }

    /// Runs `script` (which returns a value) until `pred` holds for its result, for at
    /// most a minute: the page updates itself from live events, there is nothing to join.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        script: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_within(what, Duration::from_secs(60), script, pred)
    }

    /// [`Browser::wait_for`] for work that takes longer than a minute on a loaded machine.
    pub(crate) fn wait_for_within(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.js(script);
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: still {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v["value"][ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_owned()
    }

    pub(crate) fn click(&self, css: &str) {
        self.on_element(css, |el| {
            self.try_cmd("POST", &format!("/element/{el}/click"), Some(&json!({})))
        });
    }

    /// Clears a field and types `text` into it, key by key.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, |el| {
            let cleared = self.try_cmd("POST", &format!("/element/{el}/clear"), Some(&json!({})));
            if cleared.get("error").is_some() {
                return cleared;
            }
            self.try_cmd(
                "POST",
                &format!("/element/{el}/value"),
                Some(&json!({ "text": text })),
            )
        });
    }

    /// Types `text` into a field without clearing it first (a file input takes a path).
    pub(crate) fn send_keys(&self, css: &str, text: &str) {
        self.on_element(css, |el| {
            self.try_cmd(
                "POST",
                &format!("/element/{el}/value"),
                Some(&json!({ "text": text })),
            )
        });
    }

    /// Sets the window's size (the page's width is what layouts respond to).
    pub(crate) fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// The page at a desktop and a laptop width (`NAME-desktop.png`, `NAME-laptop.png`)
    /// when screenshots are asked for (`PIPE_UI_SCREENSHOTS=DIR`); the window is then
    /// back at its starting size.
    pub(crate) fn screenshots(&self, name: &str) {
        if std::env::var_os("PIPE_UI_SCREENSHOTS").is_none() {
            return;
        }
        for (width, height, label) in [(1440, 900, "desktop"), (1024, 768, "laptop")] {
            self.resize(width, height);
            self.screenshot(&format!("{name}-{label}"));
        }
        self.resize(1280, 900);
    }

    pub(crate) fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PIPE_UI_SCREENSHOTS") else {
            return;
        };
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v["value"].as_str().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        // Ends Chromium; chromedriver goes with `_driver` right after.
        let _ = self.agent.delete(&url).call();
    }
}

fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Value {
    let mut r = match method {
        "GET" => agent.get(url).call(),
        _ => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or(&json!({})).to_string()),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: {text}"));
    match v.get("value") {
        Some(inner) if inner.get("error").is_some() => inner.clone(),
        _ => v,
    }
}

/// Standard base64 (WebDriver screenshots), without a dependency for one test helper.
fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(table(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The number of points the run page's loss chart draws; without a chart, where the page
/// is and what it shows, so that a failure says why.
const CHART_POINTS: &str =
    "const s = document.getElementById('loss-chart');
     return s ? s.dataset.points || null
              : 'no chart at ' + location.hash + ': ' + document.getElementById('main').textContent.slice(0, 300);";

/// The newest run of `pipe runs list --json`.
fn newest_run(ws: &Ws) -> Value {
    let list = ws.pipe().args(["runs", "list", "--json"]).output().unwrap();
    let first = String::from_utf8_lossy(&list.stdout)
        .lines()
        .next()
        .map(str::to_owned)
        .unwrap();
    serde_json::from_str(&first).unwrap()
}

#[test]
fn the_page_shows_a_cli_run_live_and_starts_runs_from_the_form() {
    let ws: Ws = gated_ws();
    let ui = Ui::start(&ws, &[]);
    let browser = Browser::start();
    browser.open(&format!("{}/#/", ui.base));
    browser.wait_for(
        "the empty runs list",
        "return document.querySelector('#runs tbody')?.textContent || null",
        |v| v.as_str().is_some_and(|t| t.contains("No runs yet")),
    );

    // A run started from the command line appears in the open page, running.
    let mut run = cli_run(&ws, &[]);
    let id = browser.wait_for(
        "the CLI run in the list",
        "const r = document.querySelector('#runs tr[data-run]');
         return r && r.querySelector('.run-status').textContent === 'running' ? r.dataset.run : null;",
        Value::is_string,
    );
    let id = id.as_str().unwrap().to_owned();
    browser.screenshots("runs");

    // Its page: the chart gains a point per step, as the run reports them.
    browser.click(&format!("#runs tr[data-run='{id}'] a"));
    browser.wait_for("the run's page", "return location.hash", |v| {
        v.as_str() == Some(&format!("#/run/{id}"))
    });
    for step in 1..=3 {
        browser.wait_for(&format!("point {step} on the chart"), CHART_POINTS, |v| {
            v.as_str() == Some(&step.to_string())
        });
        if step == 2 {
            browser.screenshots("run-live");
        }
        ws.file(&format!("gate{step}"), "");
    }
    browser.wait_for(
        "the run to finish",
        "return document.querySelector('#run-status')?.textContent || null",
        |v| v == "succeeded",
    );
    assert!(run.wait().unwrap().success());
    assert_eq!(browser.js(CHART_POINTS), "3");
    let stages = browser.js("return document.querySelector('#stages').textContent");
    assert!(stages.as_str().unwrap().contains("final_loss"), "{stages}");

    // The form, generated from the pipeline's params and the schema of what they feed.
    browser.open(&format!("{}/#/new", ui.base));
    browser.wait_for(
        "the pipeline list",
        "return document.querySelectorAll('#pipeline option').length",
        |v| v.as_u64() >= Some(2),
    );
    browser.js(
        "const s = document.getElementById('pipeline'); s.value = 'gated.yaml';
         s.dispatchEvent(new Event('change')); return true;",
    );
    let hint = browser.wait_for(
        "the valid field",
        "const f = document.getElementById('field-valid'); return f ? f.parentElement.textContent : null;",
        Value::is_string,
    );
    assert!(
        hint.as_str().unwrap().contains("ingest.with.split.valid"),
        "{hint}"
    );
    browser.screenshots("new-run");

    // A bad value: pipe run's message, on the page.
    browser.type_into("#field-valid", "abc");
    browser.click("#start");
    let error = browser.wait_for(
        "the validation error",
        "return document.getElementById('start-error')?.textContent || null",
        Value::is_string,
    );
    let error = error.as_str().unwrap();
    assert!(
        error.contains("stage `ingest`: `split.valid`: invalid type: string \"abc\", expected f64"),
        "{error}"
    );
    assert!(error.contains("gated.yaml:11:15"), "{error}");
    browser.screenshots("new-run-error");

    // A good one starts a run (the gates are open now) and the page follows it.
    browser.type_into("#field-valid", "0.2");
    browser.click("#start");
    let started = browser.wait_for(
        "the started run's page",
        "return location.hash.startsWith('#/run/') ? location.hash.slice(6) : null",
        Value::is_string,
    );
    let started = started.as_str().unwrap().to_owned();
    assert_ne!(started, id);
    browser.wait_for(
        "the started run to finish",
        "return document.querySelector('#run-status')?.textContent || null",
        |v| v == "succeeded",
    );
    let newest = newest_run(&ws);
    assert_eq!(newest["id"], started.as_str());
    assert_eq!(newest["sets"], json!(["valid=0.2"]));

    // Rerun: the same pipeline with the same --set, as a new run.
    browser.click("#rerun");
    let rerun = browser.wait_for(
        "the rerun's page",
        &format!(
            "return location.hash.startsWith('#/run/') && location.hash.slice(6) !== '{started}' ? location.hash.slice(6) : null"
        ),
        Value::is_string,
    );
    browser.wait_for(
        "the rerun to finish",
        "return document.querySelector('#run-status')?.textContent || null",
        |v| v == "succeeded",
    );
    let newest = newest_run(&ws);
    assert_eq!(newest["id"], rerun);
    assert_eq!(newest["sets"], json!(["valid=0.2"]));

    // Rerun with changes: the form, already holding the run's --set.
    browser.click("#rerun-edit");
    browser.wait_for(
        "the form holding the run's value",
        "const f = document.getElementById('field-valid'); return f ? f.value : null;",
        |v| v == "0.2",
    );
    assert_eq!(
        browser.js("return document.getElementById('pipeline').value"),
        "gated.yaml"
    );

    // The CLI run and the form's, compared: the param the form changed is the row that
    // differs.
    browser.open(&format!("{}/#/", ui.base));
    browser.wait_for(
        "both runs in the list",
        &format!(
            "return document.querySelector(\"#runs input[value='{id}']\") && document.querySelector(\"#runs input[value='{started}']\") ? true : null"
        ),
        |v| v == true,
    );
    browser.click(&format!("#runs input[value='{id}']"));
    browser.click(&format!("#runs input[value='{started}']"));
    browser.click("#compare");
    let differs = browser.wait_for(
        "the comparison",
        "const t = document.getElementById('compare-params');
         return t ? [...t.querySelectorAll('tr.differs td:first-child')].map(td => td.textContent).join(' ') : null;",
        Value::is_string,
    );
    assert!(
        differs.as_str().unwrap().contains("valid"),
        "rows that differ: {differs}"
    );
    browser.screenshots("compare");

    // The workspace: each stage of gated.yaml on its DAG after those runs. `valid` is back
    // to the file's value there, so ingest is stale, but restorable: the first run made
    // its outs with that value and the run cache has them.
    browser.open(&format!("{}/#/", ui.base));
    let states = browser.wait_for(
        "gated.yaml's stages",
        "const c = document.querySelector(\".pipeline[data-file='gated.yaml']\");
         return c ? [...c.querySelectorAll('g.node')].map(n => n.dataset.stage + '=' + n.dataset.state).join(' ') : null;",
        Value::is_string,
    );
    assert_eq!(states, "ingest=restorable work=up-to-date", "{states}");
    let why = browser.js(
        "return document.querySelector(\".pipeline[data-file='gated.yaml'] ul.why\").textContent",
    );
    assert!(
        why.as_str()
            .unwrap()
            .contains("ingest restorable definition changed"),
        "{why}"
    );
    browser.screenshots("workspace");

    // Datasets: a file with a bad row is refused with the line; a good one is kept, then
    // counted in tokens through SmolLM2's chat template.
    browser.open(&format!("{}/#/data", ui.base));
    browser.wait_for(
        "the upload field",
        "return document.getElementById('upload') ? true : null",
        |v| v == true,
    );
    ws.file(
        "mine/bad.jsonl",
        "{\"prompt\": \"walk\", \"completion\": \"walked\"}\n{\"prompt\": \"go\"}\n",
    );
    browser.send_keys("#upload", &ws.path("mine/bad.jsonl").display().to_string());
    let errors = browser.wait_for(
        "the upload's errors",
        "return document.getElementById('upload-errors')?.textContent || null",
        Value::is_string,
    );
    assert!(
        errors
            .as_str()
            .unwrap()
            .contains("data/uploads/bad.jsonl:2: missing field `completion`"),
        "{errors}"
    );
    ws.file(
        "mine/verbs.csv",
        "prompt,completion\nwalk,walked\ngo,went\nsing,sang\n",
    );
    browser.send_keys("#upload", &ws.path("mine/verbs.csv").display().to_string());
    let ok = browser.wait_for(
        "the upload's statistics",
        "return document.getElementById('upload-ok')?.textContent || null",
        Value::is_string,
    );
    assert!(ok.as_str().unwrap().contains("3 examples"), "{ok}");
    browser.click("#tok-go");
    let counted = browser.wait_for(
        "the token counts",
        "return document.getElementById('tokens-ok')?.textContent || document.getElementById('tokens-error')?.textContent || null",
        Value::is_string,
    );
    assert!(
        counted.as_str().unwrap().contains("3 examples"),
        "{counted}"
    );
    let shown = browser.js("return document.querySelector('pre.template').textContent");
    assert!(
        shown
            .as_str()
            .unwrap()
            .contains("<|im_start|>user\nwalk<|im_end|>\n<|im_start|>assistant\nwalked<|im_end|>"),
        "{shown}"
    );
    browser.screenshots("datasets");
}
