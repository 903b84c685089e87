//! The `train` kind's configuration, shared with `pipe train --config FILE`: one type, the
//! same options in both places.
//!
//! ```yaml
//! model: smollm2-135m-instruct      # known id, GGUF file, HF directory or hub repo id
//! train_data: data/train.jsonl      # JSONL/CSV/TSV: chat, completions or text
//! valid_data: data/valid.jsonl      # optional
//! # tokens: data/tokens             # instead: a tokenize stage's out folder
//! out_dir: runs/lora                # adapters, checkpoint, train_log.jsonl, metrics.json
//! method: lora                      # lora | qlora | dora | full
//! lora: {rank: 8, alpha: 16, num_layers: 16}   # rank: auto measures the data
//! iters: 200
//! batch_size: 8                     # or auto: from the training set's size
//! learning_rate: 1.0e-4
//! micro_batch: auto                 # optional: largest micro-batch that fits memory_budget_mb
//! ```
//!
//! [`TrainWith`] is what is written; [`TrainWith::resolve`] checks every value and gives a
//! [`TrainSpec`], which is what a stage's fingerprint hashes and its process receives.
//! Values that are `auto` stay [`Auto`] in the spec: they are measured when the stage
//! runs, and [`TrainSpec::config`] then yields the [`TrainConfig`] the trainer takes, in
//! which no `auto` can remain.

mod job;
mod options;
mod step;
mod validate;

pub use job::{JOB_KEYS, TrainInputs, TrainSpec, TrainWith};
pub use options::{
    ALL_TARGETS, ActivationCacheConfig, AdamWConfig, DEFAULT_ACTIVATION_DISK_MB, Decay,
    DistributedOptions, LoraConfig, LoraOptions, Method, MicroBatch, TrainConfig, TrainOptions,
    TrainOptionsAuto,
};
pub use step::StepRecord;

#[cfg(test)]
mod tests;
