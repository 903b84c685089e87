//! Batch inference over a file in the OpenAI Batch format (`pipe generate --batch`).
//!
//! Input: one JSON object per line, `{"custom_id", "method": "POST", "url":
//! "/v1/chat/completions" | "/v1/completions", "body": {...}}`. Output: one line per
//! request, `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
//! "error": null}`, in completion order (as OpenAI's). A request the server would refuse
//! gets its error body with the HTTP status it would have had.
//!
//! Rows go through the serving engine ([`super::start`]): the same checks, the same
//! continuous batch, so the file is decoded many rows at a time and a row's answer is the
//! one `pipe serve` gives. Each result is appended as one line and flushed; a rerun skips
//! the `custom_id`s the output already holds (resumable), after cutting a last line a
//! crash left half-written.

use super::api::{ChatRequest, CompletionRequest};
use super::errors::ApiError;
use super::requests::{Collected, Prepared};
use super::state::AppState;
use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// One input line: a request.
#[derive(Debug, Deserialize)]
pub struct InputLine {
    custom_id: String,
    #[serde(default = "post")]
    method: String,
    url: String,
    body: Value,
}

impl InputLine {
    /// Points the request at `model` (a `predict` stage serves one model or adapter).
    pub fn set_model(&mut self, model: &str) {
        if let Some(body) = self.body.as_object_mut() {
            body.insert("model".into(), Value::from(model));
        }
    }
}

fn post() -> String {
    "POST".into()
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BatchSummary {
    /// Requests in the input.
    pub total: usize,
    /// Already in the output from an earlier run.
    pub skipped: usize,
    /// Answered now with status 200.
    pub succeeded: usize,
    /// Answered now with an error body.
    pub failed: usize,
    /// Tokens generated now.
    pub completion_tokens: usize,
}

/// The ids already answered in `output`, after truncating a partial last line.
fn answered(output: &Path) -> anyhow::Result<HashSet<String>> {
    let text = match fs_err::read_to_string(output) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e.into()),
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        // A crash mid-line: drop the fragment so appended lines stay valid JSON Lines.
        let f = fs_err::OpenOptions::new().write(true).open(output)?;
        f.file().set_len(complete as u64)?;
    }
    let mut ids = HashSet::new();
    for (n, line) in text[..complete].lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a batch output line; move the file away to start over",
                output.display(),
                n + 1
            )
        })?;
        if let Some(id) = v["custom_id"].as_str() {
            ids.insert(id.to_owned());
        }
    }
    Ok(ids)
}

/// A bad input file (a usage error: the message names the file and line).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(String);

/// Reads and checks the input: every line parses, ids are unique, routes are known.
pub fn read_input(input: &Path) -> Result<Vec<InputLine>, InputError> {
    let text = fs_err::read_to_string(input).map_err(|e| InputError(e.to_string()))?;
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", input.display(), n + 1);
        let bad = |msg: String| Err(InputError(format!("{at}: {msg}")));
        let row: InputLine = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                return bad(format!(
                    "not a batch request ({e}); expected {{\"custom_id\", \"method\", \"url\", \"body\"}}"
                ));
            }
        };
        if row.method != "POST" {
            return bad(format!(
                "method `{}` is not supported; use POST",
                row.method
            ));
        }
        if !matches!(row.url.as_str(), "/v1/chat/completions" | "/v1/completions") {
            return bad(format!(
                "url `{}` is not supported; use /v1/chat/completions or /v1/completions",
                row.url
            ));
        }
        if row.body.get("stream").and_then(Value::as_bool) == Some(true) {
            return bad("`stream` cannot be used in a batch; remove it".into());
        }
        if !seen.insert(row.custom_id.clone()) {
            return bad(format!(
                "custom_id `{}` appears twice; ids must be unique",
                row.custom_id
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn prepare(state: &AppState, row: &InputLine) -> Result<Prepared, ApiError> {
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("the body is not valid: {e}"));
    if row.url == "/v1/chat/completions" {
        let req: ChatRequest = serde_json::from_value(row.body.clone()).map_err(bad)?;
        state.prepare_chat(req)
    } else {
        let req: CompletionRequest = serde_json::from_value(row.body.clone()).map_err(bad)?;
        state.prepare_completion(req)
    }
}

/// Answers every request of `rows` (from [`read_input`]) not yet in `output`, appending
/// results; `progress` gets `(done, total)` after each.
pub fn run(
    state: Arc<AppState>,
    rows: Vec<InputLine>,
    output: &Path,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<BatchSummary> {
    let done = answered(output)?;
    let todo: Vec<InputLine> = rows
        .into_iter()
        .filter(|r| !done.contains(&r.custom_id))
        .collect();
    let mut summary = BatchSummary {
        total: todo.len() + done.len(),
        skipped: done.len(),
        ..BatchSummary::default()
    };
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    let mut out = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)?;
    progress(summary.skipped, summary.total);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the batch runtime")?;
    // Keep the engine's rows and queue full, no more (requests beyond it would get 429).
    let window = state.capacity;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = todo.into_iter();
        loop {
            while tasks.len() < window {
                let Some(row) = next.next() else { break };
                let submitted = prepare(&state, &row).and_then(|p| Ok((state.submit(&p)?, p)));
                let id = state.next_id(row.url.ends_with("chat/completions"));
                let request_id = id.clone();
                tasks.spawn(async move {
                    let result = match submitted {
                        Err(e) => Err(e),
                        Ok((mut rx, p)) => {
                            let mut all = Collected::default();
                            while let Some(event) = rx.recv().await {
                                if all.add(event) {
                                    break;
                                }
                            }
                            all.response(&p, &id, super::state::unix_now())
                        }
                    };
                    (row.custom_id, request_id, result)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (custom_id, request_id, result) = joined.context("a batch task failed")?;
            let (status, body) = match result {
                Ok(body) => {
                    summary.succeeded += 1;
                    summary.completion_tokens +=
                        body["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
                    (200, body)
                }
                Err(e) => {
                    summary.failed += 1;
                    (e.status.as_u16(), e.body())
                }
            };
            let line = json!({"id": format!("batch_{request_id}"), "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": null});
            // One write per line, flushed: a crash loses at most the line being written.
            out.write_all(format!("{line}\n").as_bytes())?;
            out.flush()?;
            progress(summary.total - (tasks.len() + next.len()), summary.total);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(summary)
}
