//! Stage kinds: what a stage *does* once the engine has decided it must run.
//!
//! The engine ([`crate::exec`]) knows nothing about training or tokenizing; it asks the
//! stage's [`Kind`] three things: its name, its implementation version (part of every
//! fingerprint, so upgrading pipe's `train` reruns trainings but not shell commands), and
//! whether it needs the accelerator (such stages take the single `mlx` resource slot by
//! default, so two trainings never share the GPU unless the pipeline asks for it).
//!
//! Only `cmd` is implemented today. The ML kinds are reserved names: a pipeline using them
//! fails validation with "not implemented yet" rather than "unknown kind".
//!
//! Adding a kind: a variant of [`Kind`] with its name, version and MLX use, and a branch
//! in [`command`]. Every kind runs as a child process (a built-in kind as `pipe` itself,
//! which is first on the child's `PATH`, with the stage's rendered `with` as arguments):
//! the engine then treats all kinds alike for logs, interrupts (the child's process
//! group is signalled) and crash safety, and an MLX failure cannot take the scheduler
//! down. Outs are written with [`write_out_atomically`].

pub mod cmd;

use std::path::Path;

/// Built-in kinds that are planned but not implemented yet (reserved names).
pub const PLANNED_KINDS: &[&str] = &[
    "ingest", "version", "tokenize", "train", "evaluate", "compare", "report", "tune",
];

/// Every kind name a pipeline may write, for "did you mean" suggestions.
pub fn all_kind_names() -> impl Iterator<Item = &'static str> {
    std::iter::once("cmd").chain(PLANNED_KINDS.iter().copied())
}

/// A stage kind the engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A shell command (`cmd: "..."`) or an argv list (`cmd: [prog, arg]`).
    Cmd,
}

/// Why a `kind:` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// A reserved built-in kind that this version of pipe cannot run yet.
    #[error("stage kind `{name}` is not implemented yet")]
    NotImplemented {
        /// The kind as written.
        name: String,
    },
    /// A kind pipe has never heard of.
    #[error("unknown stage kind `{name}`")]
    Unknown {
        /// The kind as written.
        name: String,
    },
}

impl Kind {
    /// Parses a `kind:` value.
    pub fn parse(name: &str) -> Result<Self, KindError> {
        match name {
            "cmd" => Ok(Kind::Cmd),
            n if PLANNED_KINDS.contains(&n) => Err(KindError::NotImplemented { name: n.into() }),
            n => Err(KindError::Unknown { name: n.into() }),
        }
    }

    /// The name written in pipelines.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cmd => "cmd",
        }
    }

    /// Version of this kind's implementation. Bump it when a change to the kind's code
    /// changes what it produces: every stage of that kind becomes stale.
    pub fn impl_version(self) -> u32 {
        match self {
            Kind::Cmd => cmd::IMPL_VERSION,
        }
    }

    /// Whether stages of this kind use the accelerator (and so take the `mlx` slot).
    pub fn uses_mlx(self) -> bool {
        match self {
            Kind::Cmd => false,
        }
    }
}

/// The process that runs `stage`, with stdout and stderr going to `log`.
pub fn command(
    stage: &crate::spec::Stage,
    root: &Path,
    log: &std::fs::File,
) -> std::io::Result<std::process::Command> {
    match stage.kind {
        Kind::Cmd => cmd::command(stage, root, log),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename. Built-in
/// kinds must write their outs this way so a crash never leaves a half-written out that
/// looks complete.
pub fn write_out_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_kinds_are_not_unknown() {
        assert_eq!(
            Kind::parse("train"),
            Err(KindError::NotImplemented {
                name: "train".into()
            })
        );
        assert!(matches!(
            Kind::parse("trian"),
            Err(KindError::Unknown { .. })
        ));
        assert_eq!(Kind::parse("cmd"), Ok(Kind::Cmd));
    }
}
