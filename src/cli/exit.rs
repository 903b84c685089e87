//! Turning a command's outcome into a message and an exit code, in one place.

use super::output::Printer;

/// An error caused by how pipe was invoked or configured (bad flags, invalid pipeline):
/// exit code 2. Everything else that fails exits with 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A failure already reported to the user (for example a stage whose log was shown):
/// exit code 1 without printing anything more.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

/// Another run holds the workspace lock and this one was asked not to wait
/// (`--skip-if-running`, scheduled runs): exit code 75, sysexits.h's EX_TEMPFAIL.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Busy(pub String);

/// The user interrupted the run (SIGINT/SIGTERM): exit code 130, as shells expect.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; partial outs were removed and the interrupted stages will rerun")]
pub struct Interrupted;

/// Prints the error, if any, and returns the process exit code.
pub(crate) fn report(printer: &Printer, result: anyhow::Result<()>) -> u8 {
    let Err(err) = result else {
        return 0;
    };
    if is_broken_pipe(&err) {
        return 0;
    }
    if let Some(busy) = err.downcast_ref::<Busy>() {
        // Not an error: the run was skipped on purpose; say so without alarm.
        printer.status(&busy.0);
        return pipe_engine::schedule::EXIT_BUSY as u8;
    }
    printer.error(&format!("{err:#}"));
    if err.downcast_ref::<Interrupted>().is_some() {
        130
    } else if err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
