//! Stage kinds as data: what the engine knows about each kind, in one table.
//!
//! A kind is a value implementing [`StageKind`]: its name, the version of its
//! implementation (part of every fingerprint, so upgrading pipe's `train` reruns
//! trainings but not shell commands), and [`StageKind::resolve`], which checks a stage's
//! `with:` against the kind's typed configuration (`pipe_schema`) when the pipeline loads
//! and returns a [`Resolved`]: the configuration as the stage's process will receive it,
//! the paths it reads and writes, and whether it needs the accelerator. [`KINDS`] lists
//! them all; nothing outside this table branches on a kind's name.
//!
//! Every kind runs as a child process: `cmd` as the user's command, a built-in kind as
//! `pipe __run-stage KIND --root ROOT --config JSON` ([`crate::exec::launch`]). The kinds
//! that need no MLX run from this crate ([`run`], `deploy` included); `train`, `evaluate`, `predict` and `tokenize` run
//! in `pipe-mlx` (crate `pipe-mlx-core`), which the engine never links.
//!
//! Adding a kind: a unit struct implementing [`StageKind`] in its own module, a line in
//! [`KINDS`], and its runner (here in [`run`], or in `pipe-mlx-core`'s stage table).

pub mod cmd;
pub mod compare;
pub mod deploy;
pub mod evaluate;
pub mod ingest;
pub mod monitor;
pub mod params_file;
pub mod predict;
pub mod report;
pub mod tokenize;
pub mod train;
pub mod tune;
pub mod version;

use crate::history::outcome::Outcome;
use pipe_schema::FieldError;
use serde_json::Value;
use std::path::Path;

/// What the engine knows about one stage kind.
pub trait StageKind: Sync + 'static {
    /// The name written in pipelines (`kind: train`).
    fn name(&self) -> &'static str;
    /// Version of the implementation. Bump it when a change to the kind's code changes
    /// what it produces: every stage of that kind becomes stale.
    fn impl_version(&self) -> u32;
    /// One line for `pipe schema` and `--help`.
    fn summary(&self) -> &'static str;
    /// Checks `with:` (templates rendered) and resolves it. Errors carry the path of the
    /// offending key inside `with:`.
    fn resolve(&self, with: &Value) -> Result<Resolved, FieldError>;
    /// The JSON Schema of `with:` (see `pipe schema`).
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
    /// What a finished stage produced, read from its outs for the run history and
    /// tracking; by default nothing beyond its `metrics:` files.
    fn outcome(&self, _config: &Value, _root: &Path) -> Outcome {
        Outcome::default()
    }
    /// Whether the stage acts on state outside the workspace that its fingerprint cannot
    /// see (a running server): such a stage runs every time, as with `always_run: true`,
    /// and must be idempotent.
    fn reads_external_state(&self) -> bool {
        false
    }
    /// [`Self::reads_external_state`] for one stage's resolved configuration, for kinds
    /// where it depends on the options (a monitor of a registry alias, not of a folder).
    fn reads_external_state_of(&self, _config: &Value) -> bool {
        self.reads_external_state()
    }
}

/// A stage's `with:`, checked and resolved when the pipeline loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The kind's typed configuration, serialized: what the fingerprint hashes and what
    /// the stage's process receives (`--config`).
    pub config: Value,
    /// Paths the configuration reads (they count as deps without being repeated).
    pub deps: Vec<String>,
    /// Paths it writes (they count as outs).
    pub outs: Vec<String>,
    /// Whether the stage uses the accelerator (and so takes the `mlx` resource slot by
    /// default, so two trainings never share the GPU unless the pipeline asks for it).
    pub uses_mlx: bool,
}

/// A stage kind: a handle on one entry of [`KINDS`].
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn StageKind);

/// Every kind, in the order `pipe schema` lists them.
pub static KINDS: [Kind; 12] = [
    Kind::CMD,
    Kind::INGEST,
    Kind::VERSION,
    Kind::TOKENIZE,
    Kind::TRAIN,
    Kind::EVALUATE,
    Kind::PREDICT,
    Kind::COMPARE,
    Kind::REPORT,
    Kind::TUNE,
    Kind::DEPLOY,
    Kind::MONITOR,
];

impl Kind {
    /// A shell command (`cmd: "..."`) or an argv list (`cmd: [prog, arg]`).
    pub const CMD: Kind = Kind(&cmd::Cmd);
    /// Validate, deduplicate and split a dataset.
    pub const INGEST: Kind = Kind(&ingest::Ingest);
    /// Snapshot a data folder as a content-addressed version, or restore one.
    pub const VERSION: Kind = Kind(&version::Version);
    /// Tokenize a dataset's splits with a model's chat template and tokenizer.
    pub const TOKENIZE: Kind = Kind(&tokenize::Tokenize);
    /// Fine-tune a model.
    pub const TRAIN: Kind = Kind(&train::Train);
    /// Score a model (and an adapter) on held-out data.
    pub const EVALUATE: Kind = Kind(&evaluate::Evaluate);
    /// Answer a file of OpenAI Batch requests (batch inference).
    pub const PREDICT: Kind = Kind(&predict::Predict);
    /// Tabulate trained variants and recommend one under constraints.
    pub const COMPARE: Kind = Kind(&compare::Compare);
    /// Write a self-contained HTML report of the run.
    pub const REPORT: Kind = Kind(&report::Report);
    /// Search hyperparameters with Bayesian optimisation over cached trials.
    pub const TUNE: Kind = Kind(&tune::TuneKind);
    /// Serve an adapter under a public name on a running server, or write its serving file.
    pub const DEPLOY: Kind = Kind(&deploy::Deploy);
    /// Watch a model's accuracy night after night; retrain and promote on a regression.
    pub const MONITOR: Kind = Kind(&monitor::Monitor);

    /// Parses a `kind:` value.
    pub fn parse(name: &str) -> Result<Self, KindError> {
        KINDS
            .iter()
            .find(|k| k.name() == name)
            .copied()
            .ok_or_else(|| KindError::Unknown { name: name.into() })
    }

    /// The name written in pipelines.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// See [`StageKind::impl_version`].
    pub fn impl_version(self) -> u32 {
        self.0.impl_version()
    }

    /// See [`StageKind::summary`].
    pub fn summary(self) -> &'static str {
        self.0.summary()
    }

    /// See [`StageKind::resolve`].
    pub fn resolve(self, with: &Value) -> Result<Resolved, FieldError> {
        self.0.resolve(with)
    }

    /// See [`StageKind::with_schema`].
    pub fn with_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        self.0.with_schema(generator)
    }

    /// See [`StageKind::outcome`].
    pub fn outcome(self, config: &Value, root: &Path) -> Outcome {
        self.0.outcome(config, root)
    }

    /// See [`StageKind::reads_external_state`].
    pub fn reads_external_state(self) -> bool {
        self.0.reads_external_state()
    }

    /// See [`StageKind::reads_external_state_of`].
    pub fn reads_external_state_of(self, config: &Value) -> bool {
        self.0.reads_external_state_of(config)
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for Kind {}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Every kind name a pipeline may write, for "did you mean" suggestions.
pub fn all_kind_names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|k| k.name())
}

/// Why a `kind:` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// A kind pipe has never heard of.
    #[error("unknown stage kind `{name}`")]
    Unknown {
        /// The kind as written.
        name: String,
    },
}

/// Runs a stage of a kind that needs no MLX, in this process (`pipe-mlx __run-stage`
/// calls it for these kinds). `None`: the kind is not one of them.
pub fn run(kind: Kind, config: &Value, root: &Path) -> Option<anyhow::Result<()>> {
    let runner: fn(&Value, &Path) -> anyhow::Result<()> = match kind {
        k if k == Kind::INGEST => ingest::run,
        k if k == Kind::VERSION => version::run,
        k if k == Kind::COMPARE => compare::run,
        k if k == Kind::REPORT => report::run,
        k if k == Kind::TUNE => tune::run,
        k if k == Kind::DEPLOY => deploy::run,
        _ => return None,
    };
    Some(runner(config, root))
}

/// The model named in a config counts as a dep only when it is written as a path (`./`,
/// `../` or a `.gguf` file), not as a model id.
pub fn model_dep(model: &str) -> Option<String> {
    (model.starts_with("./") || model.starts_with("../") || model.ends_with(".gguf"))
        .then(|| model.to_owned())
}

/// [`pipe_schema::from_value`], then a check that reports at `with:` itself.
pub fn parse_with<T: serde::de::DeserializeOwned>(with: &Value) -> Result<T, FieldError> {
    pipe_schema::from_value(with)
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    Ok(crate::atomic_write::write_json(path, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_typos_are_unknown() {
        for kind in KINDS {
            assert_eq!(Kind::parse(kind.name()), Ok(kind));
        }
        assert!(matches!(
            Kind::parse("trian"),
            Err(KindError::Unknown { .. })
        ));
        assert_eq!(Kind::parse("train"), Ok(Kind::TRAIN));
    }

    #[test]
    fn only_mlx_kinds_take_the_accelerator() {
        let train = Kind::TRAIN
            .resolve(&serde_json::json!({"model": "m", "train_data": "d", "out_dir": "o"}))
            .unwrap();
        assert!(train.uses_mlx);
        assert_eq!(train.deps, vec!["d"]);
        assert_eq!(train.outs, vec!["o"]);
        let ingest = Kind::INGEST
            .resolve(&serde_json::json!({"source": "raw.jsonl", "out": "data"}))
            .unwrap();
        assert!(!ingest.uses_mlx);
    }
}
