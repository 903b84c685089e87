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
//! The base model's scores are kept across runs by [`base_scores`].

pub mod base_scores;

use crate::eval;
use crate::load::{self, LoadOptions};
use crate::train::adapters;
use anyhow::Context;
use base_scores::BaseScores;
use pipe_engine::data::{Example, ReadOptions, Role, read_examples};
use pipe_schema::evaluate::{EvaluateConfig, EvaluateReport, SampleAnswer, Scores};

use std::path::Path;
use std::time::Instant;

/// Runs an evaluate stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: EvaluateConfig =
        serde_json::from_value(with.clone()).context("the evaluate stage's --config")?;
    let report = evaluate(&config, root)?;
    pipe_engine::stages::write_json(&root.join(&config.out), &report)?;
    eprintln!(
        "exact match {:.3} -> {:.3}, loss {:.3} -> {:.3} on {} examples",
        report.base.exact_match,
        report.tuned.exact_match,
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
        let loss = eval::dataset_loss(&mut loaded.model, &loaded.tokenizer, template, &examples)?;
        let acc = eval::accuracy(
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
        base: base.scores,
        tuned: tuned.scores,
        base_reused,
        samples,
    })
}

/// What a sample shows as its prompt: the prompt, the last user message before the
/// scored reply, or the start of a text.
fn prompt_text(example: &Example) -> String {
    match example {
        Example::Completion { prompt, .. } => prompt.clone(),
        Example::Chat { messages } => messages
            .iter()
            .rev()
            .skip(1)
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default(),
        Example::Text { text } => text.chars().take(80).collect(),
    }
}
