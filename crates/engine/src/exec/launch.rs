//! Building the processes that run stages: the one place that knows the argv of
//! `pipe __run-stage` and the environment every child of a pipeline gets.

use crate::spec::{Cmd, Stage};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden subcommand that runs one built-in stage.
pub const RUN_STAGE: &str = "__run-stage";

/// The process that runs `stage`, with stdout and stderr going to `log`, from what the
/// pipeline resolved: the user's command (`cmd:`, run with `sh -c` or as an argv list),
/// else `pipe __run-stage KIND --root ROOT --config JSON` for a built-in kind.
pub fn stage_command(stage: &Stage, root: &Path, log: &std::fs::File) -> std::io::Result<Command> {
    let mut command = match &stage.cmd {
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
        None => run_stage_command(stage.kind.name(), root, &stage.config)?,
    };
    configure_stage(&mut command, stage, root, log)?;
    Ok(command)
}

/// `pipe __run-stage KIND --root ROOT --config JSON` with this very executable: `config`
/// is the kind's resolved configuration ([`crate::stages::Resolved::config`]), passed
/// once, as JSON. Stages and tune trials both start this way, from the program that
/// started the run even if its file has been removed since ([`crate::process::this_program`]).
pub fn run_stage_command(kind: &str, root: &Path, config: &Value) -> std::io::Result<Command> {
    let mut command = crate::process::this_program()?;
    command
        .arg(RUN_STAGE)
        .arg(kind)
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(config.to_string());
    Ok(command)
}

/// The environment every stage process gets: [`configure_child`] plus `PIPE_STAGE`.
pub fn configure_stage(
    command: &mut Command,
    stage: &Stage,
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
        // A `pipe run` started by a stage (a monitor's retraining) runs inside this run's
        // workspace lock instead of waiting for it (`lock::acquire`).
        .env(super::lock::PARENT_RUN_ENV, std::process::id().to_string())
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
        // Only the direct child: what the command starts itself is ended by the next
        // run (`groups::reap`).
        crate::process::die_with_parent(command);
    }
    Ok(())
}

/// Starts `command` (configured by [`configure_child`]) and records its process group for
/// the run after a crash ([`super::groups`]); `outs` are the workspace-relative paths it
/// writes, removed by that run if this one dies first. Drop the registration once the
/// child has ended and its group is empty.
pub fn spawn_registered(
    command: &mut Command,
    root: &Path,
    what: &str,
    outs: &[String],
) -> std::io::Result<(std::process::Child, super::groups::Registration)> {
    let mut child = command.spawn()?;
    match super::groups::register(root, child.id(), what, outs) {
        Ok(registration) => Ok((child, registration)),
        Err(e) => {
            // Unrecorded, a crash could leave it running: don't run it at all.
            let _ = crate::process::signal_group(child.id(), crate::process::Signal::Kill);
            let _ = child.wait();
            Err(std::io::Error::new(
                e.kind(),
                format!("cannot record the process group of {what}: {e}"),
            ))
        }
    }
}
