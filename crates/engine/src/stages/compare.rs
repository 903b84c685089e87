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
//! training, then the name. The report renders `compare.json` as it is.

use super::train::read_step_log;
use pipe_schema::FieldError;
use pipe_schema::evaluate::EvaluateReport;

use crate::report::{CurvePoint, Recommendation, Sample, Variant};

pub use glob::{expand_globs, glob_match};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Implementation version (part of every compare stage's fingerprint).
pub const IMPL_VERSION: u32 = 1;

/// The compare options.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// The variants, one by one or by glob.
    pub variants: Vec<VariantEntry>,
    /// The metric the recommendation optimises.
    #[serde(default)]
    pub metric: Metric,
    /// Higher or lower wins (default: the metric's natural direction).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Peak training memory limit, GiB.
    #[serde(default)]
    pub max_memory_gb: Option<f64>,
    /// Training time limit, minutes.
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// The out folder (`compare.json`, `metrics.json`).
    pub out: PathBuf,
}

impl CompareConfig {
    /// The recommendation's criteria.
    pub fn criteria(&self) -> Criteria {
        Criteria {
            metric: self.metric,
            direction: self.direction,
            max_memory_gb: self.max_memory_gb,
            max_minutes: self.max_minutes,
        }
    }
}

/// One `variants` entry: `{name, train, eval}` or `{glob, eval}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantEntry {
    /// The variant's name (with `train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A train stage's out_dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
    /// Train out_dirs matching this pattern, among the pipeline's outs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// An evaluate stage's out file (with `glob`, `{dir}` is the match's last segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
}

impl VariantEntry {
    fn check(&self) -> Result<(), String> {
        match (&self.train, &self.glob) {
            (Some(_), None) if self.name.is_some() => Ok(()),
            (Some(t), None) => Err(format!("the variant `{t}` needs a `name`")),
            (None, Some(g)) if self.name.is_some() => Err(format!(
                "the glob `{g}` names its variants after their stages; drop `name`"
            )),
            (None, Some(g)) if g.trim().is_empty() => Err("a `glob` is empty".into()),
            (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => Err("a variant has `train` or `glob`, not both".into()),
            (None, None) => Err("a variant needs `train` (with `name`) or `glob`".into()),
        }
    }
}

/// The metric a recommendation optimises.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Held-out exact match after fine-tuning.
    #[default]
    ExactMatch,
    /// Final validation loss.
    ValidLoss,
    /// Loss-carrying tokens trained per second.
    TokensPerSecond,
    /// Training wall time.
    TrainSeconds,
    /// Peak training memory.
    PeakMemory,
    /// Adapter size on disk.
    AdapterBytes,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::ExactMatch => "held-out exact match",
            Metric::ValidLoss => "validation loss",
            Metric::TokensPerSecond => "trained tokens/s",
            Metric::TrainSeconds => "training time (s)",
            Metric::PeakMemory => "peak memory (GiB)",
            Metric::AdapterBytes => "adapter size (MiB)",
        }
    }

    /// The variant's value, in the unit of [`Metric::label`].
    pub fn value(self, v: &Variant) -> Option<f64> {
        let known = |x: f64| (x > 0.0).then_some(x);
        match self {
            Metric::ExactMatch => v.accuracy_after,
            Metric::ValidLoss => v.valid_loss,
            Metric::TokensPerSecond => known(v.trained_tokens_per_second),
            Metric::TrainSeconds => known(v.train_seconds),
            Metric::PeakMemory => known(v.peak_memory_bytes as f64 / GIB),
            Metric::AdapterBytes => known(v.adapter_bytes as f64 / MIB),
        }
    }

    fn missing(self) -> &'static str {
        match self {
            Metric::ExactMatch => "no exact match (no evaluation given)",
            Metric::ValidLoss => "no validation loss (trained without valid_data)",
            _ => "no value for the metric in its metrics.json",
        }
    }

    fn default_direction(self) -> Direction {
        match self {
            Metric::ExactMatch | Metric::TokensPerSecond => Direction::Max,
            _ => Direction::Min,
        }
    }
}

/// Whether higher or lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher wins.
    Max,
    /// Lower wins.
    Min,
}

/// What the recommendation optimises and within which limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// The metric.
    #[serde(default)]
    pub metric: Metric,
    /// Higher or lower wins (default: the metric's natural direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Peak training memory limit, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_gb: Option<f64>,
    /// Training time limit, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_minutes: Option<f64>,
}

impl Criteria {
    /// The direction in force.
    pub fn direction(&self) -> Direction {
        self.direction
            .unwrap_or_else(|| self.metric.default_direction())
    }

    /// Checks the limits.
    pub fn check(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_memory_gb", self.max_memory_gb),
            ("max_minutes", self.max_minutes),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(format!("`{key}` must be a positive number"));
            }
        }
        Ok(())
    }
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Where a variant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// The pick.
    Recommended,
    /// Met the constraints, ranked lower.
    RankedLower,
    /// Broke a constraint or lacked the metric.
    Excluded,
}

/// One variant's place in the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The variant.
    pub variant: String,
    /// Where it stands.
    pub standing: Standing,
    /// 1 for the pick, 2 for the runner-up, ...; none when excluded.
    pub rank: Option<usize>,
    /// Its metric value.
    pub value: Option<f64>,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
}

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
}

/// The `compare` kind.
pub struct Compare;

impl super::StageKind for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }
    fn impl_version(&self) -> u32 {
        1
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
            samples.extend(eval.samples.into_iter().map(|s| Sample {
                variant: name.clone(),
                prompt: s.prompt,
                expected: s.expected,
                before: s.before,
                after: s.after,
            }));
        }
        variants.push(variant);
    }
    let criteria = config.criteria();
    let (ranking, recommendation) = recommend(&variants, &criteria);
    let comparison = Comparison {
        direction: criteria.direction(),
        criteria,
        variants,
        ranking,
        recommendation,
        samples,
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
        },
        eval,
    ))
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Why `winner` goes before `loser` when their metric ties (the sort's tie-break order).
fn tie_break(winner: &Variant, loser: &Variant) -> String {
    let gib = |v: &Variant| v.peak_memory_bytes as f64 / GIB;
    if winner.peak_memory_bytes != loser.peak_memory_bytes {
        format!(
            "its lower peak memory ({:.2} vs {:.2} GiB)",
            gib(winner),
            gib(loser)
        )
    } else if winner.train_seconds != loser.train_seconds {
        format!(
            "its shorter training ({:.1} vs {:.1} s)",
            winner.train_seconds, loser.train_seconds
        )
    } else {
        "its name, as peak memory and training time are equal too".into()
    }
}

fn tied(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Ranks the variants under the criteria and picks the best, with reasons for the pick
/// and for every other variant.
pub fn recommend(variants: &[Variant], c: &Criteria) -> (Vec<Ranked>, Recommendation) {
    let direction = c.direction();
    let label = c.metric.label();
    let gib = |v: &Variant| v.peak_memory_bytes as f64 / GIB;
    let mut eligible: Vec<(&Variant, f64)> = Vec::new();
    let mut excluded: Vec<Ranked> = Vec::new();
    for v in variants {
        let mut why = Vec::new();
        if let Some(limit) = c.max_memory_gb
            && gib(v) > limit
        {
            why.push(format!(
                "peak memory {:.2} GiB exceeds max_memory_gb = {limit}",
                gib(v)
            ));
        }
        if let Some(limit) = c.max_minutes
            && v.train_seconds > limit * 60.0
        {
            why.push(format!(
                "training took {:.1} min, over max_minutes = {limit}",
                v.train_seconds / 60.0
            ));
        }
        let value = c.metric.value(v);
        if value.is_none() {
            why.push(c.metric.missing().to_owned());
        }
        match value {
            Some(x) if why.is_empty() => eligible.push((v, x)),
            _ => excluded.push(Ranked {
                variant: v.name.clone(),
                standing: Standing::Excluded,
                rank: None,
                value,
                reasons: why,
            }),
        }
    }
    let better = |a: f64, b: f64| -> Ordering {
        match direction {
            Direction::Max => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
            Direction::Min => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        }
    };
    eligible.sort_by(|(a, x), (b, y)| {
        if tied(*x, *y) {
            a.peak_memory_bytes
                .cmp(&b.peak_memory_bytes)
                .then(a.train_seconds.total_cmp(&b.train_seconds))
                .then(a.name.cmp(&b.name))
        } else {
            better(*x, *y)
        }
    });
    let word = match direction {
        Direction::Max => "highest",
        Direction::Min => "lowest",
    };
    let mut ranking = Vec::new();
    let mut reasons = Vec::new();
    if let Some(&(best, value)) = eligible.first() {
        let mut first = format!("{word} {label}: {value:.3}");
        if c.metric == Metric::ExactMatch
            && let Some(before) = best.accuracy_before
        {
            first.push_str(&format!(" (base model {before:.3})"));
        }
        reasons.push(first);
        if let Some(&(runner, _)) = eligible.get(1).filter(|(_, y)| tied(value, *y)) {
            reasons.push(format!(
                "tied with {} on {label}; chosen for {}",
                runner.name,
                tie_break(best, runner)
            ));
        }
        if let Some(g) = c.max_memory_gb {
            reasons.push(format!(
                "peak memory {:.2} GiB within max_memory_gb = {g}",
                gib(best)
            ));
        }
        if let Some(m) = c.max_minutes {
            reasons.push(format!(
                "trained in {:.1} min within max_minutes = {m}",
                best.train_seconds / 60.0
            ));
        }
        for (k, &(v, x)) in eligible.iter().enumerate() {
            let why = if k == 0 {
                reasons.clone()
            } else if tied(x, value) {
                let ahead = eligible[k - 1].0;
                vec![format!(
                    "tied on {label} ({x:.3}); {} was preferred for {}",
                    ahead.name,
                    tie_break(ahead, v)
                )]
            } else {
                vec![format!("{label} {x:.3} vs {value:.3} for {}", best.name)]
            };
            ranking.push(Ranked {
                variant: v.name.clone(),
                standing: if k == 0 {
                    Standing::Recommended
                } else {
                    Standing::RankedLower
                },
                rank: Some(k + 1),
                value: Some(x),
                reasons: why,
            });
        }
    } else if variants.is_empty() {
        reasons.push("there are no variants to compare".into());
    } else {
        reasons.push(format!(
            "none of the {} variants meets the constraints with a {label}",
            variants.len()
        ));
    }
    let others = ranking
        .iter()
        .skip(1)
        .map(|r| {
            format!(
                "{} ranked {}: {}",
                r.variant,
                ordinal(r.rank.unwrap_or(0)),
                r.reasons.join("; ")
            )
        })
        .chain(
            excluded
                .iter()
                .map(|r| format!("{} excluded: {}", r.variant, r.reasons.join("; "))),
        )
        .collect();
    let recommendation = Recommendation {
        variant: eligible.first().map(|(v, _)| v.name.clone()),
        reasons,
        others,
    };
    ranking.extend(excluded);
    (ranking, recommendation)
}

mod glob;
#[cfg(test)]
mod tests;
