//! The monitors page: each monitor stage's history (accuracy per evaluation, one series
//! per model, regressions marked) and its latest decision, as the nightly report shows
//! them, for every history the run history knows of.
//!
//! The history files are found through the run records (a monitor stage's resolved
//! `history:`), never from the browser, and read only inside the workspace.

use super::AppState;
use super::routes::error;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::history::read;
use pipe_engine::monitor::history;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// One evaluation on the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When it was scored (RFC 3339 UTC).
    pub at: String,
    /// The model as people read it.
    pub model: String,
    /// The first 12 hex digits of the model's content hash: one series per model.
    pub model_hash: String,
    /// Right answers over examples.
    pub accuracy: f64,
    /// Examples scored.
    pub examples: usize,
    /// Whether it regressed against its baseline by the monitor's rules.
    pub regressed: bool,
}

/// One monitor's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Monitor {
    /// The history file, relative to the workspace.
    pub history: String,
    /// The pipeline and stage that last appended to it, and that run.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// The run.
    pub run: String,
    /// That run's decision (`baseline`, `ok`, `fired`, ...), from the stage's `monitor.json`.
    pub decision: Option<String>,
    /// Oldest first.
    pub points: Vec<Point>,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

/// `GET /api/monitors`.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let root = state.root.clone();
    match tokio::task::spawn_blocking(move || monitors(&root)).await {
        Ok(list) => Json(serde_json::json!({ "monitors": list })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Every monitor history of the workspace's runs, the most recently used first.
pub fn monitors(root: &Path) -> Vec<Monitor> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in read::ids(root) {
        let Ok(record) = read::load(root, &id) else {
            continue;
        };
        for stage in record.stages.iter().filter(|s| s.kind == "monitor") {
            let Some(rel) = stage.config["history"].as_str() else {
                continue;
            };
            if !seen.insert(rel.to_owned()) {
                continue;
            }
            let Ok(path) = super::security::confine(root, rel) else {
                continue;
            };
            let decision = stage.config["out"]
                .as_str()
                .and_then(|o| super::security::confine(root, o).ok())
                .and_then(|o| std::fs::read_to_string(o.join("monitor.json")).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["decision"]["decision"].as_str().map(str::to_owned));
            let (points, error) = match history::read(&path) {
                Ok(entries) => (entries.iter().map(point).collect(), None),
                Err(e) => (Vec::new(), Some(format!("{e:#}"))),
            };
            out.push(Monitor {
                history: rel.to_owned(),
                pipeline: record.pipeline.clone(),
                stage: stage.name.clone(),
                run: record.id.clone(),
                decision,
                points,
                error,
            });
        }
    }
    out
}

fn point(e: &history::Entry) -> Point {
    Point {
        at: e.at.clone(),
        model: e.model.clone(),
        model_hash: e.model_hash.chars().take(12).collect(),
        accuracy: e.accuracy(),
        examples: e.examples.len(),
        regressed: e.regressed,
    }
}
