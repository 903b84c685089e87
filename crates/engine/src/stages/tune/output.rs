//! What a tune stage writes: one [`TrialRecord`] per trial in `trials.jsonl`, the best
//! parameters in `best.yaml`, each parameter's importance in `importance.json` (see
//! [`crate::tune::importance`]), counts, the space, the importance summary and the best
//! trial paired against the starting configuration ([`best_against_start`]) in
//! `metrics.json`, and a progress line per trial.

use super::config::Tune;
use super::store::Store;
use super::trial::{self, Outcome, Status};
use crate::report::quality::PairedTest;
use crate::tune::importance::{self, Importance, Outcome as ImportanceOutcome};
use crate::tune::space::get_dotted;
use crate::tune::suggest::{Direction, Origin};
use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Position in the study (0-based).
    pub index: usize,
    /// Parameters by dotted name.
    pub params: BTreeMap<String, Value>,
    /// The objective (complete trials only).
    pub value: Option<f64>,
    /// complete, pruned or failed.
    pub status: Status,
    /// Whether the pruning rule stopped it.
    pub pruned: bool,
    /// Why it was pruned or failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Wall time of the trial when it ran.
    pub seconds: f64,
    /// Peak memory, when known.
    pub peak_memory_bytes: Option<u64>,
    /// Intermediate `(step, value)` reports.
    pub intermediate: Vec<(u64, f64)>,
    /// How its point was chosen.
    pub origin: Option<Origin>,
    /// Taken from the trial cache instead of run.
    pub reused: bool,
    /// Its trial key (its folder under `cache/tune/v1/trials/`).
    pub key: String,
    /// The objective's 95% interval and counts, when the metric is an accuracy the
    /// evaluation gave one for (`<metric>_ci` beside it, as evaluate writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<pipe_schema::evaluate::Rate>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site each; a struct would only rename them"
)]
pub(super) fn record_of(
    tune: &Tune,
    index: usize,
    point: &[Value],
    key: &str,
    dir: &Path,
    outcome: Outcome,
    origin: Option<Origin>,
    reused: bool,
) -> TrialRecord {
    let (mut status, mut reason) = (outcome.status, outcome.reason);
    let mut value = None;
    let mut interval = None;
    if status == Status::Complete {
        let metric = &tune.config.objective.metric;
        let metrics: Option<Value> = std::fs::read_to_string(dir.join("metrics.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match metrics
            .as_ref()
            .map(|m| (m, get_dotted(m, metric).and_then(Value::as_f64)))
        {
            Some((m, Some(v))) if v.is_finite() => {
                value = Some(v);
                interval = get_dotted(m, &format!("{metric}_ci"))
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
            }
            Some((_, Some(v))) => {
                status = Status::Failed;
                reason = Some(format!("its `{metric}` is {v}"));
            }
            Some((m, None)) => {
                status = Status::Failed;
                let keys: Vec<String> = m
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                reason = Some(format!(
                    "its metrics.json has no number at `{metric}` (top-level keys: {})",
                    keys.join(", ")
                ));
            }
            None => {
                status = Status::Failed;
                reason = Some("its metrics.json is missing or not JSON".into());
            }
        }
    }
    TrialRecord {
        index,
        params: tune.flat(point),
        value,
        status,
        pruned: status == Status::Pruned,
        reason,
        seconds: outcome.seconds,
        peak_memory_bytes: outcome.peak_memory_bytes,
        intermediate: outcome.intermediate,
        origin,
        reused,
        key: key.to_owned(),
        interval,
    }
}

pub(super) fn best<'a>(tune: &Tune, records: &'a [TrialRecord]) -> Option<&'a TrialRecord> {
    let mode = tune.config.objective.mode;
    records.iter().filter(|r| r.value.is_some()).reduce(|a, b| {
        if mode.better(b.value.unwrap_or(f64::NAN), a.value.unwrap_or(f64::NAN)) {
            b
        } else {
            a
        }
    })
}

pub(super) fn progress(
    tune: &Tune,
    r: &TrialRecord,
    before: &[TrialRecord],
    n_trials: usize,
) -> String {
    let params: Vec<String> = r
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", trial::scalar_text(v)))
        .collect();
    let how = if r.reused {
        "reused".to_owned()
    } else {
        format!("{:.1}s", r.seconds)
    };
    let result = match (r.status, r.value) {
        (Status::Complete, Some(v)) => match &r.interval {
            Some(i) => format!(
                "{} = {v:.6} [{:.3}, {:.3}]",
                tune.config.objective.metric, i.low, i.high
            ),
            None => format!("{} = {v:.6}", tune.config.objective.metric),
        },
        (status, _) => format!(
            "{} ({})",
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.reason.as_deref().unwrap_or("")
        ),
    };
    let mut all: Vec<TrialRecord> = before.to_vec();
    all.push(r.clone());
    let best = best(tune, &all)
        .and_then(|b| {
            b.value
                .map(|v| format!("; best {v:.6} (trial {})", b.index))
        })
        .unwrap_or_default();
    format!(
        "trial {} ({}/{n_trials}, {how}) {}: {result}{best}",
        r.index,
        r.index + 1,
        params.join(" ")
    )
}

/// Counts and the best trial, written to `out/metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneMetrics {
    /// The objective's metric.
    pub objective: String,
    /// min or max.
    pub mode: Direction,
    /// The best objective value.
    pub best_value: Option<f64>,
    /// The best value's 95% interval, when the objective is an accuracy with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_interval: Option<pipe_schema::evaluate::Rate>,
    /// Index of the best trial.
    pub best_trial: Option<usize>,
    /// Its parameters, nested.
    pub best_params: Value,
    /// Trials in `trials.jsonl`.
    pub trials: usize,
    /// Of which complete.
    pub complete: usize,
    /// Of which pruned.
    pub pruned: usize,
    /// Of which failed.
    pub failed: usize,
    /// Of which were taken from the trial cache.
    pub reused: usize,
    /// What ended the search: `n_trials`, `max_minutes` or `exhausted`.
    pub stopped_by: String,
    /// Wall time of this run.
    pub seconds: f64,
    /// The search space as configured (the report draws its axes from it); null in files
    /// written before it was recorded.
    #[serde(default)]
    pub space: Value,
    /// Each parameter's importance by name (`importance.json` has the method, the order
    /// and the details); null when it could not be estimated (`importance.json` says why).
    #[serde(default)]
    pub importance: Option<BTreeMap<String, f64>>,
    /// The best trial against the configuration the study started from, on the same
    /// validation examples ([`best_against_start`]); absent when there is no such pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_vs_start: Option<PairedTest>,
}

/// The best trial against the configuration the study started from (its first enqueued
/// trial), paired on the examples both were scored on: exact McNemar and the difference's
/// interval, as compare tests its variants.
///
/// The best of several noisy scores leads the starting point by an example or two by
/// chance alone, and on a small validation split that lead is all a search can find
/// (BENCHMARKS.md, "Country capitals": 9 against 8 of 37, then the same 8 of 40 on test).
/// This says so before a final training is spent on it. `None` unless the objective is an
/// exact match to maximise, the best is another trial, and both trials' `eval.json` (in
/// the trial store) list per-example results.
fn best_against_start(
    tune: &Tune,
    root: &Path,
    records: &[TrialRecord],
    best: &TrialRecord,
) -> Option<PairedTest> {
    let objective = &tune.config.objective;
    if objective.mode != Direction::Max || !objective.metric.ends_with("exact_match") {
        return None;
    }
    let start = records
        .iter()
        .find(|r| matches!(r.origin, Some(Origin::Enqueued { .. })))
        .filter(|r| r.status == Status::Complete && r.index != best.index)?;
    let store = Store::open(root);
    let results = |r: &TrialRecord| -> Option<Vec<pipe_schema::evaluate::ExampleResult>> {
        #[derive(Deserialize)]
        struct Evaluation {
            #[serde(default)]
            results: Vec<pipe_schema::evaluate::ExampleResult>,
        }
        let text = std::fs::read_to_string(store.trial_dir(&r.key).join("eval.json")).ok()?;
        let evaluation: Evaluation = serde_json::from_str(&text).ok()?;
        Some(evaluation.results).filter(|r| !r.is_empty())
    };
    PairedTest::of(
        &format!("trial {}", best.index),
        &results(best)?,
        &format!("trial {}", start.index),
        &results(start)?,
    )
}

/// The log line for [`best_against_start`]'s test.
fn versus_start_line(p: &PairedTest) -> String {
    format!(
        "best against {}, the configuration the study started from, on the same {} examples: {} against {}, {}; {}",
        p.b,
        p.test.n,
        p.a_rate.successes,
        p.b_rate.successes,
        p.numbers(),
        if p.distinguishable {
            "ahead at 95%"
        } else {
            "not distinguishable at 95%"
        }
    )
}

pub(super) fn write_outputs(
    tune: &Tune,
    root: &Path,
    records: &[TrialRecord],
    stopped_by: &str,
    seconds: f64,
) -> anyhow::Result<()> {
    let out = root.join(&tune.config.out);
    fs_err::create_dir_all(&out)?;
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    crate::atomic_write::write_atomic(&out.join("trials.jsonl"), lines.as_bytes())?;
    let complete: Vec<_> = records
        .iter()
        .filter(|r| r.status == Status::Complete)
        .filter_map(|r| Some((tune.point_of(&r.params), r.value?)))
        .collect();
    let importance = importance::estimate(&tune.space, &complete);
    crate::stages::write_json(&out.join("importance.json"), &importance)?;
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let best = best(tune, records);
    let best_vs_start = best.and_then(|b| best_against_start(tune, root, records, b));
    let mut best_params = Value::Object(Default::default());
    if let Some(b) = best {
        for (k, v) in &b.params {
            crate::tune::space::set_dotted(&mut best_params, k, v.clone());
        }
    }
    let metrics = TuneMetrics {
        objective: tune.config.objective.metric.clone(),
        mode: tune.config.objective.mode,
        best_value: best.and_then(|b| b.value),
        best_interval: best.and_then(|b| b.interval),
        best_trial: best.map(|b| b.index),
        best_params: best_params.clone(),
        trials: records.len(),
        complete: count(Status::Complete),
        pruned: count(Status::Pruned),
        failed: count(Status::Failed),
        reused: records.iter().filter(|r| r.reused).count(),
        stopped_by: stopped_by.to_owned(),
        seconds,
        space: tune.config.space.clone(),
        importance: match &importance.outcome {
            ImportanceOutcome::Estimated { params, .. } => Some(
                params
                    .iter()
                    .map(|p| (p.name.clone(), p.importance))
                    .collect(),
            ),
            ImportanceOutcome::Unavailable { .. } => None,
        },
        best_vs_start,
    };
    crate::stages::write_json(&out.join("metrics.json"), &metrics)?;
    let Some(b) = best else {
        let first = records.iter().find_map(|r| {
            r.reason
                .as_ref()
                .map(|why| format!("trial {}: {why}", r.index))
        });
        bail!(
            "no trial completed (of {}); {}; trial folders are under cache/tune/v1/trials/",
            records.len(),
            first.unwrap_or_else(|| "none ran".into())
        );
    };
    let header = format!(
        "# best of {} trials: trial {} with {} = {} ({}), written by pipe's tune stage\n",
        records.len(),
        b.index,
        tune.config.objective.metric,
        b.value.unwrap_or(f64::NAN),
        if tune.config.objective.mode == Direction::Min {
            "min"
        } else {
            "max"
        },
    );
    let yaml = serde_yaml::to_string(&best_params)?;
    crate::atomic_write::write_atomic(
        &out.join("best.yaml"),
        format!("{header}{yaml}").as_bytes(),
    )?;
    eprintln!(
        "best: trial {} with {} = {} after {} trials ({} reused, {} pruned, {} failed); stopped by {stopped_by}",
        b.index,
        tune.config.objective.metric,
        b.value.unwrap_or(f64::NAN),
        records.len(),
        metrics.reused,
        metrics.pruned,
        metrics.failed
    );
    if let Some(p) = &metrics.best_vs_start {
        eprintln!("{}", versus_start_line(p));
    }
    eprintln!("{}", importance_line(&importance));
    Ok(())
}

/// The importance in one log line: `importance (method): a 0.81, b 0.12` or why none.
fn importance_line(importance: &Importance) -> String {
    match &importance.outcome {
        ImportanceOutcome::Estimated { params, .. } => {
            let each: Vec<String> = params
                .iter()
                .map(|p| format!("{} {:.2}", p.name, p.importance))
                .collect();
            format!("importance ({}): {}", importance.method, each.join(", "))
        }
        ImportanceOutcome::Unavailable { reason } => {
            format!(
                "importance ({}): not estimated: {reason}",
                importance.method
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::tune::config::TuneConfig;
    use serde_json::json;

    /// A study of `n_trials` command trials maximising `eval.tuned.exact_match`.
    fn exact_match_tune(n_trials: usize) -> Tune {
        let config: TuneConfig = serde_json::from_value(json!({
            "out": "tune",
            "space": {"learning_rate": {"float": [1e-5, 1e-3], "log": true}},
            "objective": {"metric": "eval.tuned.exact_match", "mode": "max"},
            "budget": {"n_trials": n_trials},
            "trial": {"cmd": "true {args}"},
        }))
        .unwrap();
        Tune::new(config).unwrap()
    }

    #[test]
    fn an_accuracy_objective_keeps_its_interval() {
        let tune = exact_match_tune(2);
        let dir = tempfile::tempdir().unwrap();
        let ci = crate::stats::rate(41, 50).unwrap();
        let metrics = json!({"eval": {"tuned": {"exact_match": ci.value, "exact_match_ci": ci}}});
        std::fs::write(dir.path().join("metrics.json"), metrics.to_string()).unwrap();
        let outcome = Outcome {
            status: Status::Complete,
            reason: None,
            intermediate: Vec::new(),
            seconds: 1.0,
            peak_memory_bytes: None,
            pruned_under: None,
        };
        let r = record_of(
            &tune,
            0,
            &[json!(1e-4)],
            "k",
            dir.path(),
            outcome.clone(),
            None,
            false,
        );
        assert_eq!((r.value, r.interval), (Some(0.82), Some(ci)));
        let line = progress(&tune, &r, &[], 2);
        assert!(
            line.contains(&format!("= 0.820000 [{:.3}, {:.3}]", ci.low, ci.high)),
            "{line}"
        );
        // A metric without an interval beside it (a loss, an older evaluation): none.
        std::fs::write(
            dir.path().join("metrics.json"),
            json!({"eval": {"tuned": {"exact_match": 0.5}}}).to_string(),
        )
        .unwrap();
        let r = record_of(
            &tune,
            1,
            &[json!(1e-4)],
            "k",
            dir.path(),
            outcome,
            None,
            false,
        );
        assert_eq!((r.value, r.interval), (Some(0.5), None));
        assert!(!serde_json::to_string(&r).unwrap().contains("interval"));
    }

    #[test]
    fn the_best_is_paired_against_the_enqueued_start_on_the_same_examples() {
        let tune = exact_match_tune(3);
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path());
        // 20 examples in each trial's eval.json, listed in different orders: the pairing
        // is by id. The start gets 0..10 right, the best 0..14 and not 3.
        let evaluation = |right: &dyn Fn(usize) -> bool, reversed: bool| {
            let mut results = crate::report::quality::scored_results(20, right);
            if reversed {
                results.reverse();
            }
            json!({"results": results}).to_string()
        };
        for (key, text) in [
            ("start", evaluation(&|i| i < 10, false)),
            ("best", evaluation(&|i| i < 14 && i != 3, true)),
        ] {
            std::fs::create_dir_all(store.trial_dir(key)).unwrap();
            std::fs::write(store.trial_dir(key).join("eval.json"), text).unwrap();
        }
        let record = |index, key: &str, value, origin| TrialRecord {
            index,
            params: [("learning_rate".to_owned(), json!(1e-4))]
                .into_iter()
                .collect(),
            value: Some(value),
            status: Status::Complete,
            pruned: false,
            reason: None,
            seconds: 1.0,
            peak_memory_bytes: None,
            intermediate: Vec::new(),
            origin: Some(origin),
            reused: false,
            key: key.to_owned(),
            interval: None,
        };
        let records = vec![
            record(0, "start", 0.50, Origin::Enqueued { index: 0 }),
            record(1, "none", 0.40, Origin::Random),
            record(2, "best", 0.65, Origin::LatinHypercube { index: 0 }),
        ];
        let metrics_of = |records: &[TrialRecord]| -> TuneMetrics {
            write_outputs(&tune, root.path(), records, "n_trials", 1.0).unwrap();
            let text = std::fs::read_to_string(root.path().join("tune/metrics.json")).unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let p = metrics_of(&records).best_vs_start.expect("a paired test");
        assert_eq!((p.a.as_str(), p.b.as_str()), ("trial 2", "trial 0"));
        assert_eq!(
            (p.a_rate.successes, p.b_rate.successes, p.test.n),
            (13, 10, 20)
        );
        assert_eq!((p.test.only_a, p.test.only_b), (4, 1));
        assert!(!p.distinguishable, "4 against 1 discordant: p = 0.375");
        assert!(versus_start_line(&p).contains("on the same 20 examples: 13 against 10"));
        // The start itself best: nothing to test.
        let mut start_best = records.clone();
        start_best[0].value = Some(0.9);
        assert!(metrics_of(&start_best).best_vs_start.is_none());
        // A best trial without per-example results (a cmd trial, an older store): none.
        let mut unscored = records.clone();
        unscored[2].key = "missing".into();
        assert!(metrics_of(&unscored).best_vs_start.is_none());
    }
}
