//! Which adapter a monitor watches (or a retrain produced): a folder, or a registered
//! version pulled from the MLflow registry as `pipe model pull` does, with its content
//! hash (the history's model identity) and, for the registry, what promotion moves.

use crate::stages::deploy::source::version_name;
use crate::tracking::client::{Client, ModelVersion};
use crate::tracking::registry::{self, ModelRef};
use std::path::{Path, PathBuf};

/// An adapter to score.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its folder.
    pub dir: PathBuf,
    /// What it is, for people.
    pub describe: String,
    /// The content hash of its adapter files (12 hex digits).
    pub hash: String,
    /// The registered version, when it came from the registry.
    pub version: Option<ModelVersion>,
}

/// The MLflow server a stage names, or `MLFLOW_TRACKING_URI`.
pub fn tracking_uri(configured: Option<&str>, reference: &str) -> anyhow::Result<String> {
    match configured {
        Some(uri) => Ok(uri.to_owned()),
        None => std::env::var("MLFLOW_TRACKING_URI").map_err(|_| {
            anyhow::anyhow!(
                "`{reference}` needs an MLflow server: set `tracking_uri` in the stage's `with:` \
                 or MLFLOW_TRACKING_URI"
            )
        }),
    }
}

/// A folder in the workspace.
pub fn folder(root: &Path, dir: &Path) -> anyhow::Result<Model> {
    let full = root.join(dir);
    Ok(Model {
        hash: hash(&full)?,
        describe: dir.display().to_string(),
        dir: full,
        version: None,
    })
}

/// A registered version (`NAME@ALIAS`, `NAME/VERSION`), pulled into the user cache.
pub fn registered(uri: &str, reference: &str) -> anyhow::Result<Model> {
    let model = ModelRef::parse(reference).map_err(anyhow::Error::msg)?;
    let client = Client::new(uri);
    let version = registry::resolve(&client, &model)?;
    let dir = registry::pull(&client, &version, &crate::dirs::user_cache_dir()?)?;
    Ok(Model {
        hash: hash(&dir)?,
        describe: format!(
            "{reference} (version {} of `{}`)",
            version.version, version.name
        ),
        dir,
        version: Some(version),
    })
}

/// Points `reference`'s alias (`NAME@ALIAS`) at `version`: the promotion.
pub fn move_alias(uri: &str, reference: &str, version: &ModelVersion) -> anyhow::Result<()> {
    let ModelRef::Alias(name, alias) = ModelRef::parse(reference).map_err(anyhow::Error::msg)?
    else {
        anyhow::bail!(
            "`{reference}` names a fixed version, not an alias: there is nothing to move; \
             watch NAME@ALIAS to let the monitor promote"
        );
    };
    if version.name != name {
        anyhow::bail!(
            "the candidate is a version of `{}`, not of `{name}`: an alias only points within \
             its own registered model",
            version.name
        );
    }
    Client::new(uri).set_alias(&name, &alias, &version.version)?;
    Ok(())
}

/// The content hash of an adapter folder's files (12 hex digits), as a deploy names it.
fn hash(dir: &Path) -> anyhow::Result<String> {
    let name = version_name("m", dir)?;
    Ok(name.trim_start_matches("m-").to_owned())
}
