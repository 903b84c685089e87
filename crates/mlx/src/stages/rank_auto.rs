//! `lora: {rank: auto}` in a train stage: measure the training data against the base
//! model, pick the rank with [`pipe_engine::tune::rank::choose_rank`] (the rule and its reasons
//! are documented there), train with it, and record the choice in `out_dir/rank.json`.
//!
//! The measurement loads the model once more before training: the training set's
//! loss-carrying tokens and their diversity are counted exactly; the base model's loss is
//! taken on up to [`SAMPLE`] examples spread evenly over the set.

use crate::load::{self, LoadOptions};
use crate::train::batch::{BatchSpec, TokenizedExample};
use crate::train::job::TrainJob;
use crate::train::lora::Method;
use crate::train::tokenize::tokenize_example;
use crate::train::trainer;
use anyhow::Context;
use pipe_engine::data::{ReadOptions, read_examples};
use pipe_engine::tune::rank::{RankChoice, choose_rank, diversity};

/// Examples the base loss is measured on.
pub const SAMPLE: usize = 64;

/// The file the choice is written to, in the train stage's `out_dir`.
pub const FILE: &str = "rank.json";

/// Measures the job's training data against its base model and chooses a rank.
/// `pretokenized` is a tokenize stage's training split, when the stage trains on one;
/// otherwise the job's `train_data` is read and tokenized here.
pub fn measure(
    job: &TrainJob,
    pretokenized: Option<&[TokenizedExample]>,
) -> anyhow::Result<RankChoice> {
    let mut loaded = load::load(
        &job.model,
        LoadOptions {
            keep_quantized: job.config.method == Method::Qlora,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("rank: auto: cannot load the model `{}`", job.model))?;
    let template = loaded.chat_template.as_ref();
    let examples: Vec<TokenizedExample> = match pretokenized {
        Some(examples) => examples.to_vec(),
        None => {
            let (rows, _) = read_examples(&job.train_data, &ReadOptions::default())?;
            rows.iter()
                .map(|(line, e)| {
                    tokenize_example(e, &loaded.tokenizer, template).with_context(|| {
                        format!("{}:{line}: cannot tokenize", job.train_data.display())
                    })
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    let targets = || {
        examples.iter().flat_map(|e| {
            e.ids
                .iter()
                .zip(&e.loss_mask)
                .filter(|(_, m)| **m)
                .map(|(id, _)| *id)
        })
    };
    let tokens = targets().count() as u64;
    if tokens == 0 {
        anyhow::bail!(
            "rank: auto: {} has no loss-carrying tokens to measure",
            job.train_data.display()
        );
    }
    let step = examples.len().div_ceil(SAMPLE).max(1);
    let sample: Vec<TokenizedExample> = examples.iter().step_by(step).cloned().collect();
    let spec = BatchSpec {
        batch_size: 8,
        max_seq_len: job.config.max_seq_len,
        pad_multiple: 1,
        keep_partial: true,
    };
    let pad_id = loaded.tokenizer.pad_id();
    let base_loss = trainer::validation_loss(&mut loaded.model, &sample, &spec, pad_id, None)
        .context("rank: auto: cannot measure the base model's loss")?;
    Ok(choose_rank(
        tokens,
        base_loss,
        diversity(targets()),
        sample.len(),
    ))
}
