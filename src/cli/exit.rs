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
