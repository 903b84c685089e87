//! The playground of `pipe ui` with the real SmolLM2 and an adapter a real `pipe run`
//! trained (the quickstart up to its train stage, with the serve tests' settings, enough
//! to answer "walked"): in headless Chromium, one prompt streams the base's and the
//! adapter's answers side by side; over HTTP, the model server (`pipe serve`) is started
//! on demand, refuses what the history does not list, gives way to a run holding the
//! `mlx` slot, stops when idle, and ends with `pipe ui`.

use crate::support::Ws;
use crate::ui::Ui;
use crate::ui_browser::Browser;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const ADAPTER: &str = "runs/quickstart/lora";
const PROMPT: &str = "What is the past tense of the verb 'walk'? Answer with one word.";

/// One trained workspace for the module's tests, one test at a time (each starts models).
fn trained() -> MutexGuard<'static, Ws> {
    static WS: OnceLock<Mutex<Ws>> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = Ws::new();
        let quickstart = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/quickstart.yaml"
        ))
        .unwrap();
        // The quickstart's stages up to train: what the playground needs is the adapter.
        let upto_train = &quickstart[..quickstart.find("  evaluate:").unwrap()];
        ws.file("quick.yaml", upto_train);
        ws.run_ok(&[
            "quick.yaml",
            "--set",
            "train.iters=30",
            "--set",
            "train.lr=1e-3",
        ]);
        Mutex::new(ws)
    })
    .lock()
    .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /api/playground/generate`: its status and, on 200, the events `(name, data)`.
fn generate(ui: &Ui, body: &Value, origin: Option<&str>) -> (u16, Vec<(String, Value)>) {
    let mut req = ui
        .agent
        .post(format!("{}/api/playground/generate", ui.base))
        .header("Content-Type", "application/json");
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let mut r = req.send(body.to_string()).unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        let text = r.body_mut().read_to_string().unwrap_or_default();
        return (
            status,
            vec![("error".into(), serde_json::from_str(&text).unwrap())],
        );
    }
    let mut events = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(r.into_body().into_reader()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    (status, events)
}

fn text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect()
}

/// The model server's pid, from `GET /api/playground`.
fn server_pid(ui: &Ui) -> Option<u64> {
    let (_, v) = ui.get("/api/playground");
    v["server"]["pid"].as_u64()
}

fn wait_until(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone(pid: u64) -> bool {
    // A zombie is gone for our purpose: it holds no model.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))
    })
}

#[test]
fn playground_streams_base_and_adapter_side_by_side_in_the_browser() {
    let ws = trained();
    let ui = Ui::start(&ws, &[]);
    let browser = Browser::start();
    browser.resize(1440, 1000);
    browser.open(&format!("{}/#/models", ui.base));
    browser.wait_for(
        "the adapter on the models page",
        "return document.querySelector('#models-table tr[data-adapter]')?.dataset.adapter || null",
        |v| v == ADAPTER,
    );
    browser.screenshots("models");
    browser.click("#models-table tr[data-adapter] td.actions a");
    browser.wait_for(
        "the playground with the adapter picked",
        "return document.getElementById('pg-adapter')?.value || null",
        |v| v == ADAPTER,
    );
    browser.type_into("#pg-prompt", PROMPT);
    browser.type_into("#pg-max_tokens", "24");
    browser.click("#pg-go");
    let done = "const b = document.getElementById('pg-out-base'), a = document.getElementById('pg-out-adapter');
         return b.dataset.done && a.dataset.done ? [b.dataset.done, a.dataset.done, b.textContent, a.textContent,
           Number(b.dataset.pieces), Number(a.dataset.pieces)] : null;";
    let v = browser.wait_for("both answers", done, |v| v.is_array());
    assert_eq!((&v[0], &v[1]), (&json!("1"), &json!("1")), "{v}");
    let (base, adapter) = (v[2].as_str().unwrap(), v[3].as_str().unwrap());
    // The adapter learned the one-word answer; the base answers in a sentence.
    assert_eq!(adapter.trim().to_lowercase(), "walked", "{v}");
    assert_ne!(base.trim().to_lowercase(), "walked", "{v}");
    // Each answer arrived in pieces, appended as the server generated them.
    assert!(v[4].as_u64().unwrap() >= 3, "{v}");
    assert!(v[5].as_u64().unwrap() >= 1, "{v}");
    let meta = browser.js("return document.getElementById('pg-meta-adapter').textContent");
    assert!(meta.as_str().unwrap().contains("tokens"), "{meta}");
    browser.screenshots("playground");
}

/// The files of a `.tar.gz` answer, by path.
fn untar(ui: &Ui, url: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let r = ui.agent.get(format!("{}{url}", ui.base)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(r.into_body().into_reader()));
    tar.entries()
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.header().entry_type().is_file())
        .map(|mut e| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

#[test]
fn the_models_page_downloads_the_adapter_in_the_mlx_lm_and_peft_layouts() {
    let ws = trained();
    let ui = Ui::start(&ws, &[]);
    let (status, models) = ui.get("/api/models");
    assert_eq!(status, 200);
    let adapter = &models["adapters"][0];
    assert_eq!(adapter["path"], ADAPTER, "{models}");
    assert_eq!(adapter["peft"], true, "{models}");
    let run = adapter["run"].as_str().unwrap();

    // mlx-lm's layout: the folder as train wrote it, byte for byte, and one that loads:
    // `pipe generate` answers with the downloaded copy as it does with the original.
    let files = untar(&ui, &format!("/api/runs/{run}/download?path={ADAPTER}"));
    for name in ["adapters.safetensors", "adapter_config.json"] {
        assert_eq!(
            files[&format!("lora/{name}")],
            std::fs::read(ws.dir.path().join(ADAPTER).join(name)).unwrap(),
            "{name}"
        );
    }
    let config: Value = serde_json::from_slice(&files["lora/adapter_config.json"]).unwrap();
    assert_eq!(config["fine_tune_type"], "lora", "{config}");
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        let path = copy.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let answer = |adapter: &std::path::Path| {
        let named = format!("a={}", adapter.display());
        batch_answer(&ws, "a", &["--adapter".as_ref(), named.as_ref()])
    };
    assert_eq!(
        answer(&copy.path().join("lora")),
        answer(&ws.dir.path().join(ADAPTER))
    );

    // PEFT's layout alone, named after the adapter.
    let peft = untar(
        &ui,
        &format!("/api/runs/{run}/download?path={ADAPTER}/peft"),
    );
    let names: Vec<&String> = peft.keys().collect();
    assert_eq!(
        names,
        [
            "lora-peft/adapter_config.json",
            "lora-peft/adapter_model.safetensors"
        ]
    );
    let config: Value = serde_json::from_slice(&peft["lora-peft/adapter_config.json"]).unwrap();
    assert_eq!(config["peft_type"], "LORA", "{config}");
    // A path that climbs out of the artifact is not one of its files.
    let (status, _) = ui.get(&format!(
        "/api/runs/{run}/download?path={ADAPTER}/../../quick.yaml"
    ));
    assert_eq!(status, 404);
}

/// `pipe generate --batch`'s greedy answer to [`PROMPT`] from the model named `name`
/// (`base`, or an adapter `args` names).
fn batch_answer(ws: &Ws, name: &str, args: &[&std::ffi::OsStr]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let request = json!({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": name, "max_tokens": 4, "temperature": 0,
                 "messages": [{"role": "user", "content": PROMPT}]}});
    std::fs::write(dir.path().join("in.jsonl"), format!("{request}\n")).unwrap();
    let out_file = dir.path().join("out.jsonl");
    let out = ws
        .pipe()
        .args(["generate", "--batch"])
        .arg(dir.path().join("in.jsonl"))
        .arg("--out")
        .arg(&out_file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&out_file).unwrap().trim()).unwrap();
    line["response"]["body"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned()
}

/// The models page builds what is not a stage output on request: the GGUF file (from
/// the browser: button, "building", then a download link) and the fused model (over the
/// API). The GGUF is the file `pipe export gguf` writes for the adapter, byte for byte;
/// the fused folder, unpacked anywhere, answers as the adapter does.
#[test]
fn the_models_page_builds_and_downloads_the_fused_model_and_the_gguf_file() {
    let ws = trained();
    let ui = Ui::start(&ws, &[]);
    let (_, models) = ui.get("/api/models");
    let adapter = &models["adapters"][0];
    assert_eq!(adapter["path"], ADAPTER, "{models}");
    assert_eq!(adapter["exports"]["gguf"]["state"], "missing", "{models}");
    assert_eq!(adapter["exports"]["fused"]["state"], "missing", "{models}");
    let (status, _) = ui.get(&format!("/api/models/download?path={ADAPTER}&format=gguf"));
    assert_eq!(status, 404, "nothing to download before a build");

    let browser = Browser::start();
    browser.resize(1440, 1000);
    browser.open(&format!("{}/#/models", ui.base));
    browser.wait_for(
        "the build button",
        "return document.querySelector('#models-table button.build.gguf') ? true : null",
        |v| v == true,
    );
    browser.click("#models-table button.build.gguf");
    let link = browser.wait_for_within(
        "the GGUF download link",
        Duration::from_secs(600),
        "return document.querySelector('#models-table a.download.gguf')?.getAttribute('href')
           || document.querySelector('#models-table .error')?.textContent || null",
        |v| v.is_string(),
    );
    let link = link.as_str().unwrap();
    assert!(link.starts_with("/api/models/download?"), "{link}");
    browser.screenshots("models-exports");
    let r = ui.agent.get(format!("{}{link}", ui.base)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.contains("lora.q8_0.gguf"), "{disposition}");
    let downloaded = r
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    let cli = tempfile::tempdir().unwrap();
    let cli_file = cli.path().join("cli.gguf");
    ws.pipe()
        .args([
            "export",
            "gguf",
            "--type",
            "q8_0",
            "--adapter",
            ADAPTER,
            "--out",
        ])
        .arg(&cli_file)
        .assert()
        .success();
    let expected = std::fs::read(&cli_file).unwrap();
    assert_eq!(&downloaded[..4], b"GGUF");
    assert!(
        downloaded == expected,
        "the UI's GGUF differs from `pipe export gguf`'s"
    );

    // The fused model, over the API: 202 while it builds, then ready and downloadable.
    let (status, state) = ui.post(
        "/api/models/export",
        &json!({"path": ADAPTER, "format": "fused"}),
    );
    assert_eq!(
        (status, &state["state"]),
        (202, &json!("building")),
        "{state}"
    );
    let (status, refused) = ui.post(
        "/api/models/export",
        &json!({"path": ADAPTER, "format": "gguf"}),
    );
    assert_eq!(
        status, 200,
        "a built export is answered as ready: {refused}"
    );
    // A run started meanwhile (the same pipeline: retraining would rewrite the adapter
    // folder the build reads) waits for the build, as for another run.
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .args([
            "run",
            "quick.yaml",
            "--set",
            "train.iters=30",
            "--set",
            "train.lr=1e-3",
        ])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut run_err = BufReader::new(run.stderr.take().unwrap());
    let mut first = String::new();
    run_err.read_line(&mut first).unwrap();
    assert!(
        first.contains(&format!(
            "waiting for pipe ui, building the fused export of {ADAPTER} (pid "
        )),
        "{first}"
    );
    assert!(run.wait().unwrap().success());
    let (_, models) = ui.get("/api/models");
    assert_ne!(
        models["adapters"][0]["exports"]["fused"]["state"], "building",
        "the run went on while the export was being built"
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let fused = loop {
        let (_, models) = ui.get("/api/models");
        let state = models["adapters"][0]["exports"]["fused"].clone();
        if state["state"] != "building" {
            break state;
        }
        assert!(Instant::now() < deadline, "fused export still building");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(fused["state"], "ready", "{fused}");
    let files = untar(
        &ui,
        &format!("/api/models/download?path={ADAPTER}&format=fused"),
    );
    let unpacked = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        assert!(name.starts_with("lora-fused/"), "{name}");
        let path = unpacked.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    assert!(
        files.contains_key("lora-fused/config.json"),
        "{:?}",
        files.keys()
    );
    let fused_dir = unpacked.path().join("lora-fused");
    let with_adapter = batch_answer(
        &ws,
        "a",
        &["--adapter".as_ref(), format!("a={ADAPTER}").as_ref()],
    );
    assert_eq!(with_adapter.trim().to_lowercase(), "walked");
    assert_eq!(
        batch_answer(&ws, "base", &["--model".as_ref(), fused_dir.as_os_str()]),
        with_adapter
    );
    // Nothing outside the history's adapters is built or served.
    let (status, _) = ui.post(
        "/api/models/export",
        &json!({"path": "quick.yaml", "format": "fused"}),
    );
    assert_eq!(status, 404);
}

#[test]
fn playground_server_follows_the_history_the_mlx_slot_idle_and_the_ui() {
    let ws = trained();
    let ui = Ui::start(&ws, &["--model-idle-secs", "2"]);
    let origin = Some(ui.base.as_str());
    // Nothing from the browser becomes a path: unlisted adapters and bases are refused,
    // before any model starts; and like every change, a request needs the page's Origin.
    let (status, e) = generate(&ui, &json!({"adapter": "../etc", "prompt": "x"}), origin);
    assert_eq!(status, 400, "{e:?}");
    assert!(
        e[0].1["error"]
            .as_str()
            .unwrap()
            .contains("not a trained adapter"),
        "{e:?}"
    );
    let (status, _) = generate(&ui, &json!({"model": "/tmp/m", "prompt": "x"}), origin);
    assert_eq!(status, 400);
    let (status, _) = generate(&ui, &json!({"adapter": ADAPTER, "prompt": "x"}), None);
    assert_eq!(status, 403);
    assert_eq!(server_pid(&ui), None);

    // Started on demand; the adapter answers, streamed.
    let ask = json!({"adapter": ADAPTER, "prompt": PROMPT, "temperature": 0, "max_tokens": 12});
    let (status, events) = generate(&ui, &ask, origin);
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(text(&events).trim(), "walked", "{events:?}");
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    // Unused for the idle time, it stops.
    let pid = server_pid(&ui).expect("a model server after an answer");
    wait_until("the idle server to stop", Duration::from_secs(60), || {
        gone(pid)
    });
    assert_eq!(server_pid(&ui), None);
    drop(ui);

    // A run whose stage holds the mlx slot: a running server stops, none starts. (A UI
    // that does not idle out, so only the run can stop it.)
    let ui = Ui::start(&ws, &[]);
    let origin = Some(ui.base.as_str());
    let (status, _) = generate(&ui, &ask, origin);
    assert_eq!(status, 200);
    let pid = server_pid(&ui).unwrap();
    let gated = crate::ui::GATED.replace(
        "    outs: [m.json]\n",
        "    outs: [m.json]\n    resources: {mlx: 1}\n",
    );
    let rows: String = (1..=30)
        .map(|i| format!("{{\"prompt\": \"p{i}\", \"completion\": \"c{i}\"}}\n"))
        .collect();
    ws.file("gated.yaml", &gated)
        .file("data/train.jsonl", &rows);
    let mut run = crate::ui::cli_run(&ws, &[]);
    wait_until("the server to give way", Duration::from_secs(60), || {
        gone(pid)
    });
    let (status, e) = generate(&ui, &ask, origin);
    assert_eq!(status, 409, "{e:?}");
    let message = e[0].1["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("stage `work` holds the mlx slot"),
        "{message}"
    );
    let (_, st) = ui.get("/api/playground");
    assert!(st["mlx_slot"].as_str().unwrap().contains("work"), "{st}");
    for i in 1..=3 {
        ws.file(&format!("gate{i}"), "");
    }
    assert!(run.wait().unwrap().success());

    // Free again: it starts; `pipe ui` ending (SIGINT) stops it.
    let (status, _) = generate(&ui, &ask, origin);
    assert_eq!(status, 200);
    let pid = server_pid(&ui).unwrap();
    pipe_engine::process::signal(ui.child.id(), pipe_engine::process::Signal::Interrupt).unwrap();
    wait_until(
        "the server to end with pipe ui",
        Duration::from_secs(60),
        || gone(pid),
    );
}
