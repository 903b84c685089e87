//! The `evaluate` kind: loss, perplexity, exact and contains match, and sample generations
//! on held-out data, for the base model and (when an adapter is given) the fine-tuned one,
//! so every result has a before and an after.
//!
//! ```yaml
//! with:
//!   model: smollm2-135m-instruct
//!   adapter: runs/lora          # a train stage's out_dir (optional)
//!   data: data/clean/test.jsonl
//!   max_examples: 100           # scored for accuracy (loss uses them too)
//!   max_tokens: 16              # generation budget per answer
//!   samples: 5                  # sample generations kept in the output
//!   out: eval/lora.json
//! ```
//!
//! Every accuracy comes with its 95% Wilson interval and counts (`exact_match_ci`,
//! `contains_match_ci`), and the out lists every scored example (`results`: a content-hash
//! id, the category, both answers and whether each matched), so a `compare` stage can test
//! two adapters on the same examples and a report can show what went wrong. Examples with
//! a category (`category` in the data, BIG-bench's `comment`) add exact match per
//! category (`categories`).
//!
//! A multiple-choice row (`choices` in the data, or BIG-bench's `target_scores`) is not
//! generated: its answer is the choice the model finds most likely as the reply
//! ([`crate::eval::choices`]), scored like any other answer.
//!
//! The base model's scores are kept across runs by [`base_scores`].

pub mod base_scores;

use crate::eval;
use crate::load::{self, LoadOptions};
use crate::train::adapters;
use anyhow::Context;
use base_scores::BaseScores;
use pipe_engine::data::{Example, ReadOptions, Role, read_examples};
use pipe_schema::evaluate::{
    CategoryScore, EvaluateConfig, EvaluateReport, ExampleResult, Rate, SampleAnswer, Scores,
};
use std::collections::BTreeMap;

use std::path::Path;
use std::time::Instant;

/// Runs an evaluate stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: EvaluateConfig =
        serde_json::from_value(with.clone()).context("the evaluate stage's --config")?;
    let report = evaluate(&config, root)?;
    pipe_engine::stages::write_json(&root.join(&config.out), &report)?;
    let shown = |s: &Scores| match &s.exact_match_ci {
        Some(r) => format!("{:.3} [{:.3}, {:.3}]", r.value, r.low, r.high),
        None => format!("{:.3}", s.exact_match),
    };
    eprintln!(
        "exact match {} -> {} (95% intervals), loss {:.3} -> {:.3} on {} examples",
        shown(&report.base),
        shown(&report.tuned),
        report.base.loss,
        report.tuned.loss,
        report.examples
    );
    Ok(())
}

/// Evaluates the base model, then the adapter on top of it.
pub fn evaluate(config: &EvaluateConfig, root: &Path) -> anyhow::Result<EvaluateReport> {
    let data = root.join(&config.data);
    let (rows, _) = read_examples(&data, &ReadOptions::default())?;
    let examples: Vec<Example> = rows
        .into_iter()
        .take(config.max_examples)
        .map(|(_, e)| e)
        .collect();
    if examples.is_empty() {
        anyhow::bail!("{}: no examples to evaluate", data.display());
    }
    // The base score is the same in every trial of a sweep and every variant of a
    // comparison: read it back when an identical evaluation already computed it.
    let entry = load::resolve(&config.model)
        .ok()
        .and_then(|model| base_scores::entry_path(root, &model, &examples, config.max_tokens));
    let reused = entry
        .as_deref()
        .and_then(|e| base_scores::load(e, examples.len()));
    let base_reused = reused.is_some();
    let mut loaded = load::load(
        &config.model,
        LoadOptions {
            keep_quantized: false,
            ..LoadOptions::default()
        },
    )?;
    let score = |loaded: &mut load::LoadedModel| -> anyhow::Result<BaseScores> {
        let started = Instant::now();
        let template = loaded.chat_template.as_ref();
        let (loss, acc) = eval::loss_and_accuracy(
            &mut loaded.model,
            &loaded.tokenizer,
            template,
            &examples,
            config.max_tokens,
        )?;
        Ok(BaseScores {
            scores: Scores {
                loss: loss.loss(),
                perplexity: loss.perplexity(),
                exact_match: acc.exact_rate(),
                contains_match: acc.contains_rate(),
                seconds: started.elapsed().as_secs_f64(),
                exact_match_ci: None,
                contains_match_ci: None,
            },
            answers: acc.answers,
        })
    };
    let base = match reused {
        Some(base) => base,
        None => {
            let base = score(&mut loaded)?;
            if let Some(entry) = &entry {
                base_scores::store(entry, &base);
            }
            base
        }
    };
    let tuned = match &config.adapter {
        Some(dir) => {
            adapters::load_mlx_lm(&mut loaded.model, &root.join(dir))?;
            score(&mut loaded)?
        }
        None => base.clone(),
    };
    let base_scores = with_intervals(base.scores.clone(), &base.answers);
    let tuned_scores = with_intervals(tuned.scores.clone(), &tuned.answers);
    let results = results(&examples, &base.answers, &tuned.answers);
    let categories = categories(&results);
    let samples = examples
        .iter()
        .zip(base.answers.iter().zip(&tuned.answers))
        .take(config.samples)
        .map(|(e, ((before, expected), (after, _)))| SampleAnswer {
            prompt: prompt_text(e),
            expected: expected.clone(),
            before: before.clone(),
            after: after.clone(),
        })
        .collect();
    Ok(EvaluateReport {
        model: config.model.clone(),
        adapter: config.adapter.as_ref().map(|p| p.display().to_string()),
        examples: examples.len(),
        normalization: "lower-cased, punctuation removed, whitespace collapsed".into(),
        base: base_scores,
        tuned: tuned_scores,
        base_reused,
        samples,
        results,
        categories,
    })
}

/// `scores` with the intervals of its accuracies, counted from the per-example answers
/// (the same counts the rates came from).
fn with_intervals(mut scores: Scores, answers: &[(String, String)]) -> Scores {
    let count = |f: fn(&str, &str) -> bool| answers.iter().filter(|(a, r)| f(a, r)).count();
    scores.exact_match_ci = pipe_engine::stats::rate(count(eval::exact_match), answers.len());
    scores.contains_match_ci = pipe_engine::stats::rate(count(eval::contains_match), answers.len());
    scores
}

/// One row per scored example: id, category, both answers and whether each matched.
fn results(
    examples: &[Example],
    base: &[(String, String)],
    tuned: &[(String, String)],
) -> Vec<ExampleResult> {
    examples
        .iter()
        .zip(base.iter().zip(tuned))
        .map(|(e, ((before, expected), (after, _)))| ExampleResult {
            // The content hash, not the position: pairing two evaluations by id stays
            // right when their files list the examples in another order.
            id: e.content_hash().to_hex()[..16].to_owned(),
            category: e.category().map(str::to_owned),
            prompt: prompt_text(e),
            expected: expected.clone(),
            before: before.clone(),
            after: after.clone(),
            base_correct: eval::exact_match(before, expected),
            tuned_correct: eval::exact_match(after, expected),
        })
        .collect()
}

/// Exact match per category, in name order; empty when no example has one.
fn categories(results: &[ExampleResult]) -> Vec<CategoryScore> {
    let mut by: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for r in results {
        if let Some(c) = &r.category {
            let e = by.entry(c).or_default();
            e.0 += 1;
            e.1 += usize::from(r.base_correct);
            e.2 += usize::from(r.tuned_correct);
        }
    }
    let rate = |k, n| -> Rate { pipe_engine::stats::rate(k, n).expect("a category has examples") };
    by.into_iter()
        .map(|(c, (n, base, tuned))| CategoryScore {
            category: c.to_owned(),
            base: rate(base, n),
            tuned: rate(tuned, n),
        })
        .collect()
}

/// What a sample shows as its prompt: the prompt, the last user message before the
/// scored reply, or the start of a text.
fn prompt_text(example: &Example) -> String {
    match example {
        Example::Completion { prompt, .. } => prompt.clone(),
        Example::Chat { messages, .. } => messages
            .iter()
            .rev()
            .skip(1)
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default(),
        Example::Text { text } => text.chars().take(80).collect(),
    }
}
