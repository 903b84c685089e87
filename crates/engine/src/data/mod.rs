//! Datasets: reading, validating, deduplicating, splitting and describing fine-tuning
//! examples. This is the library behind the `ingest` stage; it knows nothing of MLX.
//!
//! Three formats are understood, as in mlx-lm and most trainers:
//! - chat: `{"messages": [{"role": "user", "content": "..."}, ...]}`
//! - completions: `{"prompt": "...", "completion": "..."}`
//! - text: `{"text": "..."}`
//!
//! Field names can be remapped ([`FieldMap`]), so a CSV with `question,answer` columns reads
//! as completions. Every problem in a row is reported with its file and line
//! ([`RowError`]); the [`ErrorPolicy`] decides whether it fails the ingest or is skipped and
//! counted. A source may also be an http(s) URL pinned by hash ([`Source`]), and a data
//! folder can be snapshotted as a content-addressed [`version`].

mod bigbench;
mod example;
pub mod ingest;
mod read;
mod source;
mod split;
mod stats;
pub mod version;

pub use bigbench::read_bigbench_task;
pub use example::{Example, Format, Message, Role};
pub use read::{
    ErrorPolicy, FieldMap, ReadError, ReadOptions, ReadResult, RowError, RowErrorKind,
    read_examples,
};
pub use source::Source;
pub use split::{Split, SplitSpec, assign_split, split_draw, split_of_draw};
pub use stats::{DatasetStats, Histogram};
