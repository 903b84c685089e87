//! Trained adapters, as the run history knows them: every `adapter` artifact a stage
//! recorded, newest run first, one entry per folder (a folder retrained later holds the
//! later run's weights, so the older record no longer describes it). The playground picks
//! from this list and the models page lists it, so neither ever takes a path from the
//! browser: a request names an entry's folder, which must be on this list.

use super::AppState;
use super::routes::error;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::history::read;
use pipe_engine::history::record::ArtifactRole;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One trained adapter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adapter {
    /// Its folder, relative to the workspace (the artifact's path).
    pub path: String,
    /// The run that recorded it last.
    pub run: String,
    /// The stage that made it.
    pub stage: String,
    /// The pipeline of that run.
    pub pipeline: String,
    /// The base model it was trained on (a known id or a path), when recorded.
    pub base_model: Option<String>,
    /// `lora`, `dora`, `full`, ... when recorded.
    pub method: Option<String>,
    /// The LoRA rank, when recorded.
    pub rank: Option<String>,
    /// The stage's fingerprint: names this version of the folder's content.
    pub fingerprint: Option<String>,
    /// The stage's final numbers.
    pub metrics: BTreeMap<String, f64>,
    /// When the stage settled (RFC 3339 UTC).
    pub ended: String,
    /// Size of the folder when recorded.
    pub bytes: u64,
    /// Whether the folder holds PEFT's layout too (`peft/`, LoRA and DoRA adapters).
    pub peft: bool,
}

/// Every adapter of the workspace's history whose folder still exists, newest first.
pub fn adapters(root: &std::path::Path) -> Vec<Adapter> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in read::ids(root) {
        let Ok(record) = read::load(root, &id) else {
            continue;
        };
        for stage in &record.stages {
            for artifact in stage
                .artifacts
                .iter()
                .filter(|a| a.role == ArtifactRole::Adapter)
            {
                let path = artifact.path.trim_end_matches('/').to_owned();
                if !root.join(&path).is_dir() || !seen.insert(path.clone()) {
                    continue;
                }
                let peft = root.join(&path).join("peft/adapter_config.json").is_file();
                out.push(Adapter {
                    peft,
                    path,
                    run: record.id.clone(),
                    stage: stage.name.clone(),
                    pipeline: record.pipeline.clone(),
                    base_model: stage.tags.get("base_model").cloned(),
                    method: stage.tags.get("method").cloned(),
                    rank: stage.tags.get("rank").cloned(),
                    fingerprint: stage.fingerprint.clone(),
                    metrics: stage.metrics.clone(),
                    ended: stage.ended.clone(),
                    bytes: artifact.bytes,
                });
            }
        }
    }
    out
}

/// The adapter whose folder is `path`, if the history lists it.
pub fn find(root: &std::path::Path, path: &str) -> Option<Adapter> {
    let path = path.trim_end_matches('/');
    adapters(root).into_iter().find(|a| a.path == path)
}

/// An adapter as the models page lists it: with the state of its fused and GGUF exports.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    adapter: Adapter,
    exports: BTreeMap<super::exports::Format, super::exports::ExportState>,
}

/// `GET /api/models`.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let listing = state.clone();
    let listed = tokio::task::spawn_blocking(move || {
        adapters(&listing.root)
            .into_iter()
            .map(|adapter| Listed {
                exports: listing.builds.states(&listing.root, &adapter),
                adapter,
            })
            .collect::<Vec<_>>()
    });
    match listed.await {
        Ok(list) => Json(serde_json::json!({ "adapters": list })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
