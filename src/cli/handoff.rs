//! Handing a command that uses MLX from `pipe` to `pipe-mlx`.
//!
//! `pipe` does not link MLX, so that engine commands start without loading it (see the
//! module doc of [`crate::cli`]). Commands that use MLX run in `pipe-mlx`, installed beside
//! `pipe` (`cargo install` and `cargo build` produce both). On Unix the handover is an
//! `exec`: the same process id, arguments, environment, standard streams and signal
//! handling, and `pipe-mlx`'s exit status becomes `pipe`'s.

use super::Failure;
use std::path::PathBuf;
use std::process::Command;

/// File name of the MLX runner, next to the `pipe` executable.
const RUNNER: &str = "pipe-mlx";

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
             install both binaries (`cargo install --path .` or `cargo build --release` does)",
            runner.display()
        ))
        .into());
    }
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
