//! The `monitor` kind's scoring: each adapter a night needs (the watched one, and a
//! retrained candidate) is scored on the base model as the `evaluate` kind scores, greedy
//! answers compared after the same normalization ([`crate::eval::normalize`]), kept per
//! example. Everything else (the probe pin, the history, the rules, the retraining and the
//! promotion) is `pipe_engine::monitor`, which has no MLX.

use crate::eval;
use crate::load::{self, LoadOptions};
use crate::train::adapters;
use anyhow::Context;
use pipe_engine::data::Example;
use pipe_engine::monitor::night::{self, Scorer};
use pipe_schema::monitor::MonitorConfig;
use std::path::Path;

/// Runs a monitor stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: MonitorConfig =
        serde_json::from_value(with.clone()).context("the monitor stage's --config")?;
    let mut scorer = Mlx {
        model: config.model.clone(),
        max_tokens: config.max_tokens,
    };
    let report = night::run(&config, root, &mut scorer)?;
    let out = root.join(&config.out);
    pipe_engine::stages::write_json(&out.join("monitor.json"), &report)?;
    pipe_engine::stages::write_json(&out.join("metrics.json"), &report.metrics())?;
    eprintln!("{}", report.summary());
    Ok(())
}

/// Scores adapters on one base model.
struct Mlx {
    model: String,
    max_tokens: usize,
}

impl Scorer for Mlx {
    fn score(&mut self, adapter: &Path, examples: &[Example]) -> anyhow::Result<Vec<bool>> {
        // A fresh base per adapter: LoRA layers are applied in place.
        let mut loaded = load::load(
            &self.model,
            LoadOptions {
                keep_quantized: false,
                ..LoadOptions::default()
            },
        )?;
        adapters::load_mlx_lm(&mut loaded.model, adapter)?;
        let template = loaded.chat_template.as_ref();
        let acc = eval::accuracy(
            &mut loaded.model,
            &loaded.tokenizer,
            template,
            examples,
            self.max_tokens,
        )?;
        Ok(acc
            .answers
            .iter()
            .map(|(answer, reference)| eval::normalize(answer) == eval::normalize(reference))
            .collect())
    }
}
