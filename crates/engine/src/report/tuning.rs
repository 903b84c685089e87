//! The report's tuning section: counts, the best configuration, the best-so-far curve,
//! parallel coordinates of the trials ([`super::parallel`]), each parameter's importance
//! (with the method that estimated it, [`crate::tune::importance`]) and the trials as a
//! table (parameters, objective, status, time, memory, why pruned or failed).

use super::parallel::{self, Axis, Scale, Style, Trace};
use super::svg::{self, escape};
use crate::tune::importance::{Importance, Outcome};
use crate::tune::space::{Domain, Space};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One trial, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    /// Position in the study.
    pub index: usize,
    /// Parameters by dotted name.
    pub params: BTreeMap<String, Value>,
    /// The objective, for complete trials.
    pub value: Option<f64>,
    /// complete, pruned or failed.
    pub status: String,
    /// Why it was pruned or failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Wall time when it ran.
    pub seconds: f64,
    /// Peak memory, when known.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Taken from the trial cache.
    #[serde(default)]
    pub reused: bool,
    /// The objective's 95% interval, when it is an accuracy with one.
    #[serde(default)]
    pub interval: Option<pipe_schema::evaluate::Rate>,
    /// How its point was chosen (`None` in an older pipe's trials).
    #[serde(default)]
    pub origin: Option<crate::tune::suggest::Origin>,
}

/// A trial's objective for the table: `0.8400 [0.712, 0.917]` with an interval.
fn value_text(r: &TrialRow) -> String {
    match (r.value, &r.interval) {
        (Some(v), Some(i)) => format!("{v:.4} [{:.3}, {:.3}]", i.low, i.high),
        (Some(v), None) => format!("{v:.4}"),
        (None, _) => "—".to_owned(),
    }
}

/// A tune stage's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// The objective's metric.
    pub objective: String,
    /// Whether larger values are better.
    pub maximise: bool,
    /// Trials in study order.
    pub trials: Vec<TrialRow>,
    /// One axis per parameter of the search space, in the space's order; `None` when the
    /// tune stage's `metrics.json` does not record the space (written by an older pipe).
    #[serde(default)]
    pub axes: Option<Vec<Axis>>,
    /// The tune stage's `importance.json`; `None` when it has none (an older pipe).
    #[serde(default)]
    pub importance: Option<Importance>,
    /// The best trial paired against the configuration the study started from, on the
    /// same validation examples (`best_vs_start` in the tune stage's `metrics.json`).
    #[serde(default)]
    pub best_vs_start: Option<super::quality::PairedTest>,
}

/// The parallel-coordinates axes of a search space: log-scaled parameters on log axes,
/// categoricals on axes labelled with their choices.
pub fn axes_of(space: &Space) -> Vec<Axis> {
    space
        .params
        .iter()
        .map(|p| Axis {
            name: p.name.clone(),
            scale: match &p.domain {
                &Domain::Float { low, high, log } => numeric(low, high, log, false),
                &Domain::Int { low, high, log } => numeric(low as f64, high as f64, log, true),
                Domain::Choice(values) => Scale::Categories {
                    values: values.clone(),
                },
            },
        })
        .collect()
}

fn numeric(low: f64, high: f64, log: bool, integer: bool) -> Scale {
    if log {
        Scale::Log { low, high, integer }
    } else {
        Scale::Linear { low, high, integer }
    }
}

impl Tuning {
    /// Index of the best complete trial.
    pub fn best(&self) -> Option<usize> {
        self.trials
            .iter()
            .filter_map(|t| t.value.map(|v| (t.index, v)))
            .reduce(|a, b| {
                let better = if self.maximise { b.1 > a.1 } else { b.1 < a.1 };
                if better { b } else { a }
            })
            .map(|(i, _)| i)
    }

    /// The fastest complete trial, other than `best`, whose objective equals the best's
    /// and that took less time than it (each trial's time as measured when it ran).
    pub fn fastest_tie(&self, best: &TrialRow) -> Option<&TrialRow> {
        self.trials
            .iter()
            .filter(|r| {
                r.index != best.index
                    && r.value.is_some()
                    && r.value == best.value
                    && r.seconds < best.seconds
            })
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
    }

    /// `(trial index, best value so far)` after each complete trial; the index is the one
    /// `trials.jsonl`, the trials table and `best.yaml` use, so "trial 1" means one thing.
    pub fn best_so_far(&self) -> Vec<(f64, f64)> {
        let mut best: Option<f64> = None;
        let mut out = Vec::new();
        for t in &self.trials {
            if let Some(v) = t.value {
                let b = match best {
                    Some(b) if (self.maximise && b >= v) || (!self.maximise && b <= v) => b,
                    _ => v,
                };
                best = Some(b);
                out.push((t.index as f64, b));
            }
        }
        out
    }
}

/// The sentence on a trial that scored exactly as well as `best` in less time: ties only
/// go to the earlier trial, and the cheaper recipe is worth knowing (BENCHMARKS.md, "Past
/// tense again": 8 blocks matched 30 in 60% of the time).
fn tie_text(tie: &TrialRow, best: &TrialRow) -> String {
    format!(
        "<br>Trial {} scored the same in {:.0}% of the time ({:.1} s against {:.1} s): {}.",
        tie.index,
        100.0 * tie.seconds / best.seconds,
        tie.seconds,
        best.seconds,
        params_text(&tie.params)
    )
}

/// The sentence on the best trial against the configuration the study started from: a
/// search's best is the largest of noisy scores, so its lead needs the same paired test
/// that compare gives held-out variants.
fn versus_start_text(p: &super::quality::PairedTest) -> String {
    let verdict = if p.distinguishable {
        "the best trial is ahead at 95%."
    } else {
        "not distinguishable at 95%: on this many examples the lead may be chance, and the \
         comparison on held-out data decides."
    };
    format!(
        "<br>Against {}, the configuration the study started from, on the same {} examples: \
         {} against {}, {}; {verdict}",
        escape(&p.b),
        p.test.n,
        super::quality::rate_text(&p.a_rate),
        super::quality::rate_text(&p.b_rate),
        p.numbers()
    )
}

/// A trial's parameters as `name = value, …`.
fn params_text(params: &BTreeMap<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{} = {}", escape(k), number(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn number(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f != 0.0 && !(1e-3..1e4).contains(&f.abs()) => {
                format!("{f:.3e}")
            }
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        other => escape(&other.to_string()),
    }
}

/// The section's HTML (inside the report's `<main>`): summary, chart and table.
pub fn section(t: &Tuning) -> String {
    let mut html = String::new();
    let best = t.best();
    let count = |s: &str| t.trials.iter().filter(|r| r.status == s).count();
    let _ = write!(
        html,
        r#"<div class="cards"><div class="card"><div class="v">{}</div><div class="k">trials</div></div><div class="card"><div class="v">{}</div><div class="k">complete</div></div><div class="card"><div class="v">{}</div><div class="k">pruned</div></div><div class="card"><div class="v">{}</div><div class="k">failed</div></div><div class="card"><div class="v">{}</div><div class="k">reused from the trial cache</div></div></div>"#,
        t.trials.len(),
        count("complete"),
        count("pruned"),
        count("failed"),
        t.trials.iter().filter(|r| r.reused).count()
    );
    if let Some(b) = best.and_then(|i| t.trials.iter().find(|r| r.index == i)) {
        // The configuration the study started from won: say so, rather than present it
        // as something the search found.
        let started_from = match b.origin {
            Some(crate::tune::suggest::Origin::Enqueued { .. }) => {
                "<br>This is the configuration the study started from (<code>enqueue</code>): \
                 no other trial scored better, so at this budget tuning found nothing better \
                 than it."
            }
            _ => "",
        };
        let _ = write!(
            html,
            r#"<p class="reco" style="margin-top:14px"><strong>Best configuration: trial {}</strong>, {} = {}<br>{}{started_from}{}{}</p>"#,
            b.index,
            escape(&t.objective),
            value_text(b),
            params_text(&b.params),
            t.fastest_tie(b)
                .map_or(String::new(), |tie| tie_text(tie, b)),
            t.best_vs_start
                .as_ref()
                .map_or(String::new(), versus_start_text),
        );
    }
    let curve = t.best_so_far();
    if !curve.is_empty() {
        let each: Vec<(f64, f64)> = t
            .trials
            .iter()
            .filter_map(|r| r.value.map(|v| (r.index as f64, v)))
            .collect();
        let chart = svg::line_chart(
            &[
                svg::Series {
                    label: "best so far".into(),
                    points: curve,
                    dashed: false,
                },
                svg::Series {
                    label: "each complete trial".into(),
                    points: each,
                    dashed: true,
                },
            ],
            "trial",
            &t.objective,
        );
        let _ = write!(
            html,
            r#"<div class="chart"><h3>{} by trial ({} is better)</h3>{chart}</div>"#,
            escape(&t.objective),
            if t.maximise { "higher" } else { "lower" }
        );
    }
    html.push_str(&parallel_section(t));
    html.push_str(&importance_section(t.importance.as_ref()));
    let names: Vec<&String> = t
        .trials
        .first()
        .map(|r| r.params.keys().collect())
        .unwrap_or_default();
    html.push_str(r#"<table style="margin-top:14px"><tr><th class="num">trial</th>"#);
    for n in &names {
        let _ = write!(html, r#"<th class="num">{}</th>"#, escape(n));
    }
    let _ = write!(
        html,
        r#"<th class="num">{}</th><th>status</th><th class="num">time</th><th class="num">peak memory</th><th>note</th></tr>"#,
        escape(&t.objective)
    );
    for r in &t.trials {
        let class = if Some(r.index) == best {
            r#" class="best""#
        } else {
            ""
        };
        let _ = write!(html, r#"<tr{class}><td class="num">{}</td>"#, r.index);
        for n in &names {
            let v = r.params.get(*n).map(number).unwrap_or_default();
            let _ = write!(html, r#"<td class="num">{v}</td>"#);
        }
        let value = value_text(r);
        let memory = r.peak_memory_bytes.map_or("—".to_owned(), |b| {
            format!("{:.0} MiB", b as f64 / 1048576.0)
        });
        let time = if r.reused {
            format!("{:.1} s (reused)", r.seconds)
        } else {
            format!("{:.1} s", r.seconds)
        };
        let _ = write!(
            html,
            r#"<td class="num">{value}</td><td>{}</td><td class="num">{time}</td><td class="num">{memory}</td><td>{}</td></tr>"#,
            escape(&r.status),
            escape(r.reason.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table>");
    html
}

/// The parallel-coordinates chart with its heading, or why there is none.
fn parallel_section(t: &Tuning) -> String {
    let Some(axes) = &t.axes else {
        return r#"<p class="empty">No parallel coordinates: the tune stage's metrics.json does not record its search space (it was written by an older pipe); rerun the tune stage.</p>"#.to_owned();
    };
    if t.trials.is_empty() {
        return String::new();
    }
    let values: Vec<f64> = t.trials.iter().filter_map(|r| r.value).collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let (worst, best_value) = if t.maximise { (lo, hi) } else { (hi, lo) };
    let mut all = axes.clone();
    all.push(Axis {
        name: t.objective.clone(),
        scale: if values.is_empty() {
            Scale::Linear {
                low: 0.0,
                high: 1.0,
                integer: false,
            }
        } else {
            Scale::Linear {
                low: lo,
                high: hi,
                integer: false,
            }
        },
    });
    let best = t.best();
    let traces: Vec<Trace> = t
        .trials
        .iter()
        .map(|r| {
            let mut values: Vec<Value> = axes
                .iter()
                .map(|a| r.params.get(&a.name).cloned().unwrap_or(Value::Null))
                .collect();
            values.push(r.value.map_or(Value::Null, Value::from));
            let style = match (r.value, r.status.as_str()) {
                _ if Some(r.index) == best => Style::Best,
                (Some(v), _) if worst != best_value => {
                    Style::Shade((v - worst) / (best_value - worst))
                }
                (Some(_), _) => Style::Shade(1.0),
                (None, "pruned") => Style::Pruned,
                (None, _) => Style::Failed,
            };
            let params: Vec<String> = r
                .params
                .iter()
                .map(|(k, v)| format!("{k} = {}", parallel::value_text(v)))
                .collect();
            let outcome = r
                .value
                .map_or(r.status.clone(), |v| format!("{} = {v}", t.objective));
            Trace {
                values,
                style,
                title: format!("trial {}: {}; {outcome}", r.index, params.join(", ")),
            }
        })
        .collect();
    let key = |v: f64, which: &str| {
        if v.is_finite() {
            format!("{} ({which})", svg::label(v))
        } else {
            which.to_owned()
        }
    };
    let chart = parallel::chart(
        &all,
        &traces,
        (&key(worst, "worst"), &key(best_value, "best")),
    );
    format!(
        r#"<div class="chart wide" style="max-width:none"><h3>Trials across the search space (parallel coordinates: one line per trial, coloured by {}, the best in bold)</h3>{chart}</div>"#,
        escape(&t.objective)
    )
}

/// The importance table (most important first) with the method named, or why there are
/// no numbers.
fn importance_section(importance: Option<&Importance>) -> String {
    let mut html = String::from("<h3>Parameter importance</h3>");
    let Some(imp) = importance else {
        html.push_str(r#"<p class="empty">Not computed: the tune stage's out folder has no importance.json (it was written by an older pipe); rerun the tune stage.</p>"#);
        return html;
    };
    match &imp.outcome {
        Outcome::Unavailable { reason } => {
            let _ = write!(
                html,
                r#"<p class="empty">Not estimated ({}): {}.</p>"#,
                escape(&imp.method),
                escape(reason)
            );
        }
        Outcome::Estimated {
            trials,
            samples,
            params,
            interactions,
        } => {
            let _ = write!(
                html,
                r#"<p class="sub">Method: {}, from a Gaussian process fitted to the {trials} complete trials ({samples} Latin hypercube samples per matrix). Each number is the share of the objective's variance over the search space that the parameter explains on its own; interactions between parameters account for {:.2}. The numbers describe the model, so they are rough when trials are few.</p><table><tr><th>parameter</th><th class="num">importance</th><th style="width:50%"></th></tr>"#,
                escape(&imp.method),
                interactions
            );
            for p in params {
                let _ = write!(
                    html,
                    r#"<tr><td>{}</td><td class="num">{:.3}</td><td><div style="background:var(--accent);height:10px;border-radius:2px;width:{:.1}%"></div></td></tr>"#,
                    escape(&p.name),
                    p.importance,
                    100.0 * p.importance.clamp(0.0, 1.0)
                );
            }
            html.push_str("</table>");
        }
    }
    html
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tune::importance::ParamImportance;
    use serde_json::json;

    pub(crate) fn sample() -> Tuning {
        let row = |index, lr: f64, value: Option<f64>, status: &str| TrialRow {
            index,
            params: [
                ("learning_rate".to_owned(), json!(lr)),
                ("lora.rank".to_owned(), json!(8)),
            ]
            .into_iter()
            .collect(),
            value,
            status: status.into(),
            reason: (status == "pruned").then(|| "step 10: worse than the median <1.2>".into()),
            seconds: 12.5,
            peak_memory_bytes: Some(300 << 20),
            reused: index == 0,
            interval: None,
            origin: None,
        };
        let space = Space::from_json(&json!({
            "learning_rate": {"float": [1e-5, 1e-3], "log": true},
            "lora.rank": {"int": [4, 32], "log": true},
        }))
        .unwrap();
        Tuning {
            objective: "eval.tuned.exact_match".into(),
            maximise: true,
            trials: vec![
                row(0, 1e-4, Some(0.4), "complete"),
                row(1, 3e-4, Some(0.7), "complete"),
                row(2, 1e-3, None, "pruned"),
                row(3, 5e-4, Some(0.6), "complete"),
            ],
            axes: Some(axes_of(&space)),
            importance: Some(Importance {
                method: crate::tune::importance::METHOD.into(),
                outcome: Outcome::Estimated {
                    trials: 3,
                    samples: 4096,
                    // Listed most important first, as importance.json has them; the
                    // section keeps the order.
                    params: vec![
                        ParamImportance {
                            name: "lora.rank".into(),
                            importance: 0.61,
                        },
                        ParamImportance {
                            name: "learning_rate".into(),
                            importance: 0.27,
                        },
                    ],
                    interactions: 0.12,
                },
            }),
            best_vs_start: None,
        }
    }

    #[test]
    fn the_best_is_tested_against_the_starting_configuration() {
        use crate::report::quality::{PairedTest, scored_results as scored};
        let mut t = sample();
        // Country capitals' sweep: trial 9 had 9 of 37 right, the default (trial 0) 8;
        // 3 right under trial 9 only, 2 under trial 0 only.
        let best = scored(37, |i| i < 9);
        let start = scored(37, |i| matches!(i, 3..=8 | 10 | 11));
        t.best_vs_start = PairedTest::of("trial 1", &best, "trial 0", &start);
        let p = t.best_vs_start.as_ref().unwrap();
        assert_eq!(
            (p.a_rate.successes, p.b_rate.successes, p.test.n),
            (9, 8, 37)
        );
        let html = section(&t);
        assert!(
            html.contains("Against trial 0, the configuration the study started from, on the same 37 examples: 0.243")
                && html.contains(&p.numbers())
                && html.contains("not distinguishable at 95%"),
            "{html}"
        );
        // A lead the examples support is said to be one.
        t.best_vs_start = PairedTest::of("trial 1", &scored(37, |i| i < 30), "trial 0", &start);
        let html = section(&t);
        assert!(html.contains("the best trial is ahead at 95%"), "{html}");
        // Without the test (a loss objective, an older pipe), no sentence.
        t.best_vs_start = None;
        assert!(!section(&t).contains("Against trial"));
    }

    #[test]
    fn an_enqueued_best_is_said_to_be_the_starting_point() {
        let mut t = sample();
        let html = section(&t);
        assert!(!html.contains("started from"));
        t.trials[1].origin = Some(crate::tune::suggest::Origin::Enqueued { index: 0 });
        let html = section(&t);
        assert!(
            html.contains("the configuration the study started from")
                && html.contains("tuning found nothing better"),
            "{html}"
        );
        // Read from trials.jsonl as the tune stage writes it.
        let row: TrialRow = serde_json::from_value(json!({
            "index": 0, "params": {}, "value": 0.5, "status": "complete", "seconds": 1.0,
            "origin": {"by": "enqueued", "index": 0}
        }))
        .unwrap();
        assert_eq!(
            row.origin,
            Some(crate::tune::suggest::Origin::Enqueued { index: 0 })
        );
    }

    #[test]
    fn a_trial_that_ties_the_best_in_less_time_is_named() {
        let mut t = sample();
        // Trial 1 is the best (0.7) in 12.5 s; no other trial ties it.
        assert!(!section(&t).contains("scored the same"));
        // Trial 3 ties it, first in as much time, which is no news, then in less.
        t.trials[3].value = Some(0.7);
        assert!(!section(&t).contains("scored the same"));
        t.trials[3].seconds = 5.0;
        let html = section(&t);
        assert!(
            html.contains("Trial 3 scored the same in 40% of the time (5.0 s against 12.5 s)")
                && html.contains("learning_rate = 5.000e-4"),
            "{html}"
        );
        // The best stays the earlier trial, and a faster trial that scored less is no tie.
        assert_eq!(t.best(), Some(1));
        t.trials[3].value = Some(0.69);
        assert!(!section(&t).contains("scored the same"));
    }

    #[test]
    fn best_so_far_is_monotone_and_the_best_row_is_marked() {
        let t = sample();
        assert_eq!(t.best(), Some(1));
        assert_eq!(t.best_so_far(), [(0.0, 0.4), (1.0, 0.7), (3.0, 0.7)]);
        let html = section(&t);
        assert!(
            html.contains(r#"<tr class="best"><td class="num">1</td>"#),
            "{html}"
        );
        assert!(html.contains("1.000e-4") && html.contains("0.7000"));
        assert!(html.contains("&lt;1.2&gt;"), "reasons are escaped");
        assert!(html.contains("<svg") && html.contains("best so far"));
        assert!(html.contains("12.5 s (reused)") && html.contains("300 MiB"));
        assert!(
            html.contains("Best configuration: trial 1</strong>, eval.tuned.exact_match = 0.7000<br>learning_rate = 3.000e-4, lora.rank = 8"),
            "{html}"
        );
        let minimise = Tuning {
            maximise: false,
            ..t
        };
        assert_eq!(minimise.best(), Some(0));
        assert_eq!(minimise.best_so_far(), [(0.0, 0.4), (1.0, 0.4), (3.0, 0.4)]);
    }

    #[test]
    fn the_space_gives_log_and_categorical_axes() {
        let space = Space::from_json(&json!({
            "lr": {"float": [1e-5, 1e-3], "log": true},
            "method": {"choice": ["lora", "dora"]},
            "n": {"int": [1, 8]},
        }))
        .unwrap();
        let scales: Vec<Scale> = axes_of(&space).into_iter().map(|a| a.scale).collect();
        assert_eq!(
            scales,
            [
                Scale::Log {
                    low: 1e-5,
                    high: 1e-3,
                    integer: false
                },
                Scale::Categories {
                    values: vec![json!("lora"), json!("dora")]
                },
                Scale::Linear {
                    low: 1.0,
                    high: 8.0,
                    integer: true
                },
            ]
        );
    }

    #[test]
    fn missing_or_unavailable_parts_are_explained() {
        let mut t = sample();
        t.axes = None;
        t.importance = None;
        let html = section(&t);
        assert!(html.contains("No parallel coordinates") && html.contains("rerun the tune stage"));
        assert!(html.contains("no importance.json"));
        assert_eq!(
            html.matches("<svg").count(),
            1,
            "only the best-so-far curve"
        );
        t.importance = Some(Importance {
            method: crate::tune::importance::METHOD.into(),
            outcome: Outcome::Unavailable {
                reason: "1 completed trial; at least 2 are needed to fit the model".into(),
            },
        });
        let html = section(&t);
        assert!(
            html.contains("Not estimated (first-order Sobol indices of the GP posterior mean): 1 completed trial; at least 2"),
            "{html}"
        );
        assert!(
            !html.contains("<th class=\"num\">importance</th>"),
            "no table"
        );
    }
}
