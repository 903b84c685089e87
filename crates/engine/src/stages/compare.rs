//! The `compare` kind: gather the results of several trained variants (the expansions of
//! a matrix, or one train stage per method) into one table, and recommend the best one
//! under stated limits, saying why it won and why each other variant lost or was excluded.
//!
//! ```yaml
//! with:
//!   variants:
//!     - {name: lora, train: runs/lora, eval: runs/eval/lora.json}   # one by one, or
//!     - {glob: "runs/sweep/r*", eval: "runs/sweep/eval/{dir}.json"}   # every matching out
//!   metric: exact_match        # exact_match, valid_loss, tokens_per_second, train_seconds,
//!                              # peak_memory, adapter_bytes
//!   direction: max             # default: max for exact_match and tokens_per_second, else min
//!   max_memory_gb: 4           # exclude variants whose training peaked above this
//!   max_minutes: 30            # exclude variants that trained longer
//!   out: runs/compare          # compare.json + metrics.json
//! ```
//!
//! A `glob` is matched, when the pipeline loads, against the outs of the pipeline's other
//! stages (`*` and `?` within one path segment), so the compare stage depends on exactly
//! the stages that wrote them. Each match becomes a variant named after the stage that
//! writes it; `{dir}` in its `eval` is the match's last path segment.
//!
//! The rules of the recommendation ([`recommend`]): a variant is excluded when its peak
//! training memory exceeds `max_memory_gb`, its training took longer than `max_minutes`, or
//! it lacks the metric (no evaluation, no validation data). The others are ranked by the
//! metric; a tie (equal within 1e-9) goes to the lower peak memory, then the shorter
//! training, then the name. With `metric: exact_match` and evaluations that list their
//! per-example results, the top variant is then tested against each other one on the same
//! examples, and when the data cannot tell them apart the cheaper one is recommended
//! ([`decide`]; "cheaper" is defined there). `compare.json` also carries the error analysis
//! (per-category exact match, wrong answers, disagreements; [`crate::report::quality`]).
//! The report renders `compare.json` as it is.

use super::train::read_step_log;
use crate::report::{CurvePoint, Recommendation, Sample, Variant};
use pipe_schema::FieldError;
use pipe_schema::evaluate::EvaluateReport;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use config::{CompareConfig, Criteria, Direction, Metric, VariantEntry};
pub use glob::{expand_globs, glob_match};
pub use paired::{Decision, Evaluated, cheaper, cost_reason, decide};
pub use rank::{Ranked, Standing, recommend};

mod config;
mod glob;
mod paired;
mod rank;

/// `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The criteria applied.
    pub criteria: Criteria,
    /// The direction in force.
    pub direction: Direction,
    /// Every variant's results (the table), in the order given.
    pub variants: Vec<Variant>,
    /// Every variant's standing, best first, excluded last.
    pub ranking: Vec<Ranked>,
    /// The pick and why (no variant when none meets the constraints).
    pub recommendation: Recommendation,
    /// Sample generations of the evaluated variants.
    pub samples: Vec<Sample>,
    /// The recommended variant's train out_dir (what a `deploy` stage serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_train: Option<String>,
    /// Per-category scores, wrong answers, paired tests and disagreements (empty in files
    /// written before they were recorded).
    #[serde(default)]
    pub quality: crate::report::quality::Quality,
}

/// The `compare` kind.
pub struct Compare;

impl super::StageKind for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }
    fn impl_version(&self) -> u32 {
        // 2: compare.json names the recommended variant's train out_dir.
        // 3: intervals, paired tests with the fallback to the cheaper variant, and the
        //    error analysis (`quality`).
        3
    }
    fn summary(&self) -> &'static str {
        "tabulate trained variants and recommend one under constraints"
    }
    fn resolve(&self, with: &serde_json::Value) -> Result<super::Resolved, FieldError> {
        let config = check(with)?;
        Ok(super::Resolved {
            deps: config
                .variants
                .iter()
                .filter(|v| v.glob.is_none())
                .flat_map(|v| [v.train.clone(), v.eval.clone()])
                .flatten()
                .collect(),
            outs: vec![config.out.display().to_string()],
            config: with.clone(),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<CompareConfig>()
    }
    fn outcome(&self, config: &serde_json::Value, root: &Path) -> crate::history::outcome::Outcome {
        use crate::history::{outcome, record::ArtifactRole};
        let mut o = outcome::Outcome::default();
        let Ok(config) = serde_json::from_value::<CompareConfig>(config.clone()) else {
            return o;
        };
        let out = config.out.display().to_string();
        o.add_metrics_file(root, &format!("{out}/metrics.json"), "");
        o.add_artifact(root, &format!("{out}/compare.json"), ArtifactRole::Other);
        let recommended = outcome::read_json(&root.join(&out).join("metrics.json"))
            .and_then(|m| m["recommended"].as_str().map(str::to_owned));
        o.recommended_train_dir = recommended.and_then(|name| {
            config
                .variants
                .iter()
                .find(|v| v.name.as_deref() == Some(&name))
                .and_then(|v| v.train.clone())
        });
        o
    }
}

/// Parses and checks a compare stage's `with:` (globs are expanded later, by
/// [`expand_globs`], once every stage's outs are known).
pub fn check(with: &serde_json::Value) -> Result<CompareConfig, FieldError> {
    let config: CompareConfig = super::parse_with(with)?;
    if config.variants.is_empty() {
        return Err(FieldError::at(
            "variants",
            "is empty; list train out_dirs or a glob",
        ));
    }
    for (i, v) in config.variants.iter().enumerate() {
        v.check()
            .map_err(|e| FieldError::at(&format!("variants.{i}"), e))?;
    }
    config
        .criteria()
        .check()
        .map_err(|e| FieldError::at("", e))?;
    Ok(config)
}

/// Runs a compare stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config = check(with)?;
    let mut variants = Vec::new();
    let mut samples = Vec::new();
    let mut evals = Vec::new();
    for v in &config.variants {
        let (Some(name), Some(train)) = (&v.name, &v.train) else {
            anyhow::bail!(
                "compare stage `with`: the glob {:?} was not expanded",
                v.glob
            );
        };
        let (variant, eval) = read_variant(
            name,
            Path::new(train),
            v.eval.as_deref().map(Path::new),
            root,
        )?;
        if let Some(eval) = eval {
            samples.extend(eval.samples.iter().cloned().map(|s| Sample {
                variant: name.clone(),
                prompt: s.prompt,
                expected: s.expected,
                before: s.before,
                after: s.after,
            }));
            evals.push((name.clone(), eval));
        }
        variants.push(variant);
    }
    let criteria = config.criteria();
    let Decision {
        ranking,
        recommendation,
        quality,
    } = decide_with_reports(&variants, &evals, &criteria);
    let recommended_train = recommendation.variant.as_ref().and_then(|best| {
        config
            .variants
            .iter()
            .find(|v| v.name.as_ref() == Some(best))
            .and_then(|v| v.train.clone())
    });
    let comparison = Comparison {
        recommended_train,
        direction: criteria.direction(),
        criteria,
        variants,
        ranking,
        recommendation,
        samples,
        quality,
    };
    let out = root.join(&config.out);
    super::write_json(&out.join("compare.json"), &comparison)?;
    let best = comparison.recommendation.variant.as_ref();
    let metrics = serde_json::json!({
        "variants": comparison.variants.len(),
        "eligible": comparison.ranking.iter().filter(|r| r.standing != Standing::Excluded).count(),
        "recommended": best,
        "metric": config.metric,
        "value": comparison.ranking.first().filter(|_| best.is_some()).and_then(|r| r.value),
        // For exact match: the pick's 95% interval, and how many paired tests were run and
        // found no difference (numbers only: history and MLflow keep them).
        "value_ci": best
            .and_then(|b| comparison.variants.iter().find(|v| &v.name == b))
            .filter(|_| config.metric == Metric::ExactMatch)
            .and_then(|v| v.accuracy_after_ci),
        "paired_tests": comparison.quality.paired.len(),
        "indistinguishable": comparison.quality.paired.iter().filter(|t| !t.distinguishable).count(),
    });
    super::write_json(&out.join("metrics.json"), &metrics)?;
    match best {
        Some(b) => eprintln!("recommended: {b}"),
        None => eprintln!("no variant meets the constraints"),
    }
    for line in comparison
        .recommendation
        .reasons
        .iter()
        .chain(&comparison.recommendation.others)
    {
        eprintln!("  {line}");
    }
    Ok(())
}

/// [`decide`] over the variants and the evaluate outs read for them (`(variant, report)`).
pub fn decide_with_reports(
    variants: &[Variant],
    evals: &[(String, EvaluateReport)],
    criteria: &Criteria,
) -> Decision {
    let evaluated: Vec<Evaluated<'_>> = evals
        .iter()
        .map(|(name, e)| Evaluated {
            variant: name,
            categories: &e.categories,
            results: &e.results,
        })
        .collect();
    decide(variants, &evaluated, criteria)
}

/// Reads `compare.json` from a compare stage's out folder (or the file itself).
pub fn read(path: &Path) -> anyhow::Result<Comparison> {
    let file = if path.is_dir() {
        path.join("compare.json")
    } else {
        path.to_path_buf()
    };
    let text = fs_err::read_to_string(&file)?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (is it a compare stage's compare.json?)",
            file.display()
        )
    })
}

/// Reads one variant: the train out_dir's `metrics.json` and step log, and the evaluation.
pub fn read_variant(
    name: &str,
    train: &Path,
    eval: Option<&Path>,
    root: &Path,
) -> anyhow::Result<(Variant, Option<EvaluateReport>)> {
    let dir = root.join(train);
    let metrics_path = dir.join("metrics.json");
    let text = fs_err::read_to_string(&metrics_path)
        .map_err(|e| anyhow::anyhow!("{e} (is `{}` a train stage's out_dir?)", train.display()))?;
    let metrics: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", metrics_path.display()))?;
    let log_path = dir.join("train_log.jsonl");
    let log = if log_path.is_file() {
        read_step_log(&log_path)?
    } else {
        Vec::new()
    };
    let eval: Option<EvaluateReport> = match eval {
        Some(p) => {
            let path = root.join(p);
            Some(
                serde_json::from_str(&fs_err::read_to_string(&path)?).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (is it an evaluate stage's out?)", path.display())
                })?,
            )
        }
        None => None,
    };
    let f = |k: &str| metrics[k].as_f64();
    Ok((
        Variant {
            name: name.to_owned(),
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
            accuracy_before_ci: eval.as_ref().and_then(|e| e.base.exact_match_ci),
            accuracy_after_ci: eval.as_ref().and_then(|e| e.tuned.exact_match_ci),
        },
        eval,
    ))
}

#[cfg(test)]
mod tests;
