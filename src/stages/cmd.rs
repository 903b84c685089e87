//! The `cmd` kind: run a shell command (`sh -c`) or an argv list, in the workspace root.
//!
//! The child gets `PIPE_STAGE` (its stage name) and `PIPE_ROOT`, and the directory of the
//! running `pipe` executable first on `PATH` so a command can call `pipe` itself and get
//! this very version. stdout and stderr both go to the stage's log file. The child runs
//! in its own process group so an interrupt can stop it and everything it spawned.

use crate::spec::{Cmd, Stage};
use std::path::Path;
use std::process::Command;

/// Implementation version of `cmd` (see [`super::Kind::impl_version`]).
pub const IMPL_VERSION: u32 = 1;

/// The process to spawn for `stage`, with output going to `log`.
pub fn command(stage: &Stage, root: &Path, log: &std::fs::File) -> std::io::Result<Command> {
    let mut command = match stage.cmd.as_ref() {
        Some(Cmd::Shell(line)) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        }
        Some(Cmd::Argv(argv)) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        None => {
            return Err(std::io::Error::other(format!(
                "stage `{}` has no cmd",
                stage.name
            )));
        }
    };
    super::configure(&mut command, stage, root, log)?;
    Ok(command)
}
