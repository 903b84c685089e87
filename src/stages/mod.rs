//! Stage kinds: what a stage *does* once the engine has decided it must run.
//!
//! The engine ([`crate::exec`]) knows nothing about training or tokenizing; it asks the
//! stage's [`Kind`] three things: its name, its implementation version (part of every
//! fingerprint, so upgrading pipe's `train` reruns trainings but not shell commands), and
//! whether it needs the accelerator (such stages take the single `mlx` resource slot by
//! default, so two trainings never share the GPU unless the pipeline asks for it).
//!
//! Every kind runs as a child process: `cmd` as the user's command, a built-in kind as
//! `pipe __run-stage KIND --root ROOT --with JSON` (the running executable, so the same
//! version). The engine then treats all kinds alike for logs, interrupts (the child's
//! process group is signalled) and crash safety, an MLX failure cannot take the scheduler
//! down, and MLX memory goes back to the system when a stage ends. Outs are written
//! atomically ([`crate::atomic_write`]).
//!
//! Adding a kind: a variant of [`Kind`] with its name, version and MLX use, a module with
//! `IMPL_VERSION` and `run(with, root)`, and a branch in `cli::run_stage`.

pub mod base_scores;
pub mod batch_auto;
pub mod cmd;
pub mod compare;
pub mod evaluate;
pub mod ingest;
pub mod params_file;
pub mod rank_auto;
pub mod report;
pub mod tokenize;
pub mod tokens;
pub mod train;
pub mod tune;
pub mod version;

use std::path::Path;
use std::process::{Command, Stdio};

/// Every kind name a pipeline may write, for "did you mean" suggestions.
pub fn all_kind_names() -> impl Iterator<Item = &'static str> {
    Kind::ALL.iter().map(|k| k.name())
}

/// A stage kind the engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A shell command (`cmd: "..."`) or an argv list (`cmd: [prog, arg]`).
    Cmd,
    /// Validate, deduplicate and split a dataset.
    Ingest,
    /// Tokenize a dataset's splits with a model's chat template and tokenizer.
    Tokenize,
    /// Fine-tune a model.
    Train,
    /// Score a model (and an adapter) on held-out data.
    Evaluate,
    /// Tabulate trained variants and recommend one under constraints.
    Compare,
    /// Write a self-contained HTML report of the run.
    Report,
    /// Snapshot a data folder as a content-addressed version, or restore a recorded one.
    Version,
    /// Search hyperparameters with Bayesian optimisation over cached trials.
    Tune,
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

impl Kind {
    /// Every implemented kind.
    pub const ALL: [Kind; 9] = [
        Kind::Cmd,
        Kind::Ingest,
        Kind::Tokenize,
        Kind::Train,
        Kind::Evaluate,
        Kind::Compare,
        Kind::Report,
        Kind::Version,
        Kind::Tune,
    ];

    /// Parses a `kind:` value.
    pub fn parse(name: &str) -> Result<Self, KindError> {
        if let Some(kind) = Kind::ALL.iter().find(|k| k.name() == name) {
            return Ok(*kind);
        }
        Err(KindError::Unknown { name: name.into() })
    }

    /// The name written in pipelines.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cmd => "cmd",
            Kind::Ingest => "ingest",
            Kind::Tokenize => "tokenize",
            Kind::Train => "train",
            Kind::Evaluate => "evaluate",
            Kind::Compare => "compare",
            Kind::Report => "report",
            Kind::Version => "version",
            Kind::Tune => "tune",
        }
    }

    /// Version of this kind's implementation. Bump it when a change to the kind's code
    /// changes what it produces: every stage of that kind becomes stale.
    pub fn impl_version(self) -> u32 {
        match self {
            Kind::Cmd => cmd::IMPL_VERSION,
            Kind::Ingest => ingest::IMPL_VERSION,
            Kind::Tokenize => tokenize::IMPL_VERSION,
            Kind::Train => train::IMPL_VERSION,
            Kind::Evaluate => evaluate::IMPL_VERSION,
            Kind::Compare => compare::IMPL_VERSION,
            Kind::Report => report::IMPL_VERSION,
            Kind::Version => version::IMPL_VERSION,
            Kind::Tune => tune::IMPL_VERSION,
        }
    }

    /// The paths a built-in kind reads and writes, named in its `with:` (so pipelines need
    /// not repeat them under `deps`/`outs`). A `model` counts as a dep only when it is
    /// written as a path (`./`, `../` or a `.gguf` file), not as a model id.
    pub fn implicit_paths(self, with: &serde_json::Value) -> (Vec<String>, Vec<String>) {
        let get = |key: &str| with.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let model = get("model")
            .filter(|m| m.starts_with("./") || m.starts_with("../") || m.ends_with(".gguf"));
        let list = |keys: &[&str]| -> Vec<String> { keys.iter().filter_map(|k| get(k)).collect() };
        let (mut deps, outs) = match self {
            Kind::Cmd => return (Vec::new(), Vec::new()),
            Kind::Ingest => (list(&["source"]), list(&["out"])),
            Kind::Tokenize => (list(&["data"]), list(&["out"])),
            Kind::Tune => return tune::implicit_paths(with),
            Kind::Train => (
                list(&["train_data", "valid_data", "tokens", params_file::KEY]),
                list(&["out_dir"]),
            ),
            Kind::Evaluate => (list(&["data", "adapter"]), list(&["out"])),
            Kind::Compare => (compare::implicit_deps(with), list(&["out"])),
            Kind::Report => {
                let mut deps = list(&["data", "tokens", "compare", "tune"]);
                for v in with
                    .get("variants")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    for key in ["train", "eval"] {
                        deps.extend(v.get(key).and_then(|p| p.as_str()).map(str::to_owned));
                    }
                }
                (deps, list(&["out"]))
            }
            Kind::Version => (list(&["data"]), list(&["to", "out"])),
        };
        deps.extend(model);
        (deps, outs)
    }

    /// Checks a built-in kind's `with:` before anything runs, so a typo in a training
    /// option fails validation instead of a stage an hour into the run.
    pub fn check_with(self, with: &serde_json::Value) -> Result<(), String> {
        let with = if with.is_null() {
            &serde_json::Value::Object(Default::default())
        } else {
            with
        };
        let checked = match self {
            Kind::Cmd => Ok(()),
            Kind::Ingest => {
                parse_with::<crate::data::ingest::IngestConfig>("ingest", with).map(drop)
            }
            Kind::Version => version::VersionConfig::from_with(with).map(drop),
            Kind::Tokenize => {
                parse_with::<tokenize::TokenizeConfig>("tokenize", with).and_then(|c| {
                    c.validate()
                        .map_err(|e| anyhow::anyhow!("tokenize stage `with`: {e}"))
                })
            }
            Kind::Evaluate => parse_with::<evaluate::EvaluateConfig>("evaluate", with).map(drop),
            Kind::Compare => compare::check(with),
            Kind::Report => parse_with::<report::ReportConfig>("report", with).and_then(|c| {
                c.check()
                    .map_err(|e| anyhow::anyhow!("report stage `with`: {e}"))
            }),
            Kind::Tune => return tune::check(with),
            // A params file is usually written by an earlier stage: it is merged (and the
            // result checked again) when the stage runs.
            // `rank: auto` and `batch_size: auto` are measured when the stage runs; any value
            // stands in for the check.
            Kind::Train => batch_auto::with_batch_size(
                &rank_auto::with_rank(&params_file::without(with), 8),
                8,
            )
            .map_err(anyhow::Error::msg)
            .and_then(|with| train::parse(&with, Path::new(".")))
            .map(drop),
        };
        checked.map_err(|e| format!("{e:#}"))
    }

    /// Whether stages of this kind use the accelerator (and so take the `mlx` slot).
    pub fn uses_mlx(self) -> bool {
        // Tokenize loads the model (for its tokenizer) into MLX memory.
        matches!(self, Kind::Train | Kind::Evaluate | Kind::Tokenize)
    }

    /// Whether a stage of this kind with this `with:` uses the accelerator: a tune stage
    /// does when its trials train (or are commands marked `mlx: true`).
    pub fn uses_mlx_with(self, with: &serde_json::Value) -> bool {
        self.uses_mlx() || (self == Kind::Tune && tune::uses_mlx(with))
    }
}

/// The process that runs `stage`, with stdout and stderr going to `log`.
pub fn command(
    stage: &crate::spec::Stage,
    root: &Path,
    log: &std::fs::File,
) -> std::io::Result<Command> {
    match stage.kind {
        Kind::Cmd => cmd::command(stage, root, log),
        kind => {
            let exe = std::env::current_exe()?;
            let mut command = Command::new(exe);
            command
                .arg("__run-stage")
                .arg(kind.name())
                .arg("--root")
                .arg(root)
                .arg("--with")
                .arg(stage.with.to_string());
            configure(&mut command, stage, root, log)?;
            Ok(command)
        }
    }
}

/// The environment every stage process gets: [`configure_child`] plus `PIPE_STAGE`.
fn configure(
    command: &mut Command,
    stage: &crate::spec::Stage,
    root: &Path,
    log: &std::fs::File,
) -> std::io::Result<()> {
    command.env("PIPE_STAGE", &stage.name);
    configure_child(command, root, log)
}

/// The environment of every process pipe runs for a pipeline (stages, tune trials): the
/// workspace root as working directory, `PIPE_ROOT`, this `pipe` first on `PATH`, output to
/// `log`, its own process group, and (on Linux) death with its parent.
pub fn configure_child(
    command: &mut Command,
    root: &Path,
    log: &std::fs::File,
) -> std::io::Result<()> {
    command
        .current_dir(root)
        .env("PIPE_ROOT", root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            command.env("PATH", joined);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child
        // if pipe dies, so a `kill -9` of pipe leaves no orphans writing outs or trials.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    Ok(())
}

/// Parses a stage's `with:` into a kind's config, naming the kind on error.
pub fn parse_with<T: serde::de::DeserializeOwned>(
    kind: &str,
    with: &serde_json::Value,
) -> anyhow::Result<T> {
    serde_json::from_value(with.clone()).map_err(|e| anyhow::anyhow!("{kind} stage `with`: {e}"))
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
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Ok(kind));
        }
        assert_eq!(Kind::parse("tune"), Ok(Kind::Tune));
        assert!(matches!(
            Kind::parse("trian"),
            Err(KindError::Unknown { .. })
        ));
        assert_eq!(Kind::parse("cmd"), Ok(Kind::Cmd));
        assert_eq!(Kind::parse("train"), Ok(Kind::Train));
        assert!(Kind::Train.uses_mlx() && !Kind::Ingest.uses_mlx());
    }
}
