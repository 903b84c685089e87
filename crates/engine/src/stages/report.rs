//! The `report` kind: one self-contained HTML report of the run (see [`crate::report`]),
//! plus `reports/index.html` listing every report.
//!
//! ```yaml
//! with:
//!   title: Quickstart               # defaults to the pipeline's name
//!   data: data/clean/stats.json     # an ingest stage's statistics (optional)
//!   tokens: data/tokens             # a tokenize stage's out: token counts (optional)
//!   compare: runs/compare           # a compare stage's out: table, recommendation, samples
//!   tune: runs/tune/search          # a tune stage's out folder (optional): tuning section
//!   out: reports/quickstart.html
//! ```
//!
//! Without a compare stage, list the variants here instead of `compare` (and optionally
//! `recommend: {metric, max_memory_gb, max_minutes}`); the same rules as the compare kind
//! ([`super::compare::recommend`]) pick the recommendation:
//!
//! ```yaml
//!   variants:                       # each trained variant: its train out_dir and eval file
//!     - {name: lora, train: runs/lora, eval: eval/lora.json}
//!   recommend: {metric: exact_match}
//! ```
//!
//! Token counts come from `tokens` when given, else from the first variant's training
//! metrics (train and valid splits). Which stages ran, were restored or were cached comes
//! from the run journal ([`crate::exec::journal`]) that `pipe run` keeps.

use super::compare;
use crate::report::{self, DataSplit, ReportData, Sample, StageRun, StageStatus};
use std::path::{Path, PathBuf};

/// Implementation version (part of every report stage's fingerprint).
/// 3: parallel coordinates and parameter importance in the tuning section.
/// The `report` kind.
pub struct Report;

impl super::StageKind for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    /// 4: intervals (error bars, table), the error analysis section.
    fn impl_version(&self) -> u32 {
        4
    }
    fn summary(&self) -> &'static str {
        "write a self-contained HTML report of the run"
    }
    fn resolve(
        &self,
        with: &serde_json::Value,
    ) -> Result<super::Resolved, pipe_schema::FieldError> {
        let config: ReportConfig = super::parse_with(with)?;
        config
            .check()
            .map_err(|e| pipe_schema::FieldError::at("", e))?;
        let path = |p: &PathBuf| p.display().to_string();
        let mut deps: Vec<String> = [
            &config.data,
            &config.tokens,
            &config.compare,
            &config.tune,
            &config.monitor,
        ]
        .into_iter()
        .flatten()
        .map(path)
        .collect();
        for v in &config.variants {
            deps.push(path(&v.train));
            deps.extend(v.eval.as_ref().map(path));
        }
        Ok(super::Resolved {
            deps,
            outs: vec![path(&config.out)],
            config: with.clone(),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<ReportConfig>()
    }
    fn outcome(&self, config: &serde_json::Value, root: &Path) -> crate::history::outcome::Outcome {
        let mut o = crate::history::outcome::Outcome::default();
        if let Ok(config) = serde_json::from_value::<ReportConfig>(config.clone()) {
            o.add_artifact(
                root,
                &config.out.display().to_string(),
                crate::history::record::ArtifactRole::Report,
            );
        }
        o
    }
}

pub use pipe_schema::report::{ReportConfig, VariantPaths};

/// Runs a report stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: ReportConfig = super::parse_with(with)?;
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
    let mut data = match &config.data {
        Some(p) => data_splits(&root.join(p))?,
        None => Vec::new(),
    };
    let (variants, recommendation, samples, quality) = match &config.compare {
        Some(dir) => {
            let c = compare::read(&root.join(dir))?;
            (c.variants, Some(c.recommendation), c.samples, c.quality)
        }
        None => {
            let mut variants = Vec::new();
            let mut samples = Vec::new();
            let mut evals = Vec::new();
            for v in &config.variants {
                let (variant, eval) =
                    compare::read_variant(&v.name, &v.train, v.eval.as_deref(), root)?;
                if let Some(eval) = eval {
                    samples.extend(eval.samples.iter().cloned().map(|s| Sample {
                        variant: v.name.clone(),
                        prompt: s.prompt,
                        expected: s.expected,
                        before: s.before,
                        after: s.after,
                    }));
                    evals.push((v.name.clone(), eval));
                }
                variants.push(variant);
            }
            // Without criteria there is no recommendation, but the error analysis stays.
            let criteria = config.recommend.clone().unwrap_or_default();
            let decision = compare::decide_with_reports(&variants, &evals, &criteria);
            let recommendation = config.recommend.as_ref().map(|_| decision.recommendation);
            (variants, recommendation, samples, decision.quality)
        }
    };
    match (&config.tokens, config.variants.first()) {
        (Some(dir), _) => token_counts(&mut data, &root.join(dir).join("metrics.json"))?,
        (None, Some(v)) => train_token_counts(&mut data, &root.join(&v.train).join("metrics.json")),
        (None, None) => {}
    }
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
        quality,
        tuning: match &config.tune {
            Some(dir) => Some(read_tuning(&root.join(dir))?),
            None => None,
        },
        monitoring: match &config.monitor {
            Some(dir) => {
                let path = root.join(dir).join("monitor.json");
                let text = fs_err::read_to_string(&path)?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e} (is `monitor` a monitor stage's out folder?)",
                        path.display()
                    )
                })?)
            }
            None => None,
        },
    })
}

/// A tune stage's `trials.jsonl`, `metrics.json` (the objective and the search space) and
/// `importance.json`. The space and the importance are optional: an older pipe did not
/// write them, and the section says so.
fn read_tuning(dir: &Path) -> anyhow::Result<report::tuning::Tuning> {
    let metrics_path = dir.join("metrics.json");
    let metrics: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&metrics_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", metrics_path.display()))?;
    let axes = match metrics.get("space") {
        None | Some(serde_json::Value::Null) => None,
        Some(space) => {
            let space = crate::tune::space::Space::from_json(space).map_err(|e| {
                anyhow::anyhow!(
                    "{}: `space`: {e} (is `tune` a tune stage's out folder?)",
                    metrics_path.display()
                )
            })?;
            Some(report::tuning::axes_of(&space))
        }
    };
    let importance_path = dir.join("importance.json");
    let importance = if importance_path.is_file() {
        Some(
            serde_json::from_str(&fs_err::read_to_string(&importance_path)?).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (rerun the tune stage to write it again)",
                    importance_path.display()
                )
            })?,
        )
    } else {
        None
    };
    let path = dir.join("trials.jsonl");
    let trials = fs_err::read_to_string(&path)?
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(report::tuning::Tuning {
        objective: metrics["objective"]
            .as_str()
            .unwrap_or("objective")
            .to_owned(),
        maximise: metrics["mode"] == "max",
        trials,
        axes,
        importance,
        best_vs_start: match metrics.get("best_vs_start") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: `best_vs_start`: {e} (rerun the tune stage to write it again)",
                    metrics_path.display()
                )
            })?),
        },
    })
}

/// Fills token counts from a tokenize stage's `metrics.json` (adding splits the ingest
/// statistics did not list).
fn token_counts(data: &mut Vec<DataSplit>, path: &Path) -> anyhow::Result<()> {
    let text = fs_err::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{e} (is `tokens` a tokenize stage's out folder?)"))?;
    let metrics: std::collections::BTreeMap<String, pipe_schema::tokenize::SplitStats> =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (split, s) in metrics {
        let row = match data.iter_mut().position(|d| d.split == split) {
            Some(i) => &mut data[i],
            None => {
                data.push(DataSplit {
                    split: split.clone(),
                    examples: s.examples,
                    mean_chars: 0,
                    max_chars: 0,
                    tokens: None,
                    loss_tokens: None,
                    truncated: None,
                });
                data.last_mut().expect("just pushed")
            }
        };
        row.tokens = Some(s.tokens);
        row.loss_tokens = Some(s.loss_tokens);
        row.truncated = Some(s.truncated);
    }
    Ok(())
}

/// Fills train and valid token counts from a training's `metrics.json`, when it has them
/// (older trainings did not record them: the columns stay empty).
fn train_token_counts(data: &mut [DataSplit], path: &Path) {
    let Ok(metrics) = fs_err::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(serde_json::from_str::<serde_json::Value>(&t)?))
    else {
        return;
    };
    for row in data.iter_mut() {
        let key = |k: &str| metrics[format!("{}_{k}", row.split)].as_u64();
        row.tokens = key("tokens").or(row.tokens);
        row.loss_tokens = key("loss_tokens").or(row.loss_tokens);
        if row.split == "train" {
            row.truncated = metrics["truncated_examples"].as_u64().map(|n| n as usize);
        }
    }
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
                loss_tokens: None,
                truncated: None,
            })
        })
        .collect())
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
    rows.extend(crate::hardware::runtime_versions().iter().cloned());
    rows
}
