//! Replaying the run history to MLflow, exactly once.
//!
//! The local history is the outbox: a run records everything first, and [`sync_run`]
//! makes the server reflect it. What the server has acknowledged is written to the run's
//! ledger (`runs/history/<id>/mlflow.json`) after every step, so a sync interrupted at any
//! point resumes where it stopped. MLflow runs are found by a `pipe.key` tag before one is
//! created, and model versions by their fingerprint tag, so even a crash between a
//! server's answer and the ledger write does not create a second run or version.
//!
//! Mapping (see README, "Tracking"):
//! - the experiment is the pipeline's name (or `tracking.experiment`);
//! - one parent run per `pipe run`, a child run per stage that ran (or failed), tune
//!   trials as children of their stage's run;
//! - a stage that was up to date or restored from the cache gets no run: the parent's tags
//!   say so and name the run that produced its outs;
//! - a trained adapter becomes a version of the registered model, and a compare stage
//!   points the alias (`champion`) at the version it recommends.

use super::client::{Client, KeyValue, Metric, MlflowError, PARAM_VALUE_MAX, RunInfo};
use crate::history::record::{
    ArtifactRole, RunRecord, RunStatus, StageRecord, StageStatus, TrackingTarget, Trial,
};
use crate::history::{self, read};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the server has acknowledged for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// The server the ledger is about (a ledger for another server starts over).
    pub server: String,
    /// The experiment.
    pub experiment_id: Option<String>,
    /// The parent run.
    pub parent: Option<RunRef>,
    /// Whether the parent's tags are logged.
    pub parent_tagged: bool,
    /// Stages by name.
    pub stages: BTreeMap<String, StageLedger>,
    /// The version the alias was pointed at.
    pub alias_version: Option<String>,
    /// Whether the parent run was ended: nothing is left to send.
    pub done: bool,
}

/// A run on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    /// MLflow's run id.
    pub run_id: String,
    /// Its artifact root.
    pub artifact_uri: String,
}

impl From<RunInfo> for RunRef {
    fn from(info: RunInfo) -> Self {
        RunRef {
            run_id: info.run_id,
            artifact_uri: info.artifact_uri,
        }
    }
}

/// What the server has of one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLedger {
    /// Its child run.
    pub run: Option<RunRef>,
    /// Params, metrics and tags logged.
    pub logged: bool,
    /// Artifacts uploaded, by local path.
    pub artifacts: BTreeSet<String>,
    /// Trials finished on the server, by index.
    pub trials: BTreeSet<usize>,
    /// The registered version of its adapter.
    pub version: Option<String>,
    /// Whether its run was ended (or, for a cached stage, the parent tagged).
    pub done: bool,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// The run.
    pub run: String,
    /// MLflow runs created (parent, stages, trials).
    pub runs_created: usize,
    /// Files uploaded.
    pub artifacts_uploaded: usize,
    /// Model versions registered.
    pub versions_registered: usize,
    /// Whether everything is on the server now.
    pub complete: bool,
    /// Things that could not be done and will not get better by retrying.
    pub warnings: Vec<String>,
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server failed; what was sent so far is in the ledger.
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    /// The history or ledger could not be read or written.
    #[error("{0}")]
    History(String),
}

/// The tracking target of a pipeline: `tracking:` merged with `MLFLOW_TRACKING_URI`.
/// `None` when neither names a server.
pub fn target(
    pipeline: &str,
    tracking: Option<&pipe_schema::tracking::TrackingConfig>,
) -> Option<TrackingTarget> {
    let default = pipe_schema::tracking::TrackingConfig::default();
    let config = tracking.unwrap_or(&default);
    let uri = config
        .mlflow
        .clone()
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))?;
    Some(TrackingTarget {
        mlflow: super::client::redact(&uri),
        experiment: config
            .experiment
            .clone()
            .unwrap_or_else(|| pipeline.to_owned()),
        model: config.model_name(pipeline),
        alias: if config.alias.is_empty() {
            "champion".into()
        } else {
            config.alias.clone()
        },
    })
}

/// Runs of the workspace at `root` that are tracked and not yet complete on their server,
/// oldest first.
pub fn pending(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = read::ids(root)
        .into_iter()
        .filter(|id| {
            read::load(root, id).is_ok_and(|r| r.tracking.is_some()) && !load_ledger(root, id).done
        })
        .collect();
    ids.reverse();
    ids
}

fn ledger_path(root: &Path, id: &str) -> PathBuf {
    history::run_dir(root, id).join("mlflow.json")
}

/// The ledger of run `id` (empty when nothing was sent).
pub fn load_ledger(root: &Path, id: &str) -> Ledger {
    std::fs::read(ledger_path(root, id))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Sends what the server lacks of run `id`. Another sync of the same run (a second
/// process) makes this one wait; with `wait: false` it returns at once instead.
pub fn sync_run(root: &Path, id: &str, wait: bool) -> Result<SyncReport, SyncError> {
    let record = read::load(root, id).map_err(|e| SyncError::History(e.to_string()))?;
    let mut report = SyncReport {
        run: id.to_owned(),
        ..SyncReport::default()
    };
    let Some(target) = record.tracking.clone() else {
        report.complete = true;
        return Ok(report);
    };
    let lock_path = history::run_dir(root, id).join("mlflow.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| SyncError::History(format!("cannot open {}: {e}", lock_path.display())))?;
    if wait {
        lock.lock()
            .map_err(|e| SyncError::History(format!("cannot lock {}: {e}", lock_path.display())))?;
    } else if lock.try_lock().is_err() {
        return Ok(report);
    }
    let mut ledger = load_ledger(root, id);
    if ledger.server != target.mlflow {
        ledger = Ledger {
            server: target.mlflow.clone(),
            ..Ledger::default()
        };
    }
    let mut sync = Sync {
        root,
        record: &record,
        target: &target,
        client: Client::new(&target.mlflow),
        ledger,
        report,
    };
    sync.run()?;
    Ok(sync.report)
}

struct Sync<'a> {
    root: &'a Path,
    record: &'a RunRecord,
    target: &'a TrackingTarget,
    client: Client,
    ledger: Ledger,
    report: SyncReport,
}

impl Sync<'_> {
    fn save(&self) -> Result<(), SyncError> {
        crate::atomic_write::write_json(&ledger_path(self.root, &self.record.id), &self.ledger)
            .map_err(|e| SyncError::History(format!("cannot write the MLflow ledger: {e}")))
    }

    fn run(&mut self) -> Result<(), SyncError> {
        if self.ledger.done {
            self.report.complete = true;
            return Ok(());
        }
        let experiment = match &self.ledger.experiment_id {
            Some(e) => e.clone(),
            None => {
                let e = self.client.experiment_id(&self.target.experiment)?;
                self.ledger.experiment_id = Some(e.clone());
                self.save()?;
                e
            }
        };
        let parent = match &self.ledger.parent {
            Some(p) => p.clone(),
            None => {
                let key = self.record.id.clone();
                let mut tags = self.common_tags();
                tags.extend(self.run_tags());
                let p = self.find_or_create(
                    &experiment,
                    &key,
                    &self.record.pipeline,
                    self.record.started_ms,
                    tags,
                )?;
                self.ledger.parent = Some(p.clone());
                self.save()?;
                p
            }
        };
        for stage in &self.record.stages {
            self.stage(&experiment, &parent, stage)?;
        }
        self.alias()?;
        let status = self.record.effective_status();
        if status != RunStatus::Running {
            let mlflow_status = match status {
                RunStatus::Succeeded => "FINISHED",
                RunStatus::Failed => "FAILED",
                _ => "KILLED",
            };
            let end = self
                .record
                .stages
                .iter()
                .map(|s| s.ended_ms)
                .max()
                .unwrap_or(self.record.started_ms)
                .max(self.record.started_ms);
            let counts: Vec<KeyValue> = [
                ("pipe.status", status.as_str().to_owned()),
                ("pipe.stages", self.record.stage_counts()),
            ]
            .into_iter()
            .map(|(k, v)| kv(k, &v))
            .collect();
            self.client.log_batch(&parent.run_id, &[], &[], &counts)?;
            self.client.end_run(&parent.run_id, mlflow_status, end)?;
            self.ledger.done = true;
            self.save()?;
            self.report.complete = true;
        }
        Ok(())
    }

    /// Tags every run of this pipe run carries: where and on what it ran.
    fn common_tags(&self) -> Vec<KeyValue> {
        let r = self.record;
        let h = &r.host;
        let mut tags = vec![
            kv("pipe.run_id", &r.id),
            kv("pipe.pipeline", &r.pipeline),
            kv("pipe.pipeline_hash", &r.pipeline_hash),
            kv("mlflow.source.name", &r.pipeline_file),
            kv("pipe.host.chip", &h.chip),
            kv("pipe.host.os", &format!("{} {}", h.os, h.arch)),
            kv("pipe.host.cores", &h.cores.to_string()),
            kv(
                "pipe.host.memory_gb",
                &format!("{:.1}", h.memory_bytes as f64 / f64::from(1u32 << 30)),
            ),
            kv("pipe.version", &h.pipe),
        ];
        if let Some(m) = &h.mlx {
            tags.push(kv("pipe.mlx_version", m));
        }
        if let Some(b) = &h.backend {
            tags.push(kv("pipe.backend", b));
        }
        if let Some(m) = h.metal {
            tags.push(kv("pipe.metal", &m.to_string()));
        }
        if let Some(g) = &r.git {
            tags.push(kv("mlflow.source.git.commit", &g.commit));
            tags.push(kv("pipe.git_dirty", &g.dirty.to_string()));
        }
        if let Some(v) = r.stages.iter().find_map(|s| s.tags.get("data_version")) {
            tags.push(kv("pipe.data_version", v));
        }
        tags
    }

    fn run_tags(&self) -> Vec<KeyValue> {
        let mut tags = vec![kv("pipe.level", "run")];
        if !self.record.sets.is_empty() {
            tags.push(kv("pipe.sets", &self.record.sets.join(" ")));
        }
        tags
    }

    /// The run tagged `pipe.key = key`, or a new one.
    fn find_or_create(
        &mut self,
        experiment: &str,
        key: &str,
        name: &str,
        start_ms: u64,
        mut tags: Vec<KeyValue>,
    ) -> Result<RunRef, SyncError> {
        let filter = format!("tags.`pipe.key` = '{}'", key.replace('\'', "\\'"));
        if let Some(found) = self.client.search_runs(experiment, &filter)?.first() {
            let info: RunInfo = serde_json::from_value(found["info"].clone())
                .map_err(|e| SyncError::History(format!("runs/search answered oddly: {e}")))?;
            return Ok(info.into());
        }
        tags.push(kv("pipe.key", key));
        let info = self.client.create_run(experiment, name, start_ms, &tags)?;
        self.report.runs_created += 1;
        Ok(info.into())
    }

    fn stage(
        &mut self,
        experiment: &str,
        parent: &RunRef,
        stage: &StageRecord,
    ) -> Result<(), SyncError> {
        let mut state = self
            .ledger
            .stages
            .get(&stage.name)
            .cloned()
            .unwrap_or_default();
        if state.done {
            return Ok(());
        }
        match stage.status {
            StageStatus::Cached | StageStatus::Restored | StageStatus::Skipped => {
                let mut tags = vec![kv(
                    &format!("pipe.stage.{}", stage.name),
                    stage.status.as_str(),
                )];
                if let Some(by) = &stage.produced_by {
                    tags.push(kv(&format!("pipe.stage.{}.produced_by", stage.name), by));
                    if let Some(r) = load_ledger(self.root, by)
                        .stages
                        .get(&stage.name)
                        .and_then(|s| s.run.as_ref())
                    {
                        tags.push(kv(
                            &format!("pipe.stage.{}.mlflow_run", stage.name),
                            &r.run_id,
                        ));
                    }
                }
                self.client.log_batch(&parent.run_id, &[], &[], &tags)?;
                state.done = true;
                self.ledger.stages.insert(stage.name.clone(), state);
                return self.save();
            }
            StageStatus::Ran | StageStatus::Failed => {}
        }
        let run = match &state.run {
            Some(r) => r.clone(),
            None => {
                let mut tags = self.common_tags();
                tags.push(kv("mlflow.parentRunId", &parent.run_id));
                tags.push(kv("pipe.level", "stage"));
                tags.push(kv("pipe.stage", &stage.name));
                tags.push(kv("pipe.kind", &stage.kind));
                let start = stage
                    .ended_ms
                    .saturating_sub(stage.duration_ms.unwrap_or(0));
                let key = format!("{}/{}", self.record.id, stage.name);
                let r = self.find_or_create(experiment, &key, &stage.name, start, tags)?;
                state.run = Some(r.clone());
                self.ledger.stages.insert(stage.name.clone(), state.clone());
                self.save()?;
                r
            }
        };
        if !state.logged {
            let (params, metrics, tags) = self.stage_payload(stage);
            self.client
                .log_batch(&run.run_id, &params, &metrics, &tags)?;
            state.logged = true;
            self.ledger.stages.insert(stage.name.clone(), state.clone());
            self.save()?;
        }
        for (rel, local) in self.stage_files(stage) {
            if state.artifacts.contains(&local.display().to_string()) {
                continue;
            }
            self.client.upload(&run.artifact_uri, &rel, &local)?;
            self.report.artifacts_uploaded += 1;
            state.artifacts.insert(local.display().to_string());
            self.ledger.stages.insert(stage.name.clone(), state.clone());
            self.save()?;
        }
        for trial in &stage.trials {
            if state.trials.contains(&trial.index) {
                continue;
            }
            self.trial(experiment, &run, stage, trial)?;
            state.trials.insert(trial.index);
            self.ledger.stages.insert(stage.name.clone(), state.clone());
            self.save()?;
        }
        if stage.kind == "train" && stage.status == StageStatus::Ran && state.version.is_none() {
            state.version = self.register(&run, stage)?;
            self.ledger.stages.insert(stage.name.clone(), state.clone());
            self.save()?;
        }
        let status = if stage.status == StageStatus::Ran {
            "FINISHED"
        } else {
            "FAILED"
        };
        self.client.end_run(&run.run_id, status, stage.ended_ms)?;
        state.done = true;
        self.ledger.stages.insert(stage.name.clone(), state);
        self.save()
    }

    /// Params (the resolved configuration, flattened), metrics (final values and step
    /// series) and tags of a stage's run.
    fn stage_payload(&self, stage: &StageRecord) -> (Vec<KeyValue>, Vec<Metric>, Vec<KeyValue>) {
        let mut flat = BTreeMap::new();
        flatten("", &stage.config, &mut flat);
        for (k, v) in &stage.params {
            flat.insert(format!("params.{k}"), scalar(v));
        }
        let params = flat
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.chars().take(250).collect(),
                value: truncate(&v, PARAM_VALUE_MAX),
            })
            .collect();
        let series = read::series(self.root, &self.record.id, &stage.name);
        let last_step = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(0);
        let mut metrics: Vec<Metric> = series
            .iter()
            .flat_map(|s| {
                s.points.iter().map(|&(step, value, ts)| Metric {
                    key: s.name.clone(),
                    value,
                    timestamp: ts,
                    step,
                })
            })
            .collect();
        let curves: BTreeSet<&str> = series.iter().map(|s| s.name.as_str()).collect();
        metrics.extend(
            stage
                .metrics
                .iter()
                // A final value under a curve's name would add a stray point to the curve.
                .filter(|(k, _)| !curves.contains(k.as_str()))
                .map(|(k, v)| Metric {
                    key: metric_key(k),
                    value: *v,
                    timestamp: stage.ended_ms,
                    step: last_step,
                }),
        );
        let mut tags: Vec<KeyValue> = stage
            .tags
            .iter()
            .map(|(k, v)| kv(&format!("pipe.{k}"), v))
            .collect();
        if let Some(f) = &stage.fingerprint {
            tags.push(kv("pipe.fingerprint", f));
        }
        if let Some(e) = &stage.error {
            tags.push(kv("pipe.error", &truncate(e, 5000)));
        }
        (params, metrics, tags)
    }

    /// `(artifact path, local file)` for every file a stage keeps: its artifacts (an
    /// adapter folder under `adapter/`, without optimizer checkpoints) and its log.
    fn stage_files(&self, stage: &StageRecord) -> Vec<(String, PathBuf)> {
        let mut files = Vec::new();
        for a in &stage.artifacts {
            let local = self.root.join(&a.path);
            if a.role == ArtifactRole::Adapter && local.is_dir() {
                for entry in walkdir::WalkDir::new(&local)
                    .sort_by_file_name()
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_file())
                {
                    let rel = entry.path().strip_prefix(&local).unwrap_or(entry.path());
                    if rel.starts_with("checkpoint") {
                        continue;
                    }
                    files.push((
                        format!("adapter/{}", rel.display()),
                        entry.path().to_owned(),
                    ));
                }
            } else if local.is_file() {
                let name = local
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                files.push((name, local));
            }
        }
        if let Some(log) = &stage.log {
            let local = history::run_dir(self.root, &self.record.id).join(log);
            if local.is_file() {
                files.push(("stage.log".into(), local));
            }
        }
        files
    }

    fn trial(
        &mut self,
        experiment: &str,
        stage_run: &RunRef,
        stage: &StageRecord,
        trial: &Trial,
    ) -> Result<(), SyncError> {
        let mut tags = self.common_tags();
        tags.push(kv("mlflow.parentRunId", &stage_run.run_id));
        tags.push(kv("pipe.level", "trial"));
        tags.push(kv("pipe.stage", &stage.name));
        tags.push(kv("pipe.trial_status", &trial.status));
        if let Some(reason) = &trial.reason {
            tags.push(kv("pipe.trial_reason", &truncate(reason, 5000)));
        }
        let key = format!("{}/{}/trial-{}", self.record.id, stage.name, trial.index);
        let end = stage.ended_ms;
        let start = end.saturating_sub((trial.seconds * 1000.0) as u64);
        let run = self.find_or_create(
            experiment,
            &key,
            &format!("trial-{}", trial.index),
            start,
            tags,
        )?;
        let params: Vec<KeyValue> = trial
            .params
            .iter()
            .map(|(k, v)| kv(k, &truncate(&scalar(v), PARAM_VALUE_MAX)))
            .collect();
        let mut metrics: Vec<Metric> = trial
            .intermediate
            .iter()
            .map(|&(step, value)| Metric {
                key: "objective".into(),
                value,
                timestamp: end,
                step,
            })
            .collect();
        if let Some(v) = trial.value {
            let step = trial.intermediate.last().map_or(0, |p| p.0);
            if trial.intermediate.last().map(|p| p.1) != Some(v) {
                metrics.push(Metric {
                    key: "objective".into(),
                    value: v,
                    timestamp: end,
                    step,
                });
            }
        }
        self.client.log_batch(&run.run_id, &params, &metrics, &[])?;
        let status = match trial.status.as_str() {
            "complete" => "FINISHED",
            "pruned" => "KILLED",
            _ => "FAILED",
        };
        self.client.end_run(&run.run_id, status, end)?;
        Ok(())
    }

    /// Registers a trained adapter as a version of the target's model, unless a version
    /// with its fingerprint exists.
    fn register(&mut self, run: &RunRef, stage: &StageRecord) -> Result<Option<String>, SyncError> {
        let Some(model) = self.target.model.clone() else {
            return Ok(None);
        };
        if !stage
            .artifacts
            .iter()
            .any(|a| a.role == ArtifactRole::Adapter)
        {
            return Ok(None);
        }
        let Some(fingerprint) = stage.fingerprint.clone() else {
            return Ok(None);
        };
        self.client.ensure_registered_model(&model)?;
        if let Some(v) = self
            .client
            .model_versions(&model)?
            .into_iter()
            .find(|v| v.tag("pipe.fingerprint") == Some(&fingerprint))
        {
            return Ok(Some(v.version));
        }
        let mut tags = vec![
            kv("pipe.fingerprint", &fingerprint),
            kv("pipe.run_id", &self.record.id),
            kv("pipe.stage", &stage.name),
            kv("pipe.host.chip", &self.record.host.chip),
        ];
        tags.extend(stage.tags.iter().map(|(k, v)| kv(&format!("pipe.{k}"), v)));
        if let Some(v) = self
            .record
            .stages
            .iter()
            .find_map(|s| s.tags.get("data_version"))
        {
            tags.push(kv("pipe.data_version", v));
        }
        if let Some(m) = &self.record.host.mlx {
            tags.push(kv("pipe.mlx_version", m));
        }
        for key in [
            "final_train_loss",
            "final_valid_loss",
            "trained_tokens_per_second",
            "peak_memory_bytes",
        ] {
            if let Some(v) = stage.metrics.get(key) {
                tags.push(kv(&format!("metric.{key}"), &v.to_string()));
            }
        }
        let source = format!("{}/adapter", run.artifact_uri.trim_end_matches('/'));
        let version = self
            .client
            .create_model_version(&model, &source, &run.run_id, &tags)?;
        self.report.versions_registered += 1;
        Ok(Some(version.version))
    }

    /// Points the alias at the version a compare stage recommends.
    fn alias(&mut self) -> Result<(), SyncError> {
        let Some(model) = self.target.model.clone() else {
            return Ok(());
        };
        let Some(train) = self
            .record
            .stages
            .iter()
            .filter(|s| s.kind == "compare" && s.status != StageStatus::Failed)
            .find_map(|s| s.recommends.clone())
        else {
            return Ok(());
        };
        let Some(fingerprint) = self
            .record
            .stage(&train)
            .and_then(|s| s.fingerprint.clone())
        else {
            return Ok(());
        };
        let found = self
            .client
            .model_versions(&model)?
            .into_iter()
            .find(|v| v.tag("pipe.fingerprint") == Some(&fingerprint));
        match found {
            Some(v) if self.ledger.alias_version.as_deref() != Some(&v.version) => {
                self.client
                    .set_alias(&model, &self.target.alias, &v.version)?;
                self.ledger.alias_version = Some(v.version);
                self.save()?;
            }
            Some(_) => {}
            None => self.report.warnings.push(format!(
                "compare recommends `{train}`, whose adapter is not a version of `{model}` \
                 (it was trained by a run that was not tracked); alias `{}` not moved",
                self.target.alias
            )),
        }
        Ok(())
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max.saturating_sub(12);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...[cut]", &text[..cut])
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// MLflow metric names allow letters, digits, `_ - . / space`.
fn metric_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
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
        Value::Null => {}
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_flatten_and_fit() {
        let mut out = BTreeMap::new();
        flatten(
            "",
            &serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": null}),
            &mut out,
        );
        assert_eq!(out["a.b"], "1");
        assert_eq!(out["a.c"], "[1,2]");
        assert_eq!(out["d"], "x");
        assert!(!out.contains_key("e"));
        let long = "é".repeat(5000);
        let t = truncate(&long, PARAM_VALUE_MAX);
        assert!(t.len() <= PARAM_VALUE_MAX && t.ends_with("[cut]"));
        assert_eq!(metric_key("train@rank=8"), "train_rank_8");
    }

    #[test]
    fn target_comes_from_the_pipeline_or_the_environment() {
        let config = pipe_schema::tracking::TrackingConfig {
            mlflow: Some("http://u:p@h:5000".into()),
            ..Default::default()
        };
        let t = target("qs", Some(&config)).unwrap();
        assert_eq!(t.mlflow, "http://h:5000");
        assert_eq!(t.experiment, "qs");
        assert_eq!(t.model.as_deref(), Some("qs"));
        assert_eq!(t.alias, "champion");
    }
}
