//! Two runs side by side (`pipe runs diff`), across pipelines: every stage's resolved
//! configuration and params flattened to `stage.key` rows, and every metric as
//! `stage.metric` rows with the change from the first run to the second. Stages are
//! matched by name, so `train` of one pipeline lines up with `train` of another.

use super::record::RunRecord;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One configuration row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamRow {
    /// `stage.key.subkey`.
    pub key: String,
    /// The first run's value (`None`: it has no such key).
    pub a: Option<Value>,
    /// The second run's value.
    pub b: Option<Value>,
}

impl ParamRow {
    /// Whether the two runs differ here.
    pub fn differs(&self) -> bool {
        self.a != self.b
    }
}

/// One metric row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// `stage.metric`.
    pub key: String,
    /// The first run's value.
    pub a: Option<f64>,
    /// The second run's value.
    pub b: Option<f64>,
    /// `b - a`, when both exist.
    pub delta: Option<f64>,
}

/// The comparison of two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// The first run's id.
    pub a: String,
    /// The second run's id.
    pub b: String,
    /// Configuration rows, sorted by key.
    pub params: Vec<ParamRow>,
    /// Metric rows, sorted by key.
    pub metrics: Vec<MetricRow>,
}

/// Compares run `a` with run `b`.
pub fn diff(a: &RunRecord, b: &RunRecord) -> Diff {
    let (pa, pb) = (params_of(a), params_of(b));
    let keys: BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    let params = keys
        .into_iter()
        .map(|k| ParamRow {
            key: k.clone(),
            a: pa.get(k).cloned(),
            b: pb.get(k).cloned(),
        })
        .collect();
    let (ma, mb) = (metrics_of(a), metrics_of(b));
    let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let metrics = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (ma.get(k).copied(), mb.get(k).copied());
            MetricRow {
                key: k.clone(),
                a: x,
                b: y,
                delta: x.zip(y).map(|(x, y)| y - x),
            }
        })
        .collect();
    Diff {
        a: a.id.clone(),
        b: b.id.clone(),
        params,
        metrics,
    }
}

/// Every stage's configuration and params as `stage.key` -> scalar (lists stay whole).
pub fn params_of(run: &RunRecord) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    out.insert("pipeline".into(), Value::String(run.pipeline.clone()));
    for stage in &run.stages {
        flatten(&stage.name, &stage.config, &mut out);
        for (k, v) in &stage.params {
            out.insert(format!("{}.params.{k}", stage.name), v.clone());
        }
    }
    out
}

/// Every stage's metrics as `stage.metric` -> value.
pub fn metrics_of(run: &RunRecord) -> BTreeMap<String, f64> {
    run.stages
        .iter()
        .flat_map(|s| {
            s.metrics
                .iter()
                .map(move |(k, v)| (format!("{}.{k}", s.name), *v))
        })
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::{Host, RunStatus, StageRecord, StageStatus};

    fn run(id: &str, pipeline: &str, lr: f64, em: f64) -> RunRecord {
        RunRecord {
            schema: 1,
            id: id.into(),
            pipeline: pipeline.into(),
            pipeline_file: format!("{pipeline}.yaml"),
            pipeline_hash: String::new(),
            sets: vec![],
            git: None,
            started: String::new(),
            started_ms: 0,
            tracking: None,
            ended: None,
            status: RunStatus::Succeeded,
            pid: 0,
            host: Host::default(),
            stages: vec![StageRecord {
                name: "train".into(),
                kind: "train".into(),
                status: StageStatus::Ran,
                fingerprint: None,
                produced_by: None,
                ended: String::new(),
                ended_ms: 0,
                duration_ms: None,
                error: None,
                config: serde_json::json!({"options": {"learning_rate": lr, "rank": 8}}),
                params: BTreeMap::new(),
                metrics: BTreeMap::from([("exact_match".into(), em)]),
                artifacts: vec![],
                trials: vec![],
                tags: BTreeMap::new(),
                recommends: None,
                series: vec![],
                log: None,
            }],
        }
    }

    #[test]
    fn lines_up_stages_across_pipelines() {
        let d = diff(
            &run("a", "quickstart", 1e-4, 0.5),
            &run("b", "sweep", 2e-4, 0.75),
        );
        let lr = d
            .params
            .iter()
            .find(|r| r.key == "train.options.learning_rate")
            .unwrap();
        assert!(lr.differs());
        let rank = d
            .params
            .iter()
            .find(|r| r.key == "train.options.rank")
            .unwrap();
        assert!(!rank.differs());
        assert!(d.params.iter().any(|r| r.key == "pipeline" && r.differs()));
        assert_eq!(d.metrics[0].key, "train.exact_match");
        assert_eq!(d.metrics[0].delta, Some(0.25));
    }
}
