//! `pipe model`: fetch known models into the user cache and say where they are.

use super::UsageError;
use super::output::Printer;
use pipe_engine::fetch::{self, FetchOutcome};
use serde::Serialize;

/// Subcommands of `pipe model`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download a known model into the user cache (a no-op when it is already there).
    #[command(
        after_help = "Examples:\n  pipe model fetch smollm2-135m-instruct\n  PIPE_CACHE_DIR=/data/pipe pipe model fetch smollm2"
    )]
    Fetch {
        /// The model id (see `pipe model list`).
        id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the models pipe can fetch and whether each is in the cache.
    List {
        /// Print the result as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the path of a fetched model (exit 1 if it is not fetched yet).
    Path {
        /// The model id.
        id: String,
    },
}

#[derive(Serialize)]
struct ModelStatus<'a> {
    id: &'a str,
    description: &'a str,
    path: String,
    fetched: bool,
}

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    let cache = pipe_engine::dirs::user_cache_dir()?;
    match command {
        Command::Fetch { id, json } => {
            let model = lookup(&id)?;
            if !json {
                printer.status(&format!("fetching {} ({})", model.id, model.requirement));
            }
            let outcome = fetch::fetch(&cache, model)?;
            let path = outcome.path().display().to_string();
            if json {
                return printer.json(&serde_json::json!({
                    "id": model.id,
                    "path": path,
                    "downloaded": matches!(outcome, FetchOutcome::Installed(_)),
                }));
            }
            match outcome {
                FetchOutcome::AlreadyPresent(_) => printer.status("already in the cache"),
                FetchOutcome::Installed(_) => printer.status("downloaded; sha256 verified"),
            }
            printer.result(&path);
        }
        Command::List { json } => {
            for model in fetch::KNOWN_MODELS {
                let path = fetch::artifact_path(&cache, model);
                let status = ModelStatus {
                    id: model.id,
                    description: model.description,
                    fetched: path.is_file(),
                    path: path.display().to_string(),
                };
                if json {
                    printer.json(&status)?;
                } else {
                    let mark = if status.fetched {
                        "fetched"
                    } else {
                        "not fetched"
                    };
                    printer.result(&format!("{}  {}  [{mark}]", status.id, status.description));
                }
            }
        }
        Command::Path { id } => {
            let model = lookup(&id)?;
            let path = fetch::artifact_path(&cache, model);
            if !path.is_file() {
                anyhow::bail!(
                    "{} is not fetched yet (expected at {})\nhint: run `pipe model fetch {}`",
                    model.id,
                    path.display(),
                    model.id
                );
            }
            printer.result(&path.display().to_string());
        }
    }
    Ok(())
}

fn lookup(id: &str) -> anyhow::Result<&'static fetch::Artifact> {
    fetch::find(id).ok_or_else(|| {
        let known: Vec<_> = fetch::KNOWN_MODELS.iter().map(|m| m.id).collect();
        UsageError(format!(
            "unknown model `{id}`\nhint: known models: {}",
            known.join(", ")
        ))
        .into()
    })
}
