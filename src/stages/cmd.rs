//! The `cmd` kind: run a shell command (`sh -c`) or an argv list, in the workspace root.
//!
//! The child gets `PIPE_STAGE` (its stage name) and `PIPE_ROOT`, and the directory of the
//! running `pipe` executable first on `PATH` so a command can call `pipe` itself and get
//! this very version. stdout and stderr both go to the stage's log file. The child runs
//! in its own process group so an interrupt can stop it and everything it spawned.

use crate::spec::{Cmd, Stage};
use std::path::Path;
use std::process::{Command, Stdio};

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
    command
        .current_dir(root)
        .env("PIPE_STAGE", &stage.name)
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
        // if pipe dies, so a `kill -9` of pipe does not leave orphans writing outs.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    Ok(command)
}
