//! `pipe data`: fetch known datasets into the user cache.

use super::UsageError;
use super::output::Printer;
use crate::fetch::{self, FetchOutcome};

/// Subcommands of `pipe data`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download a known dataset into the user cache (a no-op when it is already there) and
    /// print its path.
    #[command(
        after_help = "Examples:\n  pipe data fetch bigbench-past-tense\n  cp \"$(pipe data fetch bigbench-past-tense)\" data/raw/"
    )]
    Fetch {
        /// The dataset id (see `pipe data list`).
        id: String,
    },
    /// List the datasets pipe can fetch.
    List,
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    let cache = crate::dirs::user_cache_dir()?;
    match command {
        Command::Fetch { id } => {
            let dataset = fetch::find_dataset(&id).ok_or_else(|| {
                let known: Vec<_> = fetch::KNOWN_DATASETS.iter().map(|d| d.id).collect();
                UsageError(format!(
                    "unknown dataset `{id}`\nhint: known datasets: {}",
                    known.join(", ")
                ))
            })?;
            let outcome = fetch::fetch(&cache, dataset)?;
            if let FetchOutcome::Installed(_) = outcome {
                printer.status(&format!(
                    "downloaded {}; sha256 verified",
                    dataset.requirement
                ));
            }
            printer.result(&outcome.path().display().to_string());
        }
        Command::List => {
            for d in fetch::KNOWN_DATASETS {
                let fetched = fetch::artifact_path(&cache, d).is_file();
                let mark = if fetched { "fetched" } else { "not fetched" };
                printer.result(&format!("{}  {}  [{mark}]", d.id, d.description));
            }
        }
    }
    Ok(())
}
