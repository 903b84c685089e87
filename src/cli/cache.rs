//! `pipe cache`: maintenance of the workspace cache (`verify`).

use super::Failure;
use super::output::Printer;
use crate::cache::Store;
use std::path::PathBuf;

/// Subcommands of `pipe cache`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rehash every object; move corrupt ones to cache/v1/quarantine/ (exit 1 if any).
    #[command(after_help = "Examples:\n  pipe cache verify\n  pipe cache verify --json")]
    Verify {
        /// Workspace root (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    let Command::Verify { root, json } = command;
    let root = match root {
        Some(r) => r,
        None => std::env::current_dir()?,
    };
    let store = Store::open(&root);
    let report = store.verify()?;
    if json {
        printer.json(&report)?;
    } else {
        for hash in &report.corrupt {
            printer.error(&format!(
                "object {hash} is corrupt; moved to {}",
                store.dir().join("quarantine").join(hash).display()
            ));
        }
        printer.result(&format!(
            "checked {} objects: {} corrupt",
            report.checked,
            report.corrupt.len()
        ));
    }
    if !report.corrupt.is_empty() {
        return Err(Failure(format!(
            "{} corrupt objects quarantined; rerun the stages that produced them (`pipe run --force -s STAGE`)",
            report.corrupt.len()
        ))
        .into());
    }
    Ok(())
}
