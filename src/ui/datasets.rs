//! Dataset uploads: the body of `POST /api/datasets?name=N` is stored as
//! `data/uploads/<N>` (a plain file name, checked; the folder is the workspace's), then read
//! by the ingest stage's own reader, so every bad row is reported as `pipe run` would
//! report it, by line. A file with bad rows is not kept. Statistics are the ingest stage's:
//! examples per format and a length histogram in characters.
//!
//! Token counts need the model's tokenizer, which lives with MLX in `pipe-mlx`:
//! `POST /api/datasets/tokens` runs `pipe tokens --json` on an upload, with a known model
//! (never a path from the browser), for the counts, lengths against `max_seq_len` and the
//! first examples rendered through the model's chat template.

use super::AppState;
use super::routes::error;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::data::{DatasetStats, ErrorPolicy, ReadOptions, read_examples};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// Where uploads go, relative to the workspace.
pub const DIR: &str = "data/uploads";

/// Bad rows listed at most in one answer.
const MAX_ERRORS: usize = 50;

/// `?name=train.jsonl`.
#[derive(Debug, Deserialize)]
pub struct NameQuery {
    /// The file name the browser gave.
    pub name: String,
}

/// `name` if it is a plain file name with an extension the readers take; the browser's
/// name is never trusted as a path.
pub fn safe_name(name: &str) -> Result<String, String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "`{name}` is not a plain file name (letters, digits, `.`, `-`, `_`)"
        ));
    }
    if !matches!(ext.as_deref(), Some("jsonl" | "json" | "csv" | "tsv")) {
        return Err(format!(
            "`{name}`: unsupported file type (expected .jsonl, .json, .csv or .tsv)"
        ));
    }
    Ok(name.to_owned())
}

/// `POST /api/datasets?name=N`.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Query(q): Query<NameQuery>,
    body: Bytes,
) -> Response {
    let name = match safe_name(&q.name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let checked = tokio::task::spawn_blocking(move || check(&state.root, &name, &body)).await;
    match checked {
        Ok(Ok((true, v))) => Json(v).into_response(),
        Ok(Ok((false, v))) => (StatusCode::UNPROCESSABLE_ENTITY, Json(v)).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /api/datasets/tokens` body.
#[derive(Debug, Deserialize)]
pub struct TokensRequest {
    /// An uploaded dataset's file name.
    pub name: String,
    /// A known model id (`pipe model list`).
    pub model: String,
    /// The training's sequence length.
    #[serde(default)]
    pub max_seq_len: Option<usize>,
}

/// `POST /api/datasets/tokens`: `pipe tokens --json` of an upload.
pub async fn tokens(
    State(state): State<Arc<AppState>>,
    Json(req): Json<TokensRequest>,
) -> Response {
    let name = match safe_name(&req.name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let path = state.root.join(DIR).join(&name);
    if !path.is_file() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no uploaded dataset `{name}`"),
        );
    }
    let Some(model) = pipe_engine::fetch::find(&req.model) else {
        let known: Vec<&str> = pipe_engine::fetch::KNOWN_MODELS
            .iter()
            .map(|m| m.id)
            .collect();
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "`{}` is not a known model (known: {})",
                req.model,
                known.join(", ")
            ),
        );
    };
    let max_seq_len = req.max_seq_len.unwrap_or(2048).to_string();
    let root = state.root.clone();
    let ran = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe()?)
            .args(["tokens", "--json", "--preview", "3", "--model", model.id])
            .args(["--max-seq-len", &max_seq_len])
            .arg(&path)
            .current_dir(root)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await;
    match ran {
        Ok(Ok(out)) if out.status.success() => {
            match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                Ok(v) => Json(v).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Ok(Ok(out)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            String::from_utf8_lossy(&out.stderr).trim(),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Stores and validates one upload: `(valid, answer)`.
fn check(
    root: &std::path::Path,
    name: &str,
    body: &[u8],
) -> Result<(bool, serde_json::Value), String> {
    let rel = format!("{DIR}/{name}");
    let path: PathBuf = root.join(&rel);
    pipe_engine::atomic_write::write_atomic(&path, body)
        .map_err(|e| format!("cannot store {}: {e}", path.display()))?;
    let options = ReadOptions {
        on_error: ErrorPolicy::Skip,
        ..ReadOptions::default()
    };
    let (good, bad) = match read_examples(&path, &options) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Ok((false, json!({ "file": rel, "errors": [e.to_string()] })));
        }
    };
    let errors: Vec<String> = bad
        .iter()
        .take(MAX_ERRORS)
        .map(|e| format!("{rel}:{}: {}", e.line, e.kind))
        .collect();
    let examples: Vec<_> = good.iter().map(|(_, e)| e).collect();
    let stats = DatasetStats::of(examples.iter().copied());
    let valid = bad.is_empty() && !good.is_empty();
    if !valid {
        let _ = std::fs::remove_file(&path);
    }
    let mut errors = errors;
    if good.is_empty() && bad.is_empty() {
        errors.push(format!("{rel}: no examples"));
    }
    Ok((
        valid,
        json!({
            "file": rel,
            "kept": valid,
            "errors": errors,
            "bad_rows": bad.len(),
            "stats": stats,
            "preview": examples.iter().take(5).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /api/datasets`: the uploaded files and their sizes.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let dir = state.root.join(DIR);
    let mut files: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| {
                json!({"file": format!("{DIR}/{name}"), "bytes": e.metadata().map_or(0, |m| m.len())})
            })
        })
        .collect();
    files.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
    let models: Vec<&str> = pipe_engine::fetch::KNOWN_MODELS
        .iter()
        .map(|m| m.id)
        .collect();
    Json(json!({ "datasets": files, "models": models })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_files_of_known_types() {
        assert_eq!(safe_name("train-1.jsonl").unwrap(), "train-1.jsonl");
        assert!(safe_name("a.CSV").is_ok());
        for bad in [
            "../x.jsonl",
            "a/b.jsonl",
            ".hidden.jsonl",
            "x.exe",
            "",
            "a b.jsonl",
        ] {
            assert!(safe_name(bad).is_err(), "{bad}");
        }
    }
}
