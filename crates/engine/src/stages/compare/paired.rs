//! The recommendation with confidence ([`decide`]): when the metric is exact match and the
//! evaluations list their per-example results, the variant with the highest exact match is
//! tested against every other eligible variant on the examples both were scored on (exact
//! McNemar, and the difference's 95% interval; [`crate::stats`]).
//!
//! A difference the data cannot tell from noise is not a reason to pay more: the pick is
//! the *cheapest* of the top variant and every variant not distinguishable from it at the
//! 5% level, and the reasons say so with the numbers. Cheaper ([`cheaper`]) means, in this
//! order:
//!
//! 1. the smaller adapter on disk: fewer trainable parameters, what is stored, shipped
//!    and served (a full fine-tune's "adapter" is the whole model);
//! 2. the shorter training;
//! 3. the lower peak training memory;
//! 4. the name, so the choice is deterministic.
//!
//! Each pair is tested on its own at 5%, without a correction for testing several: the
//! fallback only ever moves the pick to a cheaper variant whose difference from the top
//! one is within noise, so testing more variants makes it more cautious, not less. A
//! variant without per-example results (an evaluate out written before they were recorded)
//! is ranked by its point estimate alone, and the reasons say that it was not tested.

use super::config::{Criteria, GIB, MIB, Metric};
use super::rank::{Ranked, Standing, limit_reasons, others, recommend};
use crate::report::quality::{PairedTest, Quality, VariantAnalysis, rate_text};
use crate::report::{Recommendation, Variant};
use pipe_schema::evaluate::{CategoryScore, ExampleResult};
use std::cmp::Ordering;

/// One variant's evaluation, as the decision reads it.
#[derive(Debug, Clone, Copy)]
pub struct Evaluated<'a> {
    /// The variant's name.
    pub variant: &'a str,
    /// Exact match per category.
    pub categories: &'a [CategoryScore],
    /// Every scored example.
    pub results: &'a [ExampleResult],
}

/// The ranking, the recommendation and the error analysis behind them.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Every variant's standing, best first, excluded last.
    pub ranking: Vec<Ranked>,
    /// The pick and why.
    pub recommendation: Recommendation,
    /// Per-variant categories and mistakes, and the paired tests.
    pub quality: Quality,
}

/// Ranks and recommends as [`recommend`] does, then, for exact match, applies the paired
/// tests and the fallback to the cheaper variant described in the module documentation.
pub fn decide(variants: &[Variant], evals: &[Evaluated<'_>], c: &Criteria) -> Decision {
    let (ranking, recommendation) = recommend(variants, c);
    let mut decision = Decision {
        ranking,
        recommendation,
        quality: Quality {
            variants: evals
                .iter()
                .filter(|e| !e.results.is_empty())
                .map(|e| VariantAnalysis::of(e.variant, e.categories, e.results))
                .collect(),
            paired: Vec::new(),
        },
    };
    if c.metric != Metric::ExactMatch || decision.recommendation.variant.is_none() {
        return decision;
    }
    let results_of = |name: &str| {
        evals
            .iter()
            .find(|e| e.variant == name)
            .map(|e| e.results)
            .filter(|r| !r.is_empty())
    };
    let variant_of = |name: &str| variants.iter().find(|v| v.name == name);
    let top = decision.ranking[0].variant.clone();
    let lower: Vec<String> = decision
        .ranking
        .iter()
        .filter(|r| r.standing == Standing::RankedLower)
        .map(|r| r.variant.clone())
        .collect();
    if lower.is_empty() {
        return decision;
    }
    let Some(top_results) = results_of(&top) else {
        decision.recommendation.reasons.push(format!(
            "no paired test: {top}'s evaluation lists no per-example results (rerun its evaluate stage)"
        ));
        return decision;
    };
    let mut untested = Vec::new();
    for name in &lower {
        match results_of(name).and_then(|rb| PairedTest::of(&top, top_results, name, rb)) {
            Some(t) => decision.quality.paired.push(t),
            None => untested.push(name.clone()),
        }
    }
    // The candidates: the top variant and every one the data cannot tell from it.
    let pick = std::iter::once(top.as_str())
        .chain(
            decision
                .quality
                .paired
                .iter()
                .filter(|t| !t.distinguishable)
                .map(|t| t.b.as_str()),
        )
        .filter_map(variant_of)
        .min_by(|a, b| cheaper(a, b))
        .map(|v| v.name.clone())
        .unwrap_or_else(|| top.clone());
    explain(&mut decision, &top, &pick, variants, c, &untested);
    decision
}

/// Rewrites the reasons (and, when the pick moved, the order) to say what the tests found.
fn explain(
    d: &mut Decision,
    top: &str,
    pick: &str,
    variants: &[Variant],
    c: &Criteria,
    untested: &[String],
) {
    let variant_of = |name: &str| variants.iter().find(|v| v.name == name).expect("ranked");
    let test_of = |name: &str| d.quality.paired.iter().find(|t| t.b == name).cloned();
    let label = c.metric.label();
    let (top_v, pick_v) = (variant_of(top), variant_of(pick));
    let mut reasons = Vec::new();
    if pick == top {
        // The tests replace the exact-tie rule's sentence: a tie is one case of "not
        // distinguishable", settled by cost.
        reasons.extend(
            d.recommendation
                .reasons
                .iter()
                .filter(|r| !r.starts_with("tied with "))
                .cloned(),
        );
        for t in &d.quality.paired {
            reasons.push(if t.distinguishable {
                format!(
                    "better than {} at 95% on the same examples: {}",
                    t.b,
                    t.numbers()
                )
            } else {
                format!(
                    "not distinguishable from {} at 95% ({}); {top} is also the cheaper: {}",
                    t.b,
                    t.numbers(),
                    cost_reason(top_v, variant_of(&t.b))
                )
            });
        }
    } else {
        let t = test_of(pick).expect("a moved pick was tested");
        reasons.push(format!(
            "{label} {} for {pick} vs {} for {top}: not distinguishable at 95% on the same examples ({})",
            rate_text(&t.b_rate),
            rate_text(&t.a_rate),
            t.numbers()
        ));
        reasons.push(format!(
            "so the cheaper one: {pick} has {}",
            cost_reason(pick_v, top_v)
        ));
        reasons.extend(limit_reasons(pick_v, c));
    }
    for name in untested {
        reasons.push(format!(
            "{name} was not tested against {top}: its evaluation lists no per-example results shared with {top}'s"
        ));
    }
    d.recommendation.reasons = reasons;
    d.recommendation.variant = Some(pick.to_owned());

    // The ranking: the pick first, the others in their metric order.
    let (mut eligible, excluded): (Vec<Ranked>, Vec<Ranked>) = d
        .ranking
        .drain(..)
        .partition(|r| r.standing != Standing::Excluded);
    if let Some(i) = eligible.iter().position(|r| r.variant == pick) {
        let moved = eligible.remove(i);
        eligible.insert(0, moved);
    }
    for (k, r) in eligible.iter_mut().enumerate() {
        r.rank = Some(k + 1);
        if k == 0 {
            r.standing = Standing::Recommended;
            r.reasons = d.recommendation.reasons.clone();
            continue;
        }
        r.standing = Standing::RankedLower;
        let v = variant_of(&r.variant);
        r.reasons = match test_of(&r.variant) {
            _ if r.variant == top => {
                let t = test_of(pick).expect("a moved pick was tested");
                vec![format!(
                    "highest {label} ({}), but not distinguishable from {pick} at 95% ({}), and {pick} has {}",
                    rate_text(&t.a_rate),
                    t.numbers(),
                    cost_reason(pick_v, top_v)
                )]
            }
            Some(t) if t.distinguishable => vec![format!(
                "{label} {} vs {} for {top}: worse at 95% ({})",
                rate_text(&t.b_rate),
                rate_text(&t.a_rate),
                t.numbers()
            )],
            Some(t) => vec![format!(
                "{label} {} vs {} for {top}, not distinguishable at 95% ({}); {pick} has {}",
                rate_text(&t.b_rate),
                rate_text(&t.a_rate),
                t.numbers(),
                cost_reason(pick_v, v)
            )],
            None => {
                let mut why = r.reasons.clone();
                why.push("not tested: no per-example results".into());
                why
            }
        };
    }
    d.recommendation.others = others(&eligible, &excluded);
    eligible.extend(excluded);
    d.ranking = eligible;
}

/// Cheaper first: the smaller adapter, the shorter training, the lower peak memory, then
/// the name (see the module documentation).
pub fn cheaper(a: &Variant, b: &Variant) -> Ordering {
    a.adapter_bytes
        .cmp(&b.adapter_bytes)
        .then(a.train_seconds.total_cmp(&b.train_seconds))
        .then(a.peak_memory_bytes.cmp(&b.peak_memory_bytes))
        .then(a.name.cmp(&b.name))
}

/// What makes `winner` cheaper than `loser`, in words: the first criterion that differs.
pub fn cost_reason(winner: &Variant, loser: &Variant) -> String {
    if winner.adapter_bytes != loser.adapter_bytes {
        format!(
            "the smaller adapter ({:.2} vs {:.2} MiB)",
            winner.adapter_bytes as f64 / MIB,
            loser.adapter_bytes as f64 / MIB
        )
    } else if winner.train_seconds != loser.train_seconds {
        format!(
            "the shorter training ({:.1} vs {:.1} s, adapters of equal size)",
            winner.train_seconds, loser.train_seconds
        )
    } else if winner.peak_memory_bytes != loser.peak_memory_bytes {
        format!(
            "the lower peak memory ({:.2} vs {:.2} GiB, equal adapter size and training time)",
            winner.peak_memory_bytes as f64 / GIB,
            loser.peak_memory_bytes as f64 / GIB
        )
    } else {
        "the same cost; chosen by name".into()
    }
}
