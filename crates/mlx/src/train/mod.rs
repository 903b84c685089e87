//! Training building blocks that do not depend on a model architecture: learning-rate
//! schedules, length-bucketed batches with loss masks, AdamW with bias correction and
//! global-norm clipping, the per-step JSONL log, and the guards that stop a run early
//! (divergence) or well (early stopping on validation loss).
//!
//! Beside them, what drives a model: [`trainer`], [`lora`], [`adapters`], [`fuse`].

pub mod activations;
pub mod adapters;
pub mod batch;
pub mod bench;
pub mod fuse;
pub mod guard;
pub mod job;
pub mod log;
pub mod lora;
pub mod loss;
pub mod micro;
pub mod optim;
pub mod safetensors;
pub mod schedule;
pub mod tokenize;
pub mod trainer;
