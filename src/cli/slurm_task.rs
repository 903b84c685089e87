//! `pipe __slurm-task DIR` (hidden): one task of a Slurm job array that runs matrix
//! siblings (see `pipe_engine::exec::slurm::array`). It becomes its stage's command.

use std::path::PathBuf;

/// Arguments of the hidden array task runner.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder of the array's task files.
    pub dir: PathBuf,
}

/// Replaces this process with the command of task `$SLURM_ARRAY_TASK_ID`, so Slurm signals
/// and accounts the stage itself.
pub fn run(args: Args) -> anyhow::Result<()> {
    use pipe_engine::exec::slurm::array;
    let index = std::env::var("SLURM_ARRAY_TASK_ID").map_err(|_| {
        anyhow::anyhow!("SLURM_ARRAY_TASK_ID is not set: this runs inside a Slurm job array")
    })?;
    let mut command = array::task_command(&args.dir, &index).map_err(anyhow::Error::msg)?;
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        anyhow::bail!(
            "cannot start {}: {error}",
            command.get_program().to_string_lossy()
        )
    }
    #[cfg(not(unix))]
    {
        let status = command.status()?;
        anyhow::ensure!(status.success(), "the stage command failed: {status}");
        Ok(())
    }
}
