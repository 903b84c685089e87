//! Error analysis (issue #20): what a comparison knows beyond one number per variant.
//!
//! - per variant: exact match per category of examples (BIG-bench's `comment`, e.g.
//!   regular and irregular verbs), with 95% intervals, and the examples it got wrong;
//! - per pair of variants tested against each other: the paired test (exact McNemar and
//!   the difference's 95% interval, [`crate::stats`]) and the examples where they
//!   disagree.
//!
//! The compare stage fills these ([`crate::stages::compare`]) from the evaluate outs'
//! per-example results; [`section`] renders them for the report. Lists are capped
//! ([`MAX_LISTED`]) so a report of thousands of examples stays readable; the totals are
//! kept.

use crate::stats::PairedComparison;
use pipe_schema::evaluate::{CategoryScore, ExampleResult, Rate};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Examples listed per variant (wrong answers) and per pair (disagreements).
pub const MAX_LISTED: usize = 20;

/// Everything the error analysis shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Per evaluated variant, in the table's order.
    #[serde(default)]
    pub variants: Vec<VariantAnalysis>,
    /// The paired tests the recommendation used (the top variant against each other).
    #[serde(default)]
    pub paired: Vec<PairedTest>,
}

impl Quality {
    /// Whether there is anything to show.
    pub fn is_empty(&self) -> bool {
        self.variants.is_empty() && self.paired.is_empty()
    }
}

/// One variant's categories and mistakes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantAnalysis {
    /// The variant.
    pub variant: String,
    /// Exact match per category (empty when the data has none).
    #[serde(default)]
    pub categories: Vec<CategoryScore>,
    /// Examples the fine-tuned model got wrong, the first [`MAX_LISTED`].
    #[serde(default)]
    pub wrong: Vec<Listed>,
    /// How many it got wrong in all.
    pub wrong_total: usize,
    /// Examples scored.
    pub scored: usize,
}

impl VariantAnalysis {
    /// The analysis of one evaluation's per-example results.
    pub fn of(variant: &str, categories: &[CategoryScore], results: &[ExampleResult]) -> Self {
        let wrong: Vec<&ExampleResult> = results.iter().filter(|r| !r.tuned_correct).collect();
        Self {
            variant: variant.to_owned(),
            categories: categories.to_vec(),
            wrong_total: wrong.len(),
            wrong: wrong
                .into_iter()
                .take(MAX_LISTED)
                .map(|r| Listed {
                    id: r.id.clone(),
                    category: r.category.clone(),
                    prompt: r.prompt.clone(),
                    expected: r.expected.clone(),
                    answers: vec![r.after.clone()],
                })
                .collect(),
            scored: results.len(),
        }
    }
}

/// An example shown in a list, with one answer per variant concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    /// The example's content-hash id.
    pub id: String,
    /// Its category, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// The reference.
    pub expected: String,
    /// The answers: the variant's (wrong answers), or `a`'s then `b`'s (disagreements).
    pub answers: Vec<String>,
}

/// Two variants compared on the examples both were scored on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// The first variant (the one with the higher exact match).
    pub a: String,
    /// The other.
    pub b: String,
    /// `a`'s exact match on the shared examples, with its interval.
    pub a_rate: Rate,
    /// `b`'s.
    pub b_rate: Rate,
    /// The test: counts, difference `a - b` with its 95% interval, McNemar's p-value.
    pub test: PairedComparison,
    /// Whether the data tell them apart at the 5% level.
    pub distinguishable: bool,
    /// Examples where exactly one of them is right, the first [`MAX_LISTED`]
    /// (answers: `a`'s, then `b`'s).
    #[serde(default)]
    pub disagreements: Vec<Listed>,
}

impl PairedTest {
    /// `a` and `b` on the examples both scored (matched by id; a repeated id pairs its
    /// occurrences in order); `None` when they share no example.
    pub fn of(a: &str, ra: &[ExampleResult], b: &str, rb: &[ExampleResult]) -> Option<Self> {
        let pairs = pair(ra, rb);
        let (ca, cb): (Vec<bool>, Vec<bool>) = pairs
            .iter()
            .map(|(x, y)| (x.tuned_correct, y.tuned_correct))
            .unzip();
        let test = crate::stats::paired_difference(&ca, &cb)?;
        let count = |c: &[bool]| c.iter().filter(|x| **x).count();
        Some(Self {
            a: a.to_owned(),
            b: b.to_owned(),
            a_rate: crate::stats::rate(count(&ca), ca.len())?,
            b_rate: crate::stats::rate(count(&cb), cb.len())?,
            distinguishable: test.distinguishable(),
            test,
            disagreements: pairs
                .iter()
                .filter(|(x, y)| x.tuned_correct != y.tuned_correct)
                .take(MAX_LISTED)
                .map(|(x, y)| Listed {
                    id: x.id.clone(),
                    category: x.category.clone(),
                    prompt: x.prompt.clone(),
                    expected: x.expected.clone(),
                    answers: vec![x.after.clone(), y.after.clone()],
                })
                .collect(),
        })
    }

    /// The test in words: `difference +0.030 [-0.020, +0.080], exact McNemar p = 0.375
    /// (5 vs 2 of 100 examples right under one only)`.
    pub fn numbers(&self) -> String {
        let t = &self.test;
        format!(
            "difference {:+.3} [{:+.3}, {:+.3}], exact McNemar p = {:.3} ({} vs {} of {} examples right under one only)",
            t.difference, t.low, t.high, t.p_value, t.only_a, t.only_b, t.n
        )
    }
}

/// The examples of `a` and `b` with the same id, in `a`'s order.
fn pair<'r>(
    a: &'r [ExampleResult],
    b: &'r [ExampleResult],
) -> Vec<(&'r ExampleResult, &'r ExampleResult)> {
    use std::collections::{HashMap, VecDeque};
    let mut by_id: HashMap<&str, VecDeque<&ExampleResult>> = HashMap::new();
    for r in b {
        by_id.entry(&r.id).or_default().push_back(r);
    }
    a.iter()
        .filter_map(|x| Some((x, by_id.get_mut(x.id.as_str())?.pop_front()?)))
        .collect()
}

/// `0.810 [0.722, 0.875]`.
pub fn rate_text(r: &Rate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", r.value, r.low, r.high)
}

/// The section's HTML (inside the report's `<main>`): per-category tables, the wrong
/// answers, the paired tests and the disagreements. Every text from the data is escaped.
pub fn section(q: &Quality) -> String {
    let e = super::svg::escape;
    let mut html = String::new();
    let with_categories: Vec<&VariantAnalysis> = q
        .variants
        .iter()
        .filter(|v| !v.categories.is_empty())
        .collect();
    if !with_categories.is_empty() {
        html.push_str(r#"<h3 id="categories">Exact match per category (95% intervals)</h3><table><tr><th>variant</th><th>category</th><th class="num">examples</th><th class="num">base model</th><th class="num">fine-tuned</th></tr>"#);
        for v in with_categories {
            for c in &v.categories {
                let _ = write!(
                    html,
                    r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                    e(&v.variant),
                    e(&c.category),
                    c.tuned.n,
                    rate_text(&c.base),
                    rate_text(&c.tuned)
                );
            }
        }
        html.push_str("</table>");
    }
    if !q.paired.is_empty() {
        html.push_str(r#"<h3 id="paired">Paired tests on the same examples</h3><table><tr><th>variants</th><th class="num">exact match</th><th class="num">difference [95%]</th><th class="num">McNemar p</th><th>verdict</th></tr>"#);
        for p in &q.paired {
            let t = &p.test;
            let _ = write!(
                html,
                r#"<tr><td>{} vs {}</td><td class="num">{} vs {}</td><td class="num">{:+.3} [{:+.3}, {:+.3}]</td><td class="num">{:.3}</td><td>{}</td></tr>"#,
                e(&p.a),
                e(&p.b),
                rate_text(&p.a_rate),
                rate_text(&p.b_rate),
                t.difference,
                t.low,
                t.high,
                t.p_value,
                if p.distinguishable {
                    "distinguishable at 95%"
                } else {
                    "not distinguishable at 95%"
                }
            );
        }
        html.push_str("</table>");
    }
    html.push_str(r#"<h3 id="wrong">Examples the fine-tuned model got wrong</h3>"#);
    if q.variants.is_empty() {
        html.push_str(r#"<p class="empty">No per-example results (evaluate outs written before they were recorded).</p>"#);
    }
    for v in &q.variants {
        let _ = write!(
            html,
            r#"<p class="sub">{}: {} of {} wrong{}</p>"#,
            e(&v.variant),
            v.wrong_total,
            v.scored,
            if v.wrong_total > v.wrong.len() {
                format!(", the first {} listed", v.wrong.len())
            } else {
                String::new()
            }
        );
        if !v.wrong.is_empty() {
            listed_table(&mut html, &v.wrong, &["answer"]);
        }
    }
    for p in &q.paired {
        let total = p.test.only_a + p.test.only_b;
        let _ = write!(
            html,
            r#"<h3>Where {} and {} disagree</h3><p class="sub">{} examples right under one only{}</p>"#,
            e(&p.a),
            e(&p.b),
            total,
            if total > p.disagreements.len() {
                format!(", the first {} listed", p.disagreements.len())
            } else {
                String::new()
            }
        );
        if !p.disagreements.is_empty() {
            listed_table(&mut html, &p.disagreements, &[p.a.as_str(), p.b.as_str()]);
        }
    }
    html
}

fn listed_table(html: &mut String, rows: &[Listed], columns: &[&str]) {
    let e = super::svg::escape;
    html.push_str("<table><tr><th>prompt</th><th>category</th><th>expected</th>");
    for c in columns {
        let _ = write!(html, "<th>{}</th>", e(c));
    }
    html.push_str("</tr>");
    for r in rows {
        let _ = write!(
            html,
            "<tr><td><pre>{}</pre></td><td>{}</td><td><pre>{}</pre></td>",
            e(&r.prompt),
            e(r.category.as_deref().unwrap_or("—")),
            e(&r.expected)
        );
        for a in &r.answers {
            let _ = write!(html, "<td><pre>{}</pre></td>", e(a));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

/// Per-example results for tests: example `i` of `n` is right where `right(i)`.
#[cfg(test)]
pub(crate) fn scored_results(n: usize, right: impl Fn(usize) -> bool) -> Vec<ExampleResult> {
    (0..n)
        .map(|i| ExampleResult {
            id: format!("{i:016x}"),
            category: None,
            prompt: format!("verb {i}"),
            expected: "x".into(),
            before: "y".into(),
            after: if right(i) { "x".into() } else { "z".into() },
            base_correct: false,
            tuned_correct: right(i),
        })
        .collect()
}
