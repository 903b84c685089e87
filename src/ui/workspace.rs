//! The workspace page: a pipeline's stages on its DAG, each with its state.
//!
//! The state is what `pipe status` says (up to date, stale and why, restorable, frozen),
//! overlaid with the pipeline's latest run: a stage that run is executing now is
//! `running`, and a stage it failed (and that is still stale) is `failed`, with the error.
//! Nothing is cached here: the page asks again when a run of the pipeline changes.

use super::AppState;
use super::launch::{FileQuery, pipeline_path};
use super::live::all_events;
use super::routes::error;
use crate::cli::workspace::WorkspaceArgs;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::cache::Store;
use pipe_engine::exec::{describe, plan};
use pipe_engine::history::{self, read, record::RunRecord, record::RunStatus};
use pipe_engine::report::StageStatus as Settled;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// One stage as the page draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageView {
    /// Its name.
    pub stage: String,
    /// Its kind (`cmd` for command stages).
    pub kind: String,
    /// `up-to-date`, `stale`, `restorable`, `frozen`, `running` or `failed`.
    pub state: &'static str,
    /// Why it is stale, or why it failed.
    pub why: String,
    /// The stages it reads from or names in `needs`.
    pub needs: Vec<String>,
    /// Its column on the drawing: the longest chain of stages above it.
    pub depth: usize,
}

/// The latest run of the pipeline, as far as the page needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestRun {
    /// Its id.
    pub id: String,
    /// Its status (a dead `running` run reads `crashed`).
    pub status: &'static str,
    /// Its `--set` overrides, for "rerun".
    pub sets: Vec<String>,
}

/// `GET /api/workspace?file=F`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineView {
    /// The pipeline file.
    pub file: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Stages in run order.
    pub stages: Vec<StageView>,
    /// The newest run of this pipeline, if any.
    pub latest: Option<LatestRun>,
}

/// `GET /api/workspace?file=F`: the stages of a pipeline and their states.
pub async fn pipeline(State(state): State<Arc<AppState>>, Query(q): Query<FileQuery>) -> Response {
    let path = match pipeline_path(&state, &q.file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let file = q.file.clone();
    match tokio::task::spawn_blocking(move || view(&state, path, file)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The view of the pipeline at `path` (named `file` on the page); the error is the
/// message `pipe status` would print.
pub fn view(state: &AppState, path: PathBuf, file: String) -> Result<PipelineView, String> {
    let prefix = format!("{}/", state.root.display());
    let args = WorkspaceArgs {
        pipeline: path,
        root: Some(state.root.clone()),
        sets: Vec::new(),
    };
    let (pipeline, dag) = args
        .load()
        .map_err(|e| format!("{e:#}").replace(&prefix, ""))?;
    let store = Store::open(&pipeline.root);
    let statuses = plan::status(&pipeline, &dag, &store, false, None)
        .map_err(|e| e.to_string().replace(&prefix, ""))?;
    let latest = read::list(&state.root, Some(&pipeline.name))
        .into_iter()
        .next();
    let running = latest
        .as_ref()
        .map(|r| running_stages(&state.root, r))
        .unwrap_or_default();

    let mut depth = vec![0usize; pipeline.stages.len()];
    for &i in dag.order() {
        depth[i] = dag
            .upstream(i)
            .map(|(u, _)| depth[u] + 1)
            .max()
            .unwrap_or(0);
    }
    let index: std::collections::HashMap<&str, usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let stages = statuses
        .into_iter()
        .filter_map(|s| {
            let i = *index.get(s.stage.as_str())?;
            let stage = &pipeline.stages[i];
            let mut needs: Vec<String> = dag
                .upstream(i)
                .map(|(u, _)| pipeline.stages[u].name.clone())
                .collect();
            needs.dedup();
            let settled = latest.as_ref().and_then(|r| r.stage(&s.stage));
            let (state, why) = if running.contains(&s.stage) {
                ("running", String::new())
            } else if let Some(failed) = settled.filter(|r| r.status == Settled::Failed)
                && !s.reasons.is_empty()
            {
                ("failed", failed.error.clone().unwrap_or_default())
            } else {
                (s.state, describe(&s.reasons))
            };
            Some(StageView {
                kind: stage.kind.name().to_owned(),
                stage: s.stage,
                state,
                why,
                needs,
                depth: depth[i],
            })
        })
        .collect();
    Ok(PipelineView {
        file,
        pipeline: pipeline.name.clone(),
        stages,
        latest: latest.map(|r| LatestRun {
            status: r.effective_status().as_str(),
            id: r.id,
            sets: r.sets,
        }),
    })
}

/// The stages a live run has started and not settled yet.
fn running_stages(root: &std::path::Path, run: &RunRecord) -> BTreeSet<String> {
    if run.effective_status() != RunStatus::Running {
        return BTreeSet::new();
    }
    let (events, _) = all_events(&history::events::path(root, &run.id));
    events
        .iter()
        .filter(|e| e["event"] == "stage-start")
        .filter_map(|e| e["stage"].as_str())
        .filter(|name| run.stage(name).is_none())
        .map(str::to_owned)
        .collect()
}
