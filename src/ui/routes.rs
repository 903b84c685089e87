//! The routes: the page and its assets, and a JSON API over the run history.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/assets/*` | the page (one embedded HTML file, its script and styles) |
//! | `GET /api/runs?page=N&pipeline=P` | runs, newest first, 50 a page |
//! | `GET /api/runs/stream?page=N` | the same page, as server-sent events whenever it changes |
//! | `GET /api/runs/{id}` | one run: record, loss curves (thinned), latest progress, stream offset |
//! | `GET /api/runs/{id}/events` | the run's events as server-sent events, from `Last-Event-ID` |
//! | `GET /api/runs/{id}/download?path=P` | an artifact of the run (a folder as .tar.gz) |
//! | `GET /api/runs/{id}/log?stage=S` | the tail of a stage's log, as text |
//! | `POST /api/runs/{id}/stop` | SIGINT to the run's `pipe run` |
//! | `GET /api/compare?ids=A,B` | runs side by side: params, metrics, curves |
//! | `GET /api/pipelines`, `GET /api/pipelines/form?file=F` | pipelines; one's start form |
//! | `GET /api/workspace?file=F` | a pipeline's stages on its DAG, each up to date, stale (and why), running or failed |
//! | `POST /api/runs` | validate a form and start `pipe run` detached |
//! | `GET /api/datasets`, `POST /api/datasets?name=N` | uploaded datasets; upload and validate one |
//! | `POST /api/datasets/tokens` | an upload through a known model's chat template and tokenizer (`pipe tokens`) |
//! | `GET /api/models` | trained adapters of the history, with base model, metrics and exports |
//! | `POST /api/models/export`, `GET /api/models/download?path=P&format=F` | build an adapter's fused model or GGUF file; download it |
//! | `GET /api/monitors` | every monitor history: accuracy per evaluation, regressions, the latest decision |
//! | `GET /api/playground`, `POST /api/playground/generate` | the model server's state; one answer, streamed |
//!
//! Errors are JSON `{"error": "..."}` with a 4xx status; the message is the one the
//! command line would print.

use super::series::{self, Curve};
use super::{
    AppState, assets, datasets, download, exports, launch, live, models, monitors, playground,
    security, workspace,
};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pipe_engine::exec::progress::Progress;
use pipe_engine::history::{self, diff, read, record::RunRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Runs on one page of the list.
pub const PAGE: usize = 50;

/// The application's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/runs", get(runs).post(launch::start))
        .route("/api/runs/stream", get(live::runs_stream))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/events", get(live::run_events))
        .route("/api/runs/{id}/download", get(download::artifact))
        .route("/api/runs/{id}/stop", post(launch::stop))
        .route("/api/runs/{id}/log", get(super::logs::tail))
        .route("/api/compare", get(compare))
        .route("/api/pipelines", get(launch::pipelines))
        .route("/api/pipelines/form", get(launch::form))
        .route("/api/workspace", get(workspace::pipeline))
        .route("/api/datasets", get(datasets::list).post(datasets::upload))
        .route("/api/datasets/tokens", post(datasets::tokens))
        .route("/api/models", get(models::list))
        .route("/api/models/export", post(exports::start))
        .route("/api/models/download", get(exports::download))
        .route("/api/monitors", get(monitors::list))
        .route("/api/playground", get(playground::status))
        .route("/api/playground/generate", post(playground::generate))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(state.max_upload_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}

/// A JSON error answer.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refused request: its status and the message shown.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// Run `id` (which must look like a run id, so it cannot name another folder).
pub fn load_run(state: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    let plain = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !id.starts_with('.');
    if !plain {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not a run id".into()));
    }
    read::load(&state.root, id).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

/// What the runs list shows of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The id.
    pub id: String,
    /// The pipeline's name and file.
    pub pipeline: String,
    /// The pipeline file.
    pub pipeline_file: String,
    /// running, succeeded, failed, interrupted or crashed.
    pub status: &'static str,
    /// RFC 3339 UTC.
    pub started: String,
    /// RFC 3339 UTC, once ended.
    pub ended: Option<String>,
    /// `--set` overrides.
    pub sets: Vec<String>,
    /// Stages by state, as `cached 2, ran 1`.
    pub stages: String,
}

impl Summary {
    /// The summary of `r`.
    pub fn of(r: &RunRecord) -> Self {
        Self {
            id: r.id.clone(),
            pipeline: r.pipeline.clone(),
            pipeline_file: r.pipeline_file.clone(),
            status: r.effective_status().as_str(),
            started: r.started.clone(),
            ended: r.ended.clone(),
            sets: r.sets.clone(),
            stages: r.stage_counts(),
        }
    }
}

/// `?page=&pipeline=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// 1-based.
    #[serde(default)]
    pub page: Option<usize>,
    /// Only runs of this pipeline.
    #[serde(default)]
    pub pipeline: Option<String>,
}

/// One page of runs: reads only that page's records unless a pipeline filter needs all.
pub fn runs_page(state: &AppState, q: &ListQuery) -> Value {
    let page = q.page.unwrap_or(1).max(1);
    let (total, runs): (usize, Vec<Summary>) = match &q.pipeline {
        Some(p) if !p.is_empty() => {
            let all = read::list(&state.root, Some(p));
            let total = all.len();
            let page_runs = all
                .iter()
                .skip((page - 1) * PAGE)
                .take(PAGE)
                .map(Summary::of)
                .collect();
            (total, page_runs)
        }
        _ => {
            let ids = read::ids(&state.root);
            let page_runs = ids
                .iter()
                .skip((page - 1) * PAGE)
                .take(PAGE)
                .filter_map(|id| read::load(&state.root, id).ok())
                .map(|r| Summary::of(&r))
                .collect();
            (ids.len(), page_runs)
        }
    };
    json!({"runs": runs, "page": page, "pages": total.div_ceil(PAGE).max(1), "total": total})
}

async fn runs(State(state): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    let v = tokio::task::spawn_blocking(move || runs_page(&state, &q)).await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Everything the run page starts from; live events then continue from `offset`.
#[derive(Debug, Serialize)]
pub struct RunView {
    /// The record, its status as a reader should show it.
    pub run: RunRecord,
    /// Curves: stored series of finished stages, progress of running ones, thinned.
    pub curves: Vec<Curve>,
    /// The latest progress of each stage that reported any.
    pub progress: BTreeMap<String, Progress>,
    /// Where the event stream continues.
    pub offset: u64,
}

/// The run page's data for `record`.
pub fn run_view(state: &AppState, mut record: RunRecord, buckets: usize) -> RunView {
    record.status = record.effective_status();
    let (events, offset) = live::all_events(&history::events::path(&state.root, &record.id));
    let mut live_points: BTreeMap<(String, &'static str), Vec<(u64, f64)>> = BTreeMap::new();
    let mut progress = BTreeMap::new();
    for e in &events {
        if e["event"] != "stage-progress" {
            continue;
        }
        let (Some(stage), Some(step)) = (e["stage"].as_str(), e["step"].as_u64()) else {
            continue;
        };
        for name in ["loss", "valid_loss"] {
            if let Some(v) = e[name].as_f64() {
                live_points
                    .entry((stage.to_owned(), name))
                    .or_default()
                    .push((step, v));
            }
        }
        if let Ok(p) = serde_json::from_value::<Progress>(e.clone()) {
            progress.insert(stage.to_owned(), p);
        }
    }
    let mut curves = Vec::new();
    let mut stored: BTreeSet<&str> = BTreeSet::new();
    for s in record.stages.iter().filter(|s| !s.series.is_empty()) {
        let all = read::series(&state.root, &record.id, &s.name);
        curves.extend(
            series::from_series(&s.name, &all, buckets)
                .into_iter()
                .filter(|c| c.name == "loss" || c.name == "valid_loss"),
        );
        stored.insert(&s.name);
    }
    for ((stage, name), points) in live_points {
        if stored.contains(stage.as_str()) {
            continue;
        }
        curves.push(Curve {
            total: points.len(),
            points: series::downsample(&points, buckets),
            stage,
            name: name.to_owned(),
        });
    }
    RunView {
        run: record,
        curves,
        progress,
        offset,
    }
}

async fn run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let record = match load_run(&state, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let view =
        tokio::task::spawn_blocking(move || run_view(&state, record, series::DEFAULT_BUCKETS))
            .await;
    match view {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `?ids=A,B,C`.
#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// Run ids (or unique parts, or `latest~N`), comma-separated.
    pub ids: String,
}

async fn compare(State(state): State<Arc<AppState>>, Query(q): Query<CompareQuery>) -> Response {
    let mut records = Vec::new();
    for query in q.ids.split(',').filter(|s| !s.is_empty()) {
        let id = match read::resolve(&state.root, query) {
            Ok(id) => id,
            Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
        };
        match load_run(&state, &id) {
            Ok(r) => records.push(r),
            Err(e) => return e.into_response(),
        }
    }
    if records.len() < 2 {
        return error(StatusCode::BAD_REQUEST, "pick at least two runs to compare");
    }
    let views: Vec<RunView> = records
        .into_iter()
        .map(|r| run_view(&state, r, 200))
        .collect();
    let params: Vec<BTreeMap<String, Value>> =
        views.iter().map(|v| diff::params_of(&v.run)).collect();
    let metrics: Vec<BTreeMap<String, f64>> =
        views.iter().map(|v| diff::metrics_of(&v.run)).collect();
    let rows = |keys: BTreeSet<&String>, get: &dyn Fn(usize, &str) -> Value| -> Vec<Value> {
        keys.into_iter()
            .map(|k| {
                let values: Vec<Value> = (0..views.len()).map(|i| get(i, k)).collect();
                let differs = values.windows(2).any(|w| w[0] != w[1]);
                json!({"key": k, "values": values, "differs": differs})
            })
            .collect()
    };
    let param_rows = rows(params.iter().flat_map(|p| p.keys()).collect(), &|i, k| {
        params[i].get(k).cloned().unwrap_or(Value::Null)
    });
    let metric_rows = rows(metrics.iter().flat_map(|m| m.keys()).collect(), &|i, k| {
        metrics[i].get(k).map_or(Value::Null, |v| json!(v))
    });
    let runs: Vec<Value> = views
        .iter()
        .map(|v| json!({"summary": Summary::of(&v.run), "curves": v.curves}))
        .collect();
    Json(json!({"runs": runs, "params": param_rows, "metrics": metric_rows})).into_response()
}
