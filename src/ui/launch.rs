//! Pipelines, the start form, and starting and stopping runs.
//!
//! The form of a pipeline lists its params (what `--set` can change). A param that a
//! built-in stage's `with:` reads (`rank: "{{ params.train.rank }}"`) takes that option's
//! JSON Schema, from the same types `pipe schema` prints, so a new option needs no UI code;
//! other params are typed by their current value. A submitted form becomes `--set`
//! overrides, checked by the code `pipe run` uses ([`WorkspaceArgs::load`]), so a bad value
//! gets `pipe run`'s message, and then an ordinary `pipe run` starts, detached: its own
//! process group, no terminal, output to `runs/ui/<start>.log`. It never depends on this
//! server staying up.

use super::routes::{ApiError, error, load_run};
use super::{AppState, security};
use crate::cli::workspace::WorkspaceArgs;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::history::{read, record::RunStatus};
use pipe_engine::process::{self, Signal};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Folders never searched for pipelines: outputs, caches, tooling.
const SKIP: &[&str] = &["cache", "runs", "reports", "target", "node_modules", "data"];

/// `GET /api/pipelines`: the pipeline files of the workspace (YAML files with `stages:`,
/// up to three folders deep).
pub async fn pipelines(State(state): State<Arc<AppState>>) -> Response {
    let root = state.root.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let walk = walkdir::WalkDir::new(&root)
            .max_depth(3)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name().to_string_lossy();
                e.depth() == 0 || !(name.starts_with('.') || SKIP.contains(&name.as_ref()))
            });
        for entry in walk.filter_map(Result::ok) {
            let path = entry.path();
            let yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if !yaml || !entry.file_type().is_file() {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
                continue;
            };
            if doc.get("stages").is_none() {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap_or(path);
            found.push(json!({
                "file": rel.to_string_lossy(),
                "name": doc.get("name").and_then(|n| n.as_str()),
                "description": doc.get("description").and_then(|n| n.as_str()),
            }));
        }
        found
    })
    .await
    .unwrap_or_default();
    Json(json!({ "pipelines": found })).into_response()
}

/// `?file=pipelines/x.yaml`.
#[derive(Debug, Deserialize)]
pub struct FileQuery {
    /// A pipeline file, relative to the workspace.
    pub file: String,
}

/// One field of the start form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The param's dotted name (what `--set` takes).
    pub param: String,
    /// Its current value.
    pub value: Value,
    /// The JSON Schema of the option it feeds, or one made from its value's type.
    pub schema: Value,
    /// Where it is read: `stage.with.key` of built-in stages.
    pub used_by: Vec<String>,
}

/// The pipeline file `rel` names, confined to the workspace and a YAML file.
pub fn pipeline_path(state: &AppState, rel: &str) -> Result<PathBuf, ApiError> {
    let path =
        security::confine(&state.root, rel).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    if !matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{rel}` is not a pipeline file (.yaml)"),
        ));
    }
    Ok(path)
}

/// Loads the pipeline with `sets` exactly as `pipe run` does; the error is its message.
fn check(
    state: &AppState,
    file: PathBuf,
    sets: Vec<String>,
) -> Result<pipe_engine::spec::Pipeline, String> {
    let args = WorkspaceArgs {
        pipeline: file,
        root: Some(state.root.clone()),
        sets,
    };
    // Paths in messages as `pipe run` in the workspace shows them: relative to it.
    let prefix = format!("{}/", state.root.display());
    args.load()
        .map(|(p, _)| p)
        .map_err(|e| format!("{e:#}").replace(&prefix, ""))
}

/// `GET /api/pipelines/form?file=F`.
pub async fn form(State(state): State<Arc<AppState>>, Query(q): Query<FileQuery>) -> Response {
    let path = match pipeline_path(&state, &q.file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let built = tokio::task::spawn_blocking(move || {
        let pipeline = check(&state, path, Vec::new())?;
        Ok::<_, String>(fields(&pipeline))
    })
    .await;
    match built {
        Ok(Ok(fields)) => Json(json!({ "file": q.file, "fields": fields })).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The form of `pipeline`: its params, typed by the options they feed.
pub fn fields(pipeline: &pipe_engine::spec::Pipeline) -> Vec<Field> {
    let mut params = Vec::new();
    flatten("", &pipeline.params, &mut params);
    let doc: serde_yaml::Value = serde_yaml::from_str(&pipeline.source).unwrap_or_default();
    let mut uses: Vec<(String, String, Value)> = Vec::new(); // (param, where, schema)
    if let Some(stages) = doc.get("stages").and_then(|s| s.as_mapping()) {
        for (name, stage) in stages {
            let (Some(name), Some(kind)) =
                (name.as_str(), stage.get("kind").and_then(|k| k.as_str()))
            else {
                continue;
            };
            let (Some(with), Some((schema, defs))) = (stage.get("with"), with_schema(kind)) else {
                continue;
            };
            let with: Value = serde_json::to_value(with).unwrap_or_default();
            let mut found = Vec::new();
            templated(&with, &mut Vec::new(), &mut found);
            for (param, path) in found {
                let field_schema = at_path(&schema, &defs, &path).unwrap_or(Value::Null);
                uses.push((
                    param,
                    format!("{name}.with.{}", path.join(".")),
                    field_schema,
                ));
            }
        }
    }
    params
        .into_iter()
        .map(|(param, value)| {
            let mine: Vec<&(String, String, Value)> =
                uses.iter().filter(|(p, _, _)| *p == param).collect();
            let schema = mine
                .iter()
                .map(|(_, _, s)| s.clone())
                .find(|s| !s.is_null())
                .unwrap_or_else(|| schema_of_value(&value));
            Field {
                used_by: mine.iter().map(|(_, w, _)| w.clone()).collect(),
                param,
                value,
                schema,
            }
        })
        .collect()
}

/// The leaves of a params tree by dotted name (lists are leaves).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ if !prefix.is_empty() => out.push((prefix.to_owned(), v.clone())),
        _ => {}
    }
}

/// `(param, path)` of every value under `with:` that is exactly `{{ params.NAME }}`.
fn templated(v: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                templated(v, path, out);
                path.pop();
            }
        }
        Value::String(s) => {
            let inner = s
                .trim()
                .strip_prefix("{{")
                .and_then(|s| s.strip_suffix("}}"))
                .map(str::trim)
                .and_then(|s| s.strip_prefix("params."));
            if let Some(name) = inner
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                out.push((name.to_owned(), path.clone()));
            }
        }
        _ => {}
    }
}

/// The `with:` schema of kind `kind` and its definitions, as `pipe schema` makes them.
fn with_schema(kind: &str) -> Option<(Value, Map<String, Value>)> {
    let kind = pipe_engine::stages::KINDS
        .iter()
        .find(|k| k.name() == kind)?;
    let mut generator = schemars::SchemaGenerator::default();
    let schema = kind.with_schema(&mut generator).to_value();
    let defs = generator.take_definitions(true).into_iter().collect();
    Some((schema, defs))
}

/// `schema` with a `$ref` replaced by its definition and `T | null` by `T`.
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Value {
    let mut s = schema.clone();
    for _ in 0..8 {
        if let Some(name) = s
            .get("$ref")
            .and_then(|r| r.as_str())
            .and_then(|r| r.rsplit('/').next())
        {
            let mut d = defs.get(name).cloned().unwrap_or(Value::Null);
            if let (Some(obj), Some(desc)) = (d.as_object_mut(), s.get("description")) {
                obj.entry("description").or_insert(desc.clone());
            }
            s = d;
            continue;
        }
        let branches = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(|b| b.as_array());
        if let Some(b) = branches {
            let non_null: Vec<&Value> = b.iter().filter(|x| x["type"] != "null").collect();
            if non_null.len() == 1 && non_null.len() < b.len() {
                let mut inner = non_null[0].clone();
                if let (Some(obj), Some(desc)) = (inner.as_object_mut(), s.get("description")) {
                    obj.entry("description").or_insert(desc.clone());
                }
                s = inner;
                continue;
            }
        }
        if let Some(types) = s.get("type").and_then(|t| t.as_array()).cloned() {
            let non_null: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
            if non_null.len() == 1 {
                s["type"] = non_null[0].clone();
            }
        }
        break;
    }
    s
}

/// The schema of the option at `path` under a `with:` schema.
fn at_path(schema: &Value, defs: &Map<String, Value>, path: &[String]) -> Option<Value> {
    let mut s = resolve(schema, defs);
    for key in path {
        s = resolve(s.get("properties")?.get(key)?, defs);
    }
    Some(s)
}

/// A schema from a value's JSON type, for params no built-in option reads.
fn schema_of_value(v: &Value) -> Value {
    let t = match v {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        _ => "string",
    };
    json!({ "type": t })
}

/// `POST /api/runs` body.
#[derive(Debug, Deserialize)]
pub struct StartRequest {
    /// The pipeline file, relative to the workspace.
    pub pipeline: String,
    /// Params to override: dotted name -> the value as YAML text (as `--set` takes it).
    #[serde(default)]
    pub sets: std::collections::BTreeMap<String, String>,
}

/// `POST /api/runs`: checks the form as `pipe run` would, then starts it detached and
/// answers with the new run's id once its record exists (or with the process id while it
/// waits for another run in the workspace to finish).
pub async fn start(State(state): State<Arc<AppState>>, Json(req): Json<StartRequest>) -> Response {
    let path = match pipeline_path(&state, &req.pipeline) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut sets = Vec::new();
    for (k, v) in &req.sets {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("`{k}` is not a param name"),
            );
        }
        sets.push(format!("{k}={v}"));
    }
    let s = state.clone();
    let launched = tokio::task::spawn_blocking(move || {
        check(&s, path.clone(), sets.clone()).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        spawn_run(&s, &path, &sets).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await;
    let (pid, exited, log) = match launched {
        Ok(Ok(started)) => started,
        Ok(Err((status, e))) => return error(status, &e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    // The run's record appears once `pipe run` holds the workspace lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let root = state.root.clone();
        let found = tokio::task::spawn_blocking(move || {
            read::ids(&root)
                .into_iter()
                .take(20)
                .filter_map(|id| read::load(&root, &id).ok())
                .find(|r| r.pid == pid)
                .map(|r| r.id)
        })
        .await
        .ok()
        .flatten();
        if let Some(id) = found {
            return Json(json!({ "run": id, "pid": pid })).into_response();
        }
        if exited.lock().map(|e| e.is_some()).unwrap_or(false) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("pipe run exited before starting: {}", text.trim()),
            );
        }
        if Instant::now() > deadline {
            return Json(json!({
                "run": null, "pid": pid,
                "waiting": "pipe run is waiting for another run in this workspace to finish"
            }))
            .into_response();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Exit = Arc<Mutex<Option<std::process::ExitStatus>>>;

/// Starts `pipe run FILE --root ROOT --set ... --quiet` detached; a thread reaps it.
fn spawn_run(
    state: &AppState,
    file: &std::path::Path,
    sets: &[String],
) -> Result<(u32, Exit, PathBuf), String> {
    let logs = state.root.join("runs").join("ui");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log = logs.join(format!(
        "{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(&state.pipe_exe);
    command
        .arg("run")
        .arg(file.strip_prefix(&state.root).unwrap_or(file))
        .arg("--root")
        .arg(&state.root)
        .arg("--quiet")
        .current_dir(&state.root)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    for s in sets {
        command.arg("--set").arg(s);
    }
    #[cfg(unix)]
    {
        // Its own process group: Ctrl-C on `pipe ui` (or its end) does not reach the run.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", state.pipe_exe.display()))?;
    let pid = child.id();
    let exit: Exit = Arc::new(Mutex::new(None));
    let seen = exit.clone();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && let Ok(mut e) = seen.lock()
        {
            *e = Some(status);
        }
    });
    Ok((pid, exit, log))
}

/// `POST /api/runs/{id}/stop`: SIGINT to the run's `pipe run`, as Ctrl-C would; the run
/// then stops its stages, removes their partial outs and ends `interrupted`.
pub async fn stop(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let record = match load_run(&state, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let status = record.effective_status();
    if status != RunStatus::Running {
        return error(
            StatusCode::CONFLICT,
            &format!("run {id} is not running (it {})", status.as_str()),
        );
    }
    if !is_pipe_run(record.pid) {
        return error(
            StatusCode::CONFLICT,
            &format!("process {} is no longer this run's `pipe run`", record.pid),
        );
    }
    match process::signal(record.pid, Signal::Interrupt) {
        Ok(()) => Json(json!({ "stopping": id })).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot interrupt process {}: {e}", record.pid),
        ),
    }
}

/// Whether `pid` is still a `pipe run` (its id may have been reused since the record was
/// written). Checked where the system says; elsewhere the record's word is taken.
fn is_pipe_run(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let exe_is_pipe = args.first().is_some_and(|a| {
            std::path::Path::new(std::ffi::OsStr::new(&*String::from_utf8_lossy(a)))
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pipe"))
        });
        exe_is_pipe && args.iter().any(|a| *a == b"run")
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        true
    }
}
