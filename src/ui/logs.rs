//! A stage's log tail: `GET /api/runs/{id}/log?stage=S` answers the last [`TAIL`] bytes of
//! the stage's log as text. A stage that has settled has its log kept in the run's history
//! folder; a running one writes the workspace log its `stage-start` event names, read only
//! when it resolves inside the workspace.

use super::AppState;
use super::routes::{error, load_run};
use super::security;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipe_engine::history;
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// The most of a log one answer holds.
pub const TAIL: u64 = 64 << 10;

/// `?stage=train`.
#[derive(Debug, Deserialize)]
pub struct StageQuery {
    /// The stage's name.
    pub stage: String,
}

/// `GET /api/runs/{id}/log?stage=S`.
pub async fn tail(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<StageQuery>,
) -> Response {
    let record = match load_run(&state, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let kept = record
        .stage(&q.stage)
        .and_then(|s| s.log.clone())
        .map(|rel| history::run_dir(&state.root, &id).join(rel));
    let path = match kept {
        Some(p) => p,
        None => {
            // Running: the log the stage's start event names, if inside the workspace.
            let (events, _) = super::live::all_events(&history::events::path(&state.root, &id));
            let named = events
                .iter()
                .rev()
                .find(|e| e["event"] == "stage-start" && e["stage"] == q.stage.as_str())
                .and_then(|e| e["log"].as_str().map(str::to_owned));
            let Some(named) = named else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("stage `{}` of run {id} has no log", q.stage),
                );
            };
            let rel = std::path::Path::new(&named)
                .strip_prefix(&state.root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or(named);
            match security::confine(&state.root, &rel) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::NOT_FOUND, &e),
            }
        }
    };
    match read_tail(&path) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, &format!("{}: {e}", path.display())),
    }
}

/// The last [`TAIL`] bytes of `path`, from a line start when cut.
fn read_tail(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if len > TAIL {
        text.split_once('\n')
            .map_or(text.clone(), |(_, rest)| rest.to_owned())
    } else {
        text
    })
}
