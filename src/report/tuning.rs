//! The report's tuning section: a tune stage's trials as a table (parameters, objective,
//! status, time, memory, why pruned or failed) and the best-so-far curve as inline SVG.

use super::svg::{self, escape};
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

    /// `(trial number, best value so far)` after each complete trial.
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
                out.push(((t.index + 1) as f64, b));
            }
        }
        out
    }
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
    let curve = t.best_so_far();
    if !curve.is_empty() {
        let each: Vec<(f64, f64)> = t
            .trials
            .iter()
            .filter_map(|r| r.value.map(|v| ((r.index + 1) as f64, v)))
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
        let value = r.value.map_or("—".to_owned(), |v| format!("{v:.4}"));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
        };
        Tuning {
            objective: "eval.tuned.exact_match".into(),
            maximise: true,
            trials: vec![
                row(0, 1e-4, Some(0.4), "complete"),
                row(1, 3e-4, Some(0.7), "complete"),
                row(2, 1e-3, None, "pruned"),
                row(3, 5e-4, Some(0.6), "complete"),
            ],
        }
    }

    #[test]
    fn best_so_far_is_monotone_and_the_best_row_is_marked() {
        let t = sample();
        assert_eq!(t.best(), Some(1));
        assert_eq!(t.best_so_far(), [(1.0, 0.4), (2.0, 0.7), (4.0, 0.7)]);
        let html = section(&t);
        assert!(
            html.contains(r#"<tr class="best"><td class="num">1</td>"#),
            "{html}"
        );
        assert!(html.contains("1.000e-4") && html.contains("0.7000"));
        assert!(html.contains("&lt;1.2&gt;"), "reasons are escaped");
        assert!(html.contains("<svg") && html.contains("best so far"));
        assert!(html.contains("12.5 s (reused)") && html.contains("300 MiB"));
        let minimise = Tuning {
            maximise: false,
            ..t
        };
        assert_eq!(minimise.best(), Some(0));
        assert_eq!(minimise.best_so_far(), [(1.0, 0.4), (2.0, 0.4), (4.0, 0.4)]);
    }
}
