//! The `report` kind: one self-contained HTML report of the run (see [`crate::report`]),
//! plus `reports/index.html` listing every report.
//!
//! ```yaml
//! with:
//!   title: Quickstart               # defaults to the pipeline's name
//!   data: data/clean/stats.json     # an ingest stage's statistics (optional)
//!   variants:                       # each trained variant: its train out_dir and eval file
//!     - {name: lora, train: runs/lora, eval: eval/lora.json}
//!   recommend:                      # optional constraints for the recommendation
//!     metric: exact_match           # exact_match (higher wins) or valid_loss (lower wins)
//!     max_memory_gb: 8
//!     max_minutes: 30
//!   tune: runs/tune/search         # a tune stage's out folder (optional): tuning section
//!   out: reports/quickstart.html
//! ```
//!
//! Which stages ran, were restored or were cached comes from the run journal
//! ([`crate::exec::journal`]) that `pipe run` keeps.

use super::evaluate::EvaluateReport;
use crate::mlx::train::log::read_step_log;
use crate::report::{
    self, CurvePoint, DataSplit, Recommendation, ReportData, Sample, StageRun, StageStatus, Variant,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Implementation version (part of every report stage's fingerprint).
pub const IMPL_VERSION: u32 = 1;

/// The report options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The report's heading.
    #[serde(default)]
    pub title: Option<String>,
    /// Ingest statistics.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// Trained variants.
    #[serde(default)]
    pub variants: Vec<VariantPaths>,
    /// Constraints for the recommendation.
    #[serde(default)]
    pub recommend: Option<Constraints>,
    /// A tune stage's `out` folder: adds the tuning section.
    #[serde(default)]
    pub tune: Option<PathBuf>,
    /// The HTML file written.
    pub out: PathBuf,
}

/// Where one variant's results are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantPaths {
    /// Its name in the report.
    pub name: String,
    /// A train stage's out_dir.
    pub train: PathBuf,
    /// An evaluate stage's out file.
    #[serde(default)]
    pub eval: Option<PathBuf>,
}

/// What the recommendation optimises and within which limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// `exact_match` (higher wins) or `valid_loss` (lower wins).
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Peak training memory limit.
    #[serde(default)]
    pub max_memory_gb: Option<f64>,
    /// Training time limit.
    #[serde(default)]
    pub max_minutes: Option<f64>,
}

fn default_metric() -> String {
    "exact_match".into()
}

/// Runs a report stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: ReportConfig = super::parse_with("report", with)?;
    let data = gather(&config, root)?;
    let html = report::render(&data)?;
    let out = root.join(&config.out);
    let dir = out.parent().unwrap_or(root).to_path_buf();
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report")
        .to_owned();
    let written = report::write_report(&dir, &stem, &html)?;
    eprintln!("report: {}", written.display());
    Ok(())
}

/// Collects everything the report shows from the files the other stages wrote.
pub fn gather(config: &ReportConfig, root: &Path) -> anyhow::Result<ReportData> {
    let (stages, edges, pipeline) = run_summary(root);
    let data = match &config.data {
        Some(p) => data_splits(&root.join(p))?,
        None => Vec::new(),
    };
    let mut variants = Vec::new();
    let mut samples = Vec::new();
    for v in &config.variants {
        let (variant, eval) = read_variant(v, root)?;
        if let Some(eval) = eval {
            samples.extend(eval.samples.into_iter().map(|s| Sample {
                variant: v.name.clone(),
                prompt: s.prompt,
                expected: s.expected,
                before: s.before,
                after: s.after,
            }));
        }
        variants.push(variant);
    }
    let recommendation = config
        .recommend
        .as_ref()
        .and_then(|c| recommend(&variants, c));
    Ok(ReportData {
        pipeline: config.title.clone().unwrap_or(pipeline),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        stages,
        edges,
        data,
        variants,
        recommendation,
        samples,
        environment: environment(),
        tuning: match &config.tune {
            Some(dir) => Some(read_tuning(&root.join(dir))?),
            None => None,
        },
    })
}

/// A tune stage's `trials.jsonl` and `metrics.json`.
fn read_tuning(dir: &Path) -> anyhow::Result<crate::report::tuning::Tuning> {
    let metrics: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(dir.join("metrics.json"))?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("metrics.json").display()))?;
    let path = dir.join("trials.jsonl");
    let trials = fs_err::read_to_string(&path)?
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(crate::report::tuning::Tuning {
        objective: metrics["objective"]
            .as_str()
            .unwrap_or("objective")
            .to_owned(),
        maximise: metrics["mode"] == "max",
        trials,
    })
}

fn run_summary(root: &Path) -> (Vec<StageRun>, Vec<(usize, usize)>, String) {
    let Ok((header, events)) = crate::exec::journal::read(root) else {
        return (Vec::new(), Vec::new(), "pipeline".into());
    };
    let me = std::env::var("PIPE_STAGE").unwrap_or_default();
    let stages = header
        .stages
        .iter()
        .map(|(name, kind)| {
            let mut status = if *name == me {
                StageStatus::Ran
            } else {
                StageStatus::Cached
            };
            let mut seconds = None;
            for e in events.iter().filter(|e| e["stage"].as_str() == Some(name)) {
                match e["event"].as_str() {
                    Some("stage-finish") => {
                        status = StageStatus::Ran;
                        seconds = e["duration_ms"].as_f64().map(|ms| ms / 1000.0);
                    }
                    Some("stage-restored") => status = StageStatus::Restored,
                    Some("stage-failed") => status = StageStatus::Failed,
                    Some("stage-skipped") => status = StageStatus::Skipped,
                    _ => {}
                }
            }
            StageRun {
                name: name.clone(),
                kind: kind.clone(),
                status,
                seconds,
            }
        })
        .collect();
    (stages, header.edges, header.pipeline)
}

fn data_splits(path: &Path) -> anyhow::Result<Vec<DataSplit>> {
    let stats: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(path)?)?;
    let splits = stats["splits"].as_object().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no `splits` (is it an ingest stats.json?)",
            path.display()
        )
    })?;
    Ok(["train", "valid", "test"]
        .iter()
        .filter_map(|name| {
            let s = splits.get(*name)?;
            Some(DataSplit {
                split: (*name).to_owned(),
                examples: s["examples"].as_u64().unwrap_or(0) as usize,
                mean_chars: s["chars"]["mean"].as_u64().unwrap_or(0) as usize,
                max_chars: s["chars"]["max"].as_u64().unwrap_or(0) as usize,
                tokens: None,
            })
        })
        .collect())
}

fn read_variant(
    v: &VariantPaths,
    root: &Path,
) -> anyhow::Result<(Variant, Option<EvaluateReport>)> {
    let dir = root.join(&v.train);
    let metrics_path = dir.join("metrics.json");
    let metrics: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&metrics_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", metrics_path.display()))?;
    let log = read_step_log(&dir.join("train_log.jsonl"))?;
    let eval: Option<EvaluateReport> = match &v.eval {
        Some(p) => {
            let path = root.join(p);
            Some(
                serde_json::from_str(&fs_err::read_to_string(&path)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let f = |k: &str| metrics[k].as_f64();
    Ok((
        Variant {
            name: v.name.clone(),
            method: metrics["method"].as_str().unwrap_or("?").to_owned(),
            train_curve: log
                .iter()
                .map(|r| CurvePoint {
                    step: r.step as f64,
                    loss: r.loss,
                })
                .collect(),
            valid_curve: log
                .iter()
                .filter_map(|r| {
                    Some(CurvePoint {
                        step: r.step as f64,
                        loss: r.valid_loss?,
                    })
                })
                .collect(),
            train_seconds: f("seconds").unwrap_or(0.0),
            peak_memory_bytes: f("peak_memory_bytes").unwrap_or(0.0) as u64,
            trained_tokens_per_second: f("trained_tokens_per_second").unwrap_or(0.0),
            adapter_bytes: f("adapter_bytes").unwrap_or(0.0) as u64,
            valid_loss: f("final_valid_loss"),
            accuracy_before: eval.as_ref().map(|e| e.base.exact_match),
            accuracy_after: eval.as_ref().map(|e| e.tuned.exact_match),
        },
        eval,
    ))
}

/// Picks the best variant that meets the constraints, with reasons.
pub fn recommend(variants: &[Variant], c: &Constraints) -> Option<Recommendation> {
    let fits = |v: &Variant| {
        c.max_memory_gb
            .is_none_or(|g| v.peak_memory_bytes as f64 <= g * (1u64 << 30) as f64)
            && c.max_minutes.is_none_or(|m| v.train_seconds <= m * 60.0)
    };
    let score = |v: &Variant| -> Option<f64> {
        match c.metric.as_str() {
            "valid_loss" => v.valid_loss.map(|l| -l),
            _ => v.accuracy_after,
        }
    };
    let eligible: Vec<&Variant> = variants
        .iter()
        .filter(|v| fits(v) && score(v).is_some())
        .collect();
    let best = eligible.iter().copied().max_by(|a, b| {
        score(a)
            .partial_cmp(&score(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    })?;
    let mut reasons = vec![match c.metric.as_str() {
        "valid_loss" => format!(
            "lowest validation loss ({:.3})",
            best.valid_loss.unwrap_or(f64::NAN)
        ),
        _ => format!(
            "highest held-out exact match ({:.3}, base model {:.3})",
            best.accuracy_after.unwrap_or(0.0),
            best.accuracy_before.unwrap_or(0.0)
        ),
    }];
    if let Some(g) = c.max_memory_gb {
        reasons.push(format!(
            "peak memory {:.2} GiB within max_memory_gb = {g}",
            best.peak_memory_bytes as f64 / (1u64 << 30) as f64
        ));
    }
    if let Some(m) = c.max_minutes {
        reasons.push(format!(
            "trained in {:.1} min within max_minutes = {m}",
            best.train_seconds / 60.0
        ));
    }
    let excluded = variants.len() - eligible.len();
    if excluded > 0 {
        reasons.push(format!(
            "{excluded} variant(s) excluded by the constraints or missing the metric"
        ));
    }
    Some(Recommendation {
        variant: best.name.clone(),
        reasons,
    })
}

fn environment() -> Vec<(String, String)> {
    let m = crate::hardware::Machine::detect();
    let mut rows = vec![
        ("pipe".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("platform".to_owned(), format!("{} {}", m.os, m.arch)),
        ("chip".to_owned(), m.chip.clone()),
        ("cores".to_owned(), m.logical_cores.to_string()),
        (
            "memory".to_owned(),
            crate::hardware::gib(m.memory_total_bytes),
        ),
    ];
    if let Ok(v) = crate::mlx::runtime::mlx_version() {
        rows.push(("mlx".to_owned(), v));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, acc: f64, mem_gib: f64, secs: f64) -> Variant {
        Variant {
            name: name.into(),
            method: "lora".into(),
            train_curve: vec![],
            valid_curve: vec![],
            train_seconds: secs,
            peak_memory_bytes: (mem_gib * (1u64 << 30) as f64) as u64,
            trained_tokens_per_second: 1.0,
            adapter_bytes: 1,
            valid_loss: Some(1.0 - acc),
            accuracy_before: Some(0.0),
            accuracy_after: Some(acc),
        }
    }

    #[test]
    fn the_best_variant_within_the_limits_wins_with_reasons() {
        let vs = [
            variant("full", 0.9, 6.0, 600.0),
            variant("lora", 0.8, 1.0, 120.0),
            variant("qlora", 0.7, 0.5, 150.0),
        ];
        let c = Constraints {
            metric: "exact_match".into(),
            max_memory_gb: Some(2.0),
            max_minutes: None,
        };
        let r = recommend(&vs, &c).unwrap();
        assert_eq!(r.variant, "lora");
        assert!(r.reasons[0].contains("0.800"), "{:?}", r.reasons);
        assert!(
            r.reasons
                .iter()
                .any(|x| x.contains("1 variant(s) excluded")),
            "{:?}",
            r.reasons
        );
        let c = Constraints {
            metric: "valid_loss".into(),
            max_memory_gb: None,
            max_minutes: Some(5.0),
        };
        assert_eq!(recommend(&vs, &c).unwrap().variant, "lora");
        let c = Constraints {
            metric: "exact_match".into(),
            max_memory_gb: Some(0.1),
            max_minutes: None,
        };
        assert!(recommend(&vs, &c).is_none(), "nothing fits");
    }
}
