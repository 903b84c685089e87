//! Handing a command that uses MLX from `pipe` to `pipe-mlx`.
//!
//! `pipe` does not link MLX, so that engine commands start without loading it (see the
//! module doc of [`crate::cli`]). Commands that use MLX run in `pipe-mlx`, installed beside
//! `pipe` (`cargo install` and `cargo build` produce both). On Unix the handover is an
//! `exec`: the same process id, arguments, environment, standard streams and signal
//! handling, and `pipe-mlx`'s exit status becomes `pipe`'s.
//!
//! Before the hand-over, `pipe` asks `pipe-mlx --build-id` which build it is and refuses a
//! `pipe-mlx` from another one: `cargo run` rebuilds only `pipe`, and the `pipe-mlx` left
//! beside it would run old code with today's arguments. The id is the version plus a hash
//! of the sources (`build.rs`); engine commands never pay for the check.

use super::Failure;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// File name of the MLX runner, next to the `pipe` executable.
const RUNNER: &str = "pipe-mlx";

/// This build of `pipe` and `pipe-mlx`: the version and a hash of the sources both were
/// built from (see `build.rs`).
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("PIPE_BUILD_ID"));

/// The argument that makes `pipe-mlx` print [`BUILD_ID`] and exit, before MLX does any
/// work.
pub const BUILD_ID_ARG: &str = "--build-id";

/// The argument that makes `pipe-mlx` print its MLX runtime as JSON (`mlx_version`,
/// `backend`, `metal_available`) and exit, without computing anything: run records say
/// which MLX ran them.
pub const RUNTIME_INFO_ARG: &str = "--runtime-info";

/// The MLX runtime `pipe-mlx` would use, as it prints it for [`RUNTIME_INFO_ARG`]; `None`
/// when `pipe-mlx` is missing or of another build.
pub(crate) fn runtime_info() -> Option<serde_json::Value> {
    let runner = runner_path().ok()?;
    let out = Command::new(&runner)
        .arg(RUNTIME_INFO_ARG)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// How to rebuild both binaries of this build's profile.
const REBUILD: &str = if cfg!(debug_assertions) {
    "cargo build"
} else {
    "cargo build --release"
};

/// Where `pipe-mlx` is: beside the running executable.
pub(crate) fn runner_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the running pipe executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the pipe executable {} has no directory", exe.display()))?;
    Ok(dir.join(format!("{RUNNER}{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs this process's command line in `pipe-mlx`. On Unix this returns only if `exec`
/// failed; elsewhere it waits for the child and exits with its status.
pub(crate) fn exec_mlx() -> anyhow::Result<()> {
    let runner = runner_path()?;
    if !runner.is_file() {
        return Err(Failure(format!(
            "this command uses MLX, which runs in `{RUNNER}`, and {} does not exist; \
             build both (`cargo build --release` at the workspace root) or install both \
             (`cargo install --path . && cargo install --path src/bin/pipe-mlx`)",
            runner.display()
        ))
        .into());
    }
    check_same_build(&runner)?;
    let mut args = std::env::args_os();
    let argv0 = args.next();
    let mut command = Command::new(&runner);
    command.args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if let Some(argv0) = argv0 {
            command.arg0(argv0);
        }
        let err = command.exec();
        Err(anyhow::anyhow!("cannot run {}: {err}", runner.display()))
    }
    #[cfg(not(unix))]
    {
        let _ = argv0;
        let status = command
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", runner.display()))?;
        pipe_engine::process::exit_now(status.code().unwrap_or(1))
    }
}

/// Refuses a `pipe-mlx` that is not from this build, naming both builds and the fix.
fn check_same_build(runner: &Path) -> anyhow::Result<()> {
    let out = Command::new(runner)
        .arg(BUILD_ID_ARG)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", runner.display()))?;
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && theirs == BUILD_ID {
        return Ok(());
    }
    let theirs = if out.status.success() && !theirs.is_empty() {
        format!("is build {theirs}")
    } else {
        "reports no build id (it predates this check)".to_owned()
    };
    Err(Failure(format!(
        "{} is not from the same build as this pipe (pipe is build {BUILD_ID}, {RUNNER} {theirs}); \
         rebuild both: `{REBUILD}` builds pipe and {RUNNER} together (`cargo run` builds only \
         pipe), or `cargo install --path . && cargo install --path src/bin/pipe-mlx` for an \
         installed pipe",
        runner.display()
    ))
    .into())
}
