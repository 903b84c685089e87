//! The `deploy` stage against a real `pipe serve` process and the official `openai` client:
//! the quickstart pipeline, with a deploy stage after its compare stage, puts the trained
//! adapter behind the public name `assistant` on a running server; a run with nothing
//! changed checks the server again (and repairs a route a restarted server lost); a second
//! adapter is swapped in while a client loop asks without a failed request; and in config
//! mode the serving file starts a server that answers the same way.

use crate::serve::{Server, openai_python};
use crate::support::Ws;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const PIPELINE: &str = "pipelines/deploy.yaml";
const OUT: &str = "runs/quickstart/deploy";
/// The quickstart's adapter, trained as in the serve tests (enough to answer "walked").
const ADAPTER_A: [&str; 6] = [
    "--set",
    "train.iters=30",
    "--set",
    "train.lr=1e-3",
    "--set",
    "eval.examples=4",
];
/// A different adapter: fewer steps.
const ADAPTER_B: [&str; 6] = [
    "--set",
    "train.iters=20",
    "--set",
    "train.lr=1e-3",
    "--set",
    "eval.examples=4",
];

/// One workspace for the module's tests, one test at a time: they share its trainings.
fn workspace() -> MutexGuard<'static, Ws> {
    static WS: OnceLock<Mutex<Ws>> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = Ws::new();
        let quickstart = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/quickstart.yaml"
        ))
        .unwrap();
        // The shipped quickstart, a deploy stage after its compare stage, and params that
        // pick the deploy's mode and server.
        let yaml = quickstart.replacen(
            "params:\n",
            "params:\n  deploy: {mode: config, server: \"http://127.0.0.1:9\"}\n",
            1,
        ) + &format!(
            "
  deploy:
    kind: deploy
    params: [deploy.mode, deploy.server]
    with:
      compare: \"{{{{ vars.dir }}}}/compare\"
      model: assistant
      mode: \"{{{{ params.deploy.mode }}}}\"
      server: \"{{{{ params.deploy.server }}}}\"
      out: {OUT}
"
        );
        ws.file(PIPELINE, &yaml);
        Mutex::new(ws)
    })
    .lock()
    .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `pipe run` of the pipeline with `settings` and the deploy's mode and server.
fn run(ws: &Ws, settings: &[&str], mode: &str, server: &str) -> crate::support::Run {
    let r = run_env(ws, settings, mode, server, &[]);
    assert_eq!(r.code, 0, "pipe run failed: {}\n{:#?}", r.stderr, r.events);
    r
}

/// [`run`] with `env` added, successful or not.
fn run_env(
    ws: &Ws,
    settings: &[&str],
    mode: &str,
    server: &str,
    env: &[(&str, &str)],
) -> crate::support::Run {
    let mode = format!("deploy.mode={mode}");
    let server = format!("deploy.server={server}");
    let mut args = vec![PIPELINE];
    args.extend(settings);
    args.extend(["--set", &mode, "--set", &server]);
    ws.run_env(&args, env)
}

/// What the deploy stage of `run` wrote to its log.
fn deploy_log(ws: &Ws, run: &crate::support::Run) -> String {
    let log = run.event("stage-start", "deploy")["log"].as_str().unwrap();
    std::fs::read_to_string(ws.dir.path().join(log)).unwrap()
}

/// What the last deploy wrote in `deploy.json`.
fn deployed(ws: &Ws) -> serde_json::Value {
    serde_json::from_str(&ws.read(&format!("{OUT}/deploy.json"))).unwrap()
}

fn version(ws: &Ws) -> String {
    deployed(ws)["version"].as_str().unwrap().to_owned()
}

fn client(args: &[&str]) -> std::process::Output {
    client_with_key(args, None)
}

/// The client script, sending `api_key` when given.
fn client_with_key(args: &[&str], api_key: Option<&str>) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/deploy_client.py");
    let mut command = Command::new(openai_python());
    command.arg(script).args(args).env_remove("PIPE_API_KEY");
    if let Some(key) = api_key {
        command.env("PIPE_API_KEY", key);
    }
    command.output().unwrap()
}

/// `assistant` on the server at `url` is answered by `version`.
fn assert_answers(url: &str, version: &str) {
    assert_answers_with_key(url, version, None);
}

/// [`assert_answers`] on a server that wants `api_key`.
fn assert_answers_with_key(url: &str, version: &str, api_key: Option<&str>) {
    let out = client_with_key(&["answers", url, "assistant", version], api_key);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain `pipe serve` (the base only) in the workspace.
fn serve(ws: &Ws, extra: &[&str]) -> Server {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    command
        .current_dir(ws.dir.path())
        .args(["serve", "--port", "0"])
        .args(extra);
    Server::spawn(command)
}

/// Waits for `path` to exist, failing after `limit`.
fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deploy_config_mode_writes_the_file_pipe_serve_starts_from() {
    let ws = workspace();
    let first = run(&ws, &ADAPTER_A, "config", "http://127.0.0.1:9");
    assert!(first.ran().contains("deploy"));
    let version = version(&ws);
    assert!(version.starts_with("assistant-"), "{version}");
    assert_eq!(deployed(&ws)["deployed_to"], "file");
    let serve_yaml = ws.read(&format!("{OUT}/serve.yaml"));
    assert!(serve_yaml.contains(&version), "{serve_yaml}");
    assert!(ws.exists(&format!("{OUT}/adapters/{version}/adapters.safetensors")));

    let server = serve(&ws, &["--config", &format!("{OUT}/serve.yaml")]);
    assert_answers(&server.url, &version);
}

#[test]
fn deploy_routes_a_running_server_and_swaps_without_a_failed_request() {
    let ws = workspace();
    let server = serve(&ws, &[]);
    run(&ws, &ADAPTER_A, "server", &server.url);
    let a = version(&ws);
    assert_eq!(deployed(&ws)["deployed_to"], "server");
    assert_answers(&server.url, &a);

    // Nothing changed, yet the deploy runs: the server is checked, and left as it is.
    let again = run(&ws, &ADAPTER_A, "server", &server.url);
    assert!(again.ran().contains("deploy"), "{:?}", again.ran());
    assert_eq!(again.ran().len(), 1, "{:?}", again.ran());
    assert_eq!(deployed(&ws)["previous"], a.as_str());

    // A restarted server has lost the route: the same run puts it back.
    drop(server);
    let server = serve(&ws, &[]);
    run(&ws, &ADAPTER_A, "server", &server.url);
    assert_answers(&server.url, &a);

    // A second adapter, trained and compared with the deploy writing only its file; then
    // deployed to the server while a client asks all the time.
    run(&ws, &ADAPTER_B, "config", &server.url);
    let b = version(&ws);
    assert_ne!(a, b);
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/deploy_client.py");
    let looping = Command::new(openai_python())
        .arg(script)
        .args(["loop", &server.url, "assistant"])
        .arg(&ready)
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready, Duration::from_secs(300));
    let swap = run(&ws, &ADAPTER_B, "server", &server.url);
    assert_eq!(swap.ran().len(), 1, "{:?}", swap.ran());
    assert_eq!(deployed(&ws)["previous"], a.as_str());
    // The loop ends once B has answered it.
    let out = looping.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    let models: Vec<&str> = seen["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // Every answer came from A until the swap, and from B after it.
    let swapped_at = models.iter().position(|m| *m == b).unwrap_or(models.len());
    assert!(0 < swapped_at && swapped_at < models.len(), "{models:?}");
    assert!(
        models[..swapped_at].iter().all(|m| *m == a)
            && models[swapped_at..].iter().all(|m| *m == b),
        "{models:?}"
    );
    assert_answers(&server.url, &b);

    // The version the route left stays loaded (a rollback is a route change).
    let listed = client(&["adapters", &server.url]);
    let listed: Vec<String> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.contains(&a) && listed.contains(&b), "{listed:?}");

    // An adapter the server cannot load fails the stage and leaves the route alone.
    ws.file(
        "broken/adapter_config.json",
        r#"{"fine_tune_type": "lora"}"#,
    );
    ws.file("broken/adapters.safetensors", "not safetensors");
    ws.file(
        "pipelines/broken.yaml",
        &format!(
            "name: broken\nstages:\n  deploy:\n    kind: deploy\n    with: {{adapter: broken, \
             model: assistant, mode: server, server: \"{}\", out: runs/broken}}\n",
            server.url
        ),
    );
    let failed = ws.run(&["pipelines/broken.yaml"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let log = failed.event("stage-failed", "deploy")["log"]
        .as_str()
        .unwrap();
    let log = std::fs::read_to_string(ws.dir.path().join(log)).unwrap();
    let still = format!("`assistant` still answers with {b}");
    assert!(
        log.contains("cannot load adapter") && log.contains(&still),
        "{log}"
    );
    assert_answers(&server.url, &b);
}

#[test]
fn deploy_sends_the_api_key_falls_back_to_the_file_and_refuses_another_base() {
    let ws = workspace();
    // `auto` with nothing listening: the serving file only, and the log says why.
    let alone = run(&ws, &ADAPTER_A, "auto", "http://127.0.0.1:9");
    assert_eq!(deployed(&ws)["deployed_to"], "file");
    let log = deploy_log(&ws, &alone);
    assert!(
        log.contains("no pipe serve answers at http://127.0.0.1:9")
            && log.contains("wrote the serving file instead"),
        "{log}"
    );
    let a = version(&ws);
    let adapter_config = ws.read(&format!("{OUT}/adapters/{a}/adapter_config.json"));
    assert!(
        adapter_config.contains("\"base_model\""),
        "{adapter_config}"
    );

    // A server that wants an API key: `auto` does not hide a refusal behind the file,
    // and the message says which variable to set.
    let key = "deploy-test-key";
    let guarded = serve(&ws, &["--api-key", key]);
    let refused = run_env(&ws, &ADAPTER_A, "auto", &guarded.url, &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let log = deploy_log(&ws, &refused);
    assert!(
        log.contains("(401)") && log.contains("set PIPE_API_KEY"),
        "{log}"
    );
    let sent = run_env(
        &ws,
        &ADAPTER_A,
        "auto",
        &guarded.url,
        &[("PIPE_API_KEY", key)],
    );
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(deployed(&ws)["deployed_to"], "server");
    assert_answers_with_key(&guarded.url, &a, Some(key));
    drop(guarded);

    // A server whose base is not the one the adapter was trained on (here: the base with
    // this very adapter already fused in) refuses it, and the route stays as it was.
    let fused = ws.dir.path().join("fused-a.gguf");
    let export = ws
        .pipe()
        .args([
            "export",
            "gguf",
            "--adapter",
            "runs/quickstart/lora",
            "--type",
            "f16",
            "--out",
        ])
        .arg(&fused)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let other = serve(&ws, &["--model", fused.to_str().unwrap()]);
    let wrong = run_env(&ws, &ADAPTER_A, "server", &other.url, &[]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    let log = deploy_log(&ws, &wrong);
    assert!(
        log.contains("was trained on `smollm2-135m-instruct`")
            && log.contains("`assistant` is still not served"),
        "{log}"
    );
    let listed = client(&["adapters", &other.url]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "[]",
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
