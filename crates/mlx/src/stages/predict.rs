//! The `predict` kind: batch inference inside a pipeline. Every request of `input` (OpenAI
//! Batch format) is answered by the model, or by the adapter on it, through the serving
//! engine (continuous batching, as `pipe serve` and `pipe generate --batch`).
//!
//! ```yaml
//! with:
//!   model: smollm2-135m-instruct
//!   adapter: runs/lora        # optional: every request runs on it
//!   input: data/requests.jsonl
//!   batch_size: 16
//!   out: predictions/lora.jsonl
//! ```
//!
//! Results are appended to `out` with a `.partial` suffix while the stage runs (a crash
//! resumes from there on the next run) and renamed into place at the end, so `out` is
//! either complete or absent.

use crate::load::{self, LoadOptions};
use crate::serve::{self, ServeOptions, batch_file};
use anyhow::Context;
use pipe_schema::predict::PredictConfig;
use std::path::Path;

/// The name the stage's adapter is served under (requests are routed to it).
const ADAPTER: &str = "adapter";

/// Runs a predict stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config: PredictConfig =
        serde_json::from_value(with.clone()).context("the predict stage's --config")?;
    let input = root.join(&config.input);
    let mut rows = batch_file::read_input(&input)?;
    let route = if config.adapter.is_some() {
        ADAPTER
    } else {
        "base"
    };
    for row in &mut rows {
        row.set_model(route);
    }
    let loaded = load::load(
        &config.model,
        LoadOptions {
            keep_quantized: false,
            ..LoadOptions::default()
        },
    )?;
    let options = ServeOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        api_key: None,
        adapters: config
            .adapter
            .iter()
            .map(|a| (ADAPTER.to_owned(), root.join(a)))
            .collect(),
        routes: Vec::new(),
        base_aliases: Vec::new(),
        max_batch: config.batch_size,
        max_queue: config.batch_size,
        max_context: 8192,
        default_max_tokens: config.max_tokens,
        max_request_bytes: usize::MAX,
    };
    let started = serve::start(loaded, &options)?;
    let out = root.join(&config.out);
    let mut partial = out.clone().into_os_string();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let summary = batch_file::run(started.state, rows, &partial, |done, total| {
        if done == total || done.is_multiple_of((total / 10).max(1)) {
            eprintln!("{done}/{total} requests");
        }
    })?;
    let _ = started.engine.join();
    fs_err::rename(&partial, &out)?;
    eprintln!(
        "{} requests answered ({} failed), {} tokens generated -> {}",
        summary.total,
        summary.failed,
        summary.completion_tokens,
        config.out.display()
    );
    Ok(())
}
