//! The recommendation ([`recommend`]): which variants meet the limits, how the others
//! rank, and a reason for every place.

use super::config::{Criteria, Direction, GIB, Metric};
use crate::report::{Recommendation, Variant};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

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

/// Ranks the variants under the criteria and picks the best, with reasons for the pick
/// and for every other variant.
pub fn recommend(variants: &[Variant], c: &Criteria) -> (Vec<Ranked>, Recommendation) {
    let label = c.metric.label();
    let (mut eligible, excluded) = partition(variants, c);
    sort(&mut eligible, c.direction());
    let (mut ranking, reasons) = match eligible.first() {
        Some(&(best, value)) => {
            let reasons = pick_reasons(best, value, eligible.get(1), c);
            (rank(&eligible, &reasons, label), reasons)
        }
        None if variants.is_empty() => {
            (Vec::new(), vec!["there are no variants to compare".into()])
        }
        None => (
            Vec::new(),
            vec![format!(
                "none of the {} variants meets the constraints with a {label}",
                variants.len()
            )],
        ),
    };
    let recommendation = Recommendation {
        variant: eligible.first().map(|(v, _)| v.name.clone()),
        reasons,
        others: others(&ranking, &excluded),
    };
    ranking.extend(excluded);
    (ranking, recommendation)
}

/// The variants that meet the limits and have the metric (with its value), and the others,
/// excluded with the reasons.
fn partition<'v>(variants: &'v [Variant], c: &Criteria) -> (Vec<(&'v Variant, f64)>, Vec<Ranked>) {
    let gib = |v: &Variant| v.peak_memory_bytes as f64 / GIB;
    let mut eligible = Vec::new();
    let mut excluded = Vec::new();
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
        let value = super::config::metric_value(c.metric, v);
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
    (eligible, excluded)
}

/// Best first; a tie on the metric goes to the lower peak memory, then the shorter
/// training, then the name.
fn sort(eligible: &mut [(&Variant, f64)], direction: Direction) {
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
}

/// Why `best` (with metric `value`) is the pick, given the `runner_up` and the limits.
fn pick_reasons(
    best: &Variant,
    value: f64,
    runner_up: Option<&(&Variant, f64)>,
    c: &Criteria,
) -> Vec<String> {
    let label = c.metric.label();
    let word = match c.direction() {
        Direction::Max => "highest",
        Direction::Min => "lowest",
    };
    let mut first = format!("{word} {label}: {value:.3}");
    if c.metric == Metric::ExactMatch {
        if let Some(r) = &best.accuracy_after_ci {
            first = format!(
                "{word} {label}: {} (95% interval, {} examples)",
                crate::report::quality::rate_text(r),
                r.n
            );
        }
        match (&best.accuracy_before_ci, best.accuracy_before) {
            (Some(r), _) => first.push_str(&format!(
                " (base model {})",
                crate::report::quality::rate_text(r)
            )),
            (None, Some(before)) => first.push_str(&format!(" (base model {before:.3})")),
            (None, None) => {}
        }
    }
    let mut reasons = vec![first];
    if let Some(&(runner, _)) = runner_up.filter(|(_, y)| tied(value, *y)) {
        reasons.push(format!(
            "tied with {} on {label}; chosen for {}",
            runner.name,
            tie_break(best, runner)
        ));
    }
    reasons.extend(limit_reasons(best, c));
    reasons
}

/// That `best` is within the limits, one sentence per limit set.
pub(super) fn limit_reasons(best: &Variant, c: &Criteria) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(g) = c.max_memory_gb {
        reasons.push(format!(
            "peak memory {:.2} GiB within max_memory_gb = {g}",
            best.peak_memory_bytes as f64 / GIB
        ));
    }
    if let Some(m) = c.max_minutes {
        reasons.push(format!(
            "trained in {:.1} min within max_minutes = {m}",
            best.train_seconds / 60.0
        ));
    }
    reasons
}

/// The sorted eligible variants' places: the pick with the `reasons` it won for, each other
/// with why it ranked below.
fn rank(eligible: &[(&Variant, f64)], reasons: &[String], label: &str) -> Vec<Ranked> {
    let (best, value) = eligible[0];
    eligible
        .iter()
        .enumerate()
        .map(|(k, &(v, x))| {
            let why = if k == 0 {
                reasons.to_vec()
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
            Ranked {
                variant: v.name.clone(),
                standing: if k == 0 {
                    Standing::Recommended
                } else {
                    Standing::RankedLower
                },
                rank: Some(k + 1),
                value: Some(x),
                reasons: why,
            }
        })
        .collect()
}

/// One line per variant other than the pick: its rank and why, or why it was excluded.
pub(super) fn others(ranking: &[Ranked], excluded: &[Ranked]) -> Vec<String> {
    ranking
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
        .collect()
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
