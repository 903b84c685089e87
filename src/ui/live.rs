//! Live data as server-sent events: a run's event stream and the runs list.
//!
//! A run's stream replays `runs/history/<id>/events.jsonl` from a byte offset, then follows
//! the file as the run appends to it. Each SSE event's id is the offset just past its line,
//! so the browser's automatic reconnect (which sends `Last-Event-ID`) resumes exactly
//! there: no event is lost or repeated. When the run has ended and every line is sent, an
//! `end` event carries its final status and the stream closes.
//!
//! The files are polled (every [`POLL`]): runs are other processes, possibly started before
//! this server, and a stat per open stream is cheap.

use super::AppState;
use super::routes::{ListQuery, error, load_run, runs_page};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use pipe_engine::history::{self, events, read, record::RunStatus};
use serde::Deserialize;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often open streams look for news.
pub const POLL: Duration = Duration::from_millis(200);

/// Every event of a stream so far, parsed, and the offset after the last one.
pub fn all_events(path: &std::path::Path) -> (Vec<Value>, u64) {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Ok(lines) = events::read_from(path, offset) {
        let Some(&(end, _)) = lines.last() else {
            break;
        };
        out.extend(
            lines
                .iter()
                .filter_map(|(_, l)| serde_json::from_str(l).ok()),
        );
        offset = end;
    }
    (out, offset)
}

/// `?from=OFFSET`, for the first connection (reconnects send `Last-Event-ID`).
#[derive(Debug, Deserialize)]
pub struct From {
    /// Byte offset into the stream.
    #[serde(default)]
    pub from: Option<u64>,
}

/// `GET /api/runs/{id}/events`.
pub async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = load_run(&state, &id) {
        return e.into_response();
    }
    let start = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        .or(q.from)
        .unwrap_or(0);
    let path = events::path(&state.root, &id);
    let root = state.root.clone();
    // State: (offset, finished). Each step yields the events found in one poll.
    let steps = stream::unfold((start, false), move |(offset, finished)| {
        let (path, root, id) = (path.clone(), root.clone(), id.clone());
        async move {
            if finished {
                return None;
            }
            loop {
                // Whether the run had ended *before* reading: then what we read is all.
                let ended = read::load(&root, &id)
                    .ok()
                    .map(|r| r.effective_status())
                    .filter(|s| *s != RunStatus::Running);
                let p = path.clone();
                let lines = tokio::task::spawn_blocking(move || events::read_from(&p, offset))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                if let Some(&(end, _)) = lines.last() {
                    let out: Vec<SseEvent> = lines
                        .into_iter()
                        .map(|(at, line)| SseEvent::default().id(at.to_string()).data(line))
                        .collect();
                    return Some((out, (end, false)));
                }
                if let Some(status) = ended {
                    let end = SseEvent::default()
                        .event("end")
                        .id(offset.to_string())
                        .data(format!("{{\"status\":\"{}\"}}", status.as_str()));
                    return Some((vec![end], (offset, true)));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    });
    let events = steps.flat_map(|batch| stream::iter(batch.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What changes when the first page of runs changes: ids and their records' sizes and
/// modification times (a stat each, no reading).
fn page_signature(
    state: &AppState,
    page: usize,
) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    read::ids(&state.root)
        .into_iter()
        .skip((page.max(1) - 1) * super::routes::PAGE)
        .take(super::routes::PAGE)
        .map(|id| {
            let meta = std::fs::metadata(history::run_dir(&state.root, &id).join("run.json")).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (id, len, modified)
        })
        .collect()
}

/// `GET /api/runs/stream?page=N`: the page as a `runs` event at once and whenever a run on
/// it appears or changes (a run's status going from running to crashed is seen on the
/// next change or reconnect).
pub async fn runs_stream(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Response {
    if q.pipeline.as_deref().is_some_and(|p| !p.is_empty()) {
        return error(
            axum::http::StatusCode::BAD_REQUEST,
            "the live list shows all pipelines; filter with /api/runs?pipeline=",
        );
    }
    let page = q.page.unwrap_or(1);
    let steps = stream::unfold(None, move |last| {
        let state = state.clone();
        async move {
            loop {
                let (s, seen) = (state.clone(), last.clone());
                let (sig, body) = tokio::task::spawn_blocking(move || {
                    let sig = page_signature(&s, page);
                    let body = (seen.as_ref() != Some(&sig)).then(|| {
                        let q = ListQuery {
                            page: Some(page),
                            pipeline: None,
                        };
                        runs_page(&s, &q)
                    });
                    (sig, body)
                })
                .await
                .ok()?;
                if let Some(body) = body {
                    let event = SseEvent::default().event("runs").data(body.to_string());
                    return Some((event, Some(sig)));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Sse::new(steps.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}
