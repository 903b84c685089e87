//! Self-contained HTML reports of a pipeline run: one file with inline CSS and inline SVG
//! charts, no scripts and no network, so it opens anywhere, offline, years later.
//!
//! The report stage gathers a [`ReportData`] from the run's metrics files; [`render`]
//! turns it into HTML with the minijinja template in `templates/report.html`;
//! [`write_report`] writes it atomically and refreshes `reports/index.html`.

pub mod monitoring;
pub mod parallel;
pub mod quality;
pub mod svg;
pub mod tuning;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a stage fared in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// It executed.
    Ran,
    /// Its outputs were up to date.
    Cached,
    /// Its outputs came back from the run cache.
    Restored,
    /// It failed.
    Failed,
    /// It did not run because something upstream failed.
    Skipped,
}

impl StageStatus {
    /// The word people read (and the report's CSS class).
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Restored => "restored",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
        }
    }
}

/// One stage of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    /// The stage name (matrix stages include their values).
    pub name: String,
    /// Its kind (`train`, `cmd`, ...).
    pub kind: String,
    /// What happened.
    pub status: StageStatus,
    /// Wall time when it ran.
    pub seconds: Option<f64>,
}

/// One data split's statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataSplit {
    /// `train`, `valid` or `test`.
    pub split: String,
    /// Examples.
    pub examples: usize,
    /// Mean length in characters.
    pub mean_chars: usize,
    /// Longest example in characters.
    pub max_chars: usize,
    /// Tokens after tokenization, when known.
    pub tokens: Option<u64>,
    /// Tokens that carry loss, when known.
    #[serde(default)]
    pub loss_tokens: Option<u64>,
    /// Examples longer than the training's `max_seq_len`, when known.
    #[serde(default)]
    pub truncated: Option<usize>,
}

/// A point of a loss curve.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimizer step.
    pub step: f64,
    /// Loss at that step.
    pub loss: f64,
}

/// One trained variant (a method, or a matrix point of a sweep).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variant {
    /// Its name, e.g. `train@method=qlora,rank=8`.
    pub name: String,
    /// lora, qlora, dora or full.
    pub method: String,
    /// Training loss by step.
    pub train_curve: Vec<CurvePoint>,
    /// Validation loss by step.
    pub valid_curve: Vec<CurvePoint>,
    /// Training wall time.
    pub train_seconds: f64,
    /// Peak memory during training.
    pub peak_memory_bytes: u64,
    /// Loss-carrying tokens trained per second.
    pub trained_tokens_per_second: f64,
    /// Size of the saved adapter (or model, for full fine-tuning).
    pub adapter_bytes: u64,
    /// Final validation loss.
    pub valid_loss: Option<f64>,
    /// Held-out accuracy of the base model (before).
    pub accuracy_before: Option<f64>,
    /// Held-out accuracy after fine-tuning.
    pub accuracy_after: Option<f64>,
    /// `accuracy_before` with its 95% interval and counts (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_before_ci: Option<pipe_schema::evaluate::Rate>,
    /// `accuracy_after` with its 95% interval and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_after_ci: Option<pipe_schema::evaluate::Rate>,
}

/// The compare stage's pick, with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The chosen variant's name; none when no variant meets the constraints.
    pub variant: Option<String>,
    /// Why, one sentence each (constraints met, metric, trade-offs).
    pub reasons: Vec<String>,
    /// Why each other variant ranked lower or was excluded, one sentence each.
    #[serde(default)]
    pub others: Vec<String>,
}

/// A sample generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// The variant that generated `after`.
    pub variant: String,
    /// The prompt.
    pub prompt: String,
    /// The reference answer.
    pub expected: String,
    /// The base model's answer.
    pub before: String,
    /// The fine-tuned model's answer.
    pub after: String,
}

/// Everything a report shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportData {
    /// The pipeline's name.
    pub pipeline: String,
    /// When the run finished (RFC 3339).
    pub created: String,
    /// Stages in run order.
    pub stages: Vec<StageRun>,
    /// DAG edges as indexes into `stages` (from → to).
    pub edges: Vec<(usize, usize)>,
    /// Data statistics per split.
    pub data: Vec<DataSplit>,
    /// Trained variants.
    pub variants: Vec<Variant>,
    /// The recommendation, when a compare stage made one.
    pub recommendation: Option<Recommendation>,
    /// Sample generations.
    pub samples: Vec<Sample>,
    /// Hardware and versions as `(name, value)` rows.
    pub environment: Vec<(String, String)>,
    /// A tune stage's trials, when the report names one (`tune:`).
    #[serde(default)]
    pub tuning: Option<tuning::Tuning>,
    /// A monitor stage's night, when the report names one (`monitor:`).
    #[serde(default)]
    pub monitoring: Option<crate::monitor::night::Report>,
    /// Error analysis: per-category exact match, wrong answers, paired tests.
    #[serde(default)]
    pub quality: quality::Quality,
}

const TEMPLATE: &str = include_str!("templates/report.html");
const INDEX_TEMPLATE: &str = include_str!("templates/index.html");

/// Renders the report as one HTML document.
pub fn render(data: &ReportData) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("report.html", TEMPLATE)?;
    let charts = Charts::of(data);
    let ran = data
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .count();
    let reused = data
        .stages
        .iter()
        .filter(|s| matches!(s.status, StageStatus::Cached | StageStatus::Restored))
        .count();
    env.get_template("report.html")?
        .render(minijinja::context! {
            data => data,
            charts => charts,
            ran => ran,
            reused => reused,
            stage_class => data.stages.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(),
            tuning_html => data.tuning.as_ref().map(tuning::section),
            monitoring_html => data.monitoring.as_ref().map(monitoring::section),
            quality_html => quality_html(data),
            accuracy_text => accuracy_text(&data.variants),
        })
}

#[derive(Serialize)]
struct Charts {
    dag: String,
    loss: Option<String>,
    time: Option<String>,
    memory: Option<String>,
    throughput: Option<String>,
    accuracy: Option<String>,
}

impl Charts {
    fn of(data: &ReportData) -> Self {
        let nodes: Vec<svg::DagNode> = data
            .stages
            .iter()
            .map(|s| svg::DagNode {
                name: s.name.clone(),
                status: s.status.as_str().to_owned(),
            })
            .collect();
        let v = &data.variants;
        let some = |cond: bool, f: &dyn Fn() -> String| cond.then(f);
        let loss_series: Vec<svg::Series> = v
            .iter()
            .flat_map(|var| {
                let curve = |c: &[CurvePoint]| c.iter().map(|p| (p.step, p.loss)).collect();
                [
                    svg::Series {
                        label: format!("{} train", var.name),
                        points: curve(&var.train_curve),
                        dashed: false,
                    },
                    svg::Series {
                        label: format!("{} valid", var.name),
                        points: curve(&var.valid_curve),
                        dashed: true,
                    },
                ]
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let bars = |f: &dyn Fn(&Variant) -> f64| -> Vec<(String, f64)> {
            v.iter().map(|x| (x.name.clone(), f(x))).collect()
        };
        let accuracy: Vec<(String, f64, f64)> = v
            .iter()
            .filter_map(|x| Some((x.name.clone(), x.accuracy_before?, x.accuracy_after?)))
            .collect();
        let intervals = accuracy_intervals(v);
        Charts {
            dag: svg::dag(&nodes, &data.edges),
            loss: some(!loss_series.is_empty(), &|| {
                svg::line_chart(&loss_series, "step", "loss")
            }),
            time: some(!v.is_empty(), &|| {
                svg::bar_chart(&bars(&|x| x.train_seconds), "s")
            }),
            memory: some(!v.is_empty(), &|| {
                svg::bar_chart(
                    &bars(&|x| x.peak_memory_bytes as f64 / (1u64 << 20) as f64),
                    "MiB",
                )
            }),
            throughput: some(!v.is_empty(), &|| {
                svg::bar_chart(&bars(&|x| x.trained_tokens_per_second), "tok/s")
            }),
            accuracy: some(!accuracy.is_empty(), &|| match &intervals {
                Some(bars) => {
                    svg::paired_bars_with_intervals(bars, ("base model", "fine-tuned"), "accuracy")
                }
                None => svg::paired_bars(&accuracy, ("base model", "fine-tuned"), "accuracy"),
            }),
        }
    }
}

/// Every variant's accuracy before and after with its interval, when every evaluated
/// variant has them (the chart then draws error bars); `None` otherwise.
fn accuracy_intervals(
    variants: &[Variant],
) -> Option<
    Vec<(
        String,
        pipe_schema::evaluate::Rate,
        pipe_schema::evaluate::Rate,
    )>,
> {
    let evaluated: Vec<&Variant> = variants
        .iter()
        .filter(|x| x.accuracy_before.is_some() && x.accuracy_after.is_some())
        .collect();
    evaluated
        .iter()
        .map(|x| Some((x.name.clone(), x.accuracy_before_ci?, x.accuracy_after_ci?)))
        .collect()
}

/// The comparison table's accuracy cell per variant: `0.000 [0.000, 0.037] → 0.810
/// [0.722, 0.875]` with intervals, the bare values without, `—` without an evaluation.
fn accuracy_text(variants: &[Variant]) -> Vec<String> {
    variants
        .iter()
        .map(|v| match (v.accuracy_before_ci, v.accuracy_after_ci) {
            (Some(b), Some(a)) => {
                format!("{} → {}", quality::rate_text(&b), quality::rate_text(&a))
            }
            _ => match (v.accuracy_before, v.accuracy_after) {
                (Some(b), Some(a)) => format!("{b:.3} → {a:.3}"),
                _ => "—".into(),
            },
        })
        .collect()
}

/// The error-analysis section, when there is anything to show.
fn quality_html(data: &ReportData) -> Option<String> {
    (!data.quality.is_empty()).then(|| quality::section(&data.quality))
}

/// Writes `html` to `reports_dir/<name>.html` atomically (a reader never sees half a
/// report) and rewrites `reports_dir/index.html` to list every report there.
pub fn write_report(reports_dir: &Path, name: &str, html: &str) -> anyhow::Result<PathBuf> {
    fs_err::create_dir_all(reports_dir)?;
    let path = reports_dir.join(format!("{name}.html"));
    crate::atomic_write::write_atomic(&path, html.as_bytes())?;
    write_index(reports_dir)?;
    Ok(path)
}

#[derive(Serialize)]
struct IndexEntry {
    file: String,
    modified: String,
    #[serde(skip)]
    sort_key: std::time::SystemTime,
}

fn write_index(reports_dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<IndexEntry> = fs_err::read_dir(reports_dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            (file.ends_with(".html") && file != "index.html").then(|| IndexEntry {
                modified: humantime::format_rfc3339_seconds(modified).to_string(),
                sort_key: modified,
                file,
            })
        })
        .collect();
    entries.sort_by(|a, b| b.sort_key.cmp(&a.sort_key).then(a.file.cmp(&b.file)));
    let mut env = minijinja::Environment::new();
    env.add_template("index.html", INDEX_TEMPLATE)?;
    let html = env
        .get_template("index.html")?
        .render(minijinja::context! { entries => entries })?;
    Ok(crate::atomic_write::write_atomic(
        &reports_dir.join("index.html"),
        html.as_bytes(),
    )?)
}

#[cfg(test)]
mod tests;
