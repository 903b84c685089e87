//! The playground: one prompt answered by a base model and by a trained adapter side by
//! side, tokens shown as they are generated.
//!
//! The answers come from `pipe serve` ([`server`]), the same server users deploy,
//! started on demand and asked through its OpenAI route with `stream: true`. The browser
//! never talks to it: `POST /api/playground/generate` (behind the UI's token and Origin
//! checks like every other change) relays its chunks as server-sent events in the
//! response body, so the model server stays on a loopback port no page can reach, and a
//! browser that goes away closes the relay, which closes the server's stream and frees its
//! row. Requests name an adapter by its folder as the run history lists it ([`models`]) and
//! a base only as a known model id or the base of such an adapter: nothing from the
//! browser becomes a path or a command.
//!
//! While a run's stage holds the `mlx` slot ([`slot`]), no model is started and a running
//! one is stopped.
//!
//! [`models`]: super::models

pub mod server;
pub mod slot;

use super::AppState;
use super::models;
use super::routes::{ApiError, error};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use server::Running;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The playground's state: the model server, if one runs, and what keeps it.
#[derive(Debug)]
pub struct Playground {
    server: tokio::sync::Mutex<Option<Running>>,
    /// When the last answer ended.
    last_used: Mutex<Instant>,
    /// Answers streaming now (the server is not idle while one does).
    active: AtomicUsize,
    /// Unused this long, the server stops.
    idle: Duration,
}

impl Playground {
    /// No server yet; one unused for `idle` stops.
    pub fn new(idle: Duration) -> Self {
        Self {
            server: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            active: AtomicUsize::new(0),
            idle,
        }
    }

    /// Stops the server, if one runs (on `pipe ui`'s exit, idle, or a training).
    pub async fn stop(&self) {
        let taken = self.server.lock().await.take();
        if let Some(running) = taken {
            let _ = tokio::task::spawn_blocking(move || running.stop()).await;
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }
}

/// Checks every second whether the server should stop: unused for the idle time, or a
/// run's stage took the `mlx` slot. Runs for the life of `pipe ui`.
pub async fn watch(state: Arc<AppState>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pg = &state.playground;
        let running = pg.server.lock().await.as_ref().is_some_and(Running::alive);
        if !running {
            continue;
        }
        let idle = pg.active.load(Ordering::SeqCst) == 0
            && pg.last_used.lock().is_ok_and(|t| t.elapsed() >= pg.idle);
        let root = state.root.clone();
        let taken = tokio::task::spawn_blocking(move || slot::holder(&root))
            .await
            .ok()
            .flatten();
        if idle || taken.is_some() {
            pg.stop().await;
        }
    }
}

/// `GET /api/playground`: the server's state and whether the `mlx` slot is free.
pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let root = state.root.clone();
    let taken = tokio::task::spawn_blocking(move || slot::holder(&root))
        .await
        .ok()
        .flatten();
    let server = state.playground.server.lock().await;
    let server = server
        .as_ref()
        .filter(|r| r.alive())
        .map(|r| json!({"model": r.model, "adapters": r.adapters, "pid": r.pid}));
    Json(json!({
        "server": server,
        "mlx_slot": taken,
        "idle_seconds": state.playground.idle.as_secs(),
    }))
    .into_response()
}

/// The body of `POST /api/playground/generate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// The adapter's folder, as `GET /api/models` lists it; `None`: the base alone.
    #[serde(default)]
    pub adapter: Option<String>,
    /// The base model, without an adapter: a known model id or an adapter's base.
    #[serde(default)]
    pub model: Option<String>,
    /// The user message (it goes through the model's chat template).
    pub prompt: String,
    /// An optional system message.
    #[serde(default)]
    pub system: Option<String>,
    /// Sampling: 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Tokens to generate at most.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Makes sampling repeatable.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// What a request resolves to: the base to hold and the `model` to ask for.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    base: String,
    /// `(serve name, absolute folder)` of the adapter, if any.
    adapter: Option<(String, std::path::PathBuf)>,
}

/// Checks a request against the history: adapters must be listed, bases known.
fn resolve(root: &std::path::Path, req: &Generate) -> Result<Target, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if req.prompt.trim().is_empty() {
        return Err(bad("write a prompt first".into()));
    }
    if let Some(path) = &req.adapter {
        let found = models::find(root, path).ok_or_else(|| {
            bad(format!(
                "`{path}` is not a trained adapter of this workspace's runs (see the Models page)"
            ))
        })?;
        let base = found.base_model.clone().ok_or_else(|| {
            bad(format!(
                "run {} did not record the base model of `{path}`",
                found.run
            ))
        })?;
        // The folder's content version is in the name, so a retrained folder loads anew.
        let version = found
            .fingerprint
            .as_deref()
            .unwrap_or(&found.run)
            .chars()
            .take(12)
            .collect::<String>();
        let name = format!("{}-{version}", found.stage)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return Ok(Target {
            base,
            adapter: Some((name, root.join(&found.path))),
        });
    }
    let model = req
        .model
        .clone()
        .ok_or_else(|| bad("pick an adapter or a base model".into()))?;
    let known = pipe_engine::fetch::find(&model).is_some()
        || models::adapters(root)
            .iter()
            .any(|a| a.base_model.as_deref() == Some(model.as_str()));
    if !known {
        return Err(bad(format!(
            "`{model}` is neither a known model id nor the base of a trained adapter here"
        )));
    }
    Ok(Target {
        base: model,
        adapter: None,
    })
}

/// Makes sure the server holds `target`'s base and adapter; answers its URL.
async fn ensure(state: &AppState, target: &Target) -> Result<String, ApiError> {
    let conflict = |m: String| ApiError(StatusCode::CONFLICT, m);
    let root = state.root.clone();
    let taken = tokio::task::spawn_blocking(move || slot::holder(&root))
        .await
        .ok()
        .flatten();
    if let Some(holder) = taken {
        state.playground.stop().await;
        return Err(conflict(format!(
            "the accelerator is busy: {holder} holds the mlx slot; the playground starts a \
             model when it ends (a second model would skew the training's speed and memory)"
        )));
    }
    let mut guard = state.playground.server.lock().await;
    let reuse = guard
        .as_ref()
        .is_some_and(|r| r.alive() && r.model == target.base);
    if !reuse {
        if let Some(old) = guard.take() {
            let _ = tokio::task::spawn_blocking(move || old.stop()).await;
        }
        let (exe, root, base) = (
            state.pipe_exe.clone(),
            state.root.clone(),
            target.base.clone(),
        );
        let started = tokio::task::spawn_blocking(move || server::start(&exe, &root, &base))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?;
        *guard = Some(started);
    }
    let running = guard.as_mut().expect("set above");
    if let Some((name, dir)) = &target.adapter
        && !running.adapters.contains(name)
    {
        let url = format!("{}/admin/adapters", running.url);
        let body = json!({"name": name, "path": dir}).to_string();
        let answer = tokio::task::spawn_blocking(move || post_json(&url, &body))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        match answer {
            Ok(_) => {
                running.adapters.insert(name.clone());
            }
            // Loaded by an earlier request that lost its answer: fine.
            Err((409, _)) => {
                running.adapters.insert(name.clone());
            }
            Err((_, message)) => {
                return Err(ApiError(
                    StatusCode::BAD_GATEWAY,
                    format!("pipe serve cannot load {}: {message}", dir.display()),
                ));
            }
        }
    }
    Ok(running.url.clone())
}

/// POSTs JSON; `Err((status, message))` on an error answer (0: no answer).
fn post_json(url: &str, body: &str) -> Result<Value, (u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        let message = value["error"]["message"]
            .as_str()
            .or(value["error"].as_str())
            .map_or(text.clone(), str::to_owned);
        return Err((status, message));
    }
    Ok(value)
}

/// `POST /api/playground/generate`: the answer as server-sent events in the response:
/// `delta` (`{"text"}`) per piece of text, then `done` (`{"finish_reason", "usage"}`), or
/// `error` (`{"error"}`).
pub async fn generate(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let req: Generate = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    let root = state.root.clone();
    let r = req.clone();
    let target = match tokio::task::spawn_blocking(move || resolve(&root, &r)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let url = match ensure(&state, &target).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let mut messages = Vec::new();
    if let Some(system) = req.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": req.prompt}));
    let mut chat = json!({
        "model": target.adapter.as_ref().map_or("base", |(n, _)| n.as_str()),
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    for (key, value) in [
        ("temperature", req.temperature.map(|v| json!(v))),
        ("top_p", req.top_p.map(|v| json!(v))),
        ("max_tokens", req.max_tokens.map(|v| json!(v))),
        ("seed", req.seed.map(|v| json!(v))),
    ] {
        if let Some(v) = value {
            chat[key] = v;
        }
    }
    state.playground.active.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let relay_state = state.clone();
    tokio::task::spawn_blocking(move || {
        relay(
            &format!("{url}/v1/chat/completions"),
            &chat.to_string(),
            &tx,
        );
        relay_state.playground.touch();
        relay_state.playground.active.fetch_sub(1, Ordering::SeqCst);
    });
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Reads the server's stream and sends it on as `delta`/`done`/`error` events; stops as
/// soon as the browser is gone (the send fails), which drops the server's connection.
fn relay(url: &str, body: &str, tx: &tokio::sync::mpsc::Sender<SseEvent>) {
    let send = |name: &str, data: Value| {
        tx.blocking_send(SseEvent::default().event(name).data(data.to_string()))
            .is_ok()
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body);
    let mut response = match response {
        Ok(r) => r,
        Err(e) => {
            send("error", json!({"error": format!("pipe serve: {e}")}));
            return;
        }
    };
    if response.status().as_u16() >= 400 {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .map_or(text.clone(), str::to_owned);
        send("error", json!({"error": message}));
        return;
    }
    let reader = BufReader::new(response.into_body().into_reader());
    let mut finish: Option<Value> = None;
    let mut done = false;
    for line in reader.lines() {
        let Ok(line) = line else {
            send(
                "error",
                json!({"error": "pipe serve closed the stream early"}),
            );
            return;
        };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str()
            && !text.is_empty()
            && !send("delta", json!({ "text": text }))
        {
            return;
        }
        if !choice["finish_reason"].is_null() {
            finish = Some(choice["finish_reason"].clone());
        }
        if !chunk["usage"].is_null() {
            done = true;
            let end = json!({"finish_reason": finish.clone(), "usage": chunk["usage"]});
            if !send("done", end) {
                return;
            }
        }
    }
    if !done {
        send("done", json!({"finish_reason": finish, "usage": null}));
    }
}
