//! The model registry from the command line: list a model's versions, move an alias, and
//! pull a version's adapter into the user cache, where generate, evaluate and serve use it
//! like any local adapter folder.

use super::client::{Client, MlflowError, ModelVersion};
use std::path::{Path, PathBuf};

/// `NAME`, `NAME@ALIAS` or `NAME/VERSION` (MLflow's `models:/` prefix allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// The newest version.
    Latest(String),
    /// The version an alias points at.
    Alias(String, String),
    /// A version number.
    Version(String, String),
}

impl ModelRef {
    /// Parses a reference as users write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_prefix("models:/").unwrap_or(text);
        let bad =
            || format!("`{text}` is not a model reference; write NAME@ALIAS, NAME/VERSION or NAME");
        if let Some((name, alias)) = text.split_once('@') {
            return (!name.is_empty() && !alias.is_empty())
                .then(|| ModelRef::Alias(name.into(), alias.into()))
                .ok_or_else(bad);
        }
        if let Some((name, version)) = text.rsplit_once('/') {
            return (!name.is_empty() && version.parse::<u64>().is_ok())
                .then(|| ModelRef::Version(name.into(), version.into()))
                .ok_or_else(bad);
        }
        (!text.is_empty())
            .then(|| ModelRef::Latest(text.into()))
            .ok_or_else(bad)
    }

    /// The registered model's name.
    pub fn name(&self) -> &str {
        match self {
            ModelRef::Latest(n) | ModelRef::Alias(n, _) | ModelRef::Version(n, _) => n,
        }
    }
}

/// The version a reference names.
pub fn resolve(client: &Client, model: &ModelRef) -> Result<ModelVersion, MlflowError> {
    match model {
        ModelRef::Alias(name, alias) => client.version_by_alias(name, alias),
        ModelRef::Version(name, version) => client.model_version(name, version),
        ModelRef::Latest(name) => {
            client
                .model_versions(name)?
                .pop()
                .ok_or_else(|| MlflowError::Refused {
                    server: client.server().to_owned(),
                    call: "model-versions/search".into(),
                    status: 404,
                    code: "RESOURCE_DOES_NOT_EXIST".into(),
                    message: format!("registered model `{name}` has no versions"),
                })
        }
    }
}

/// Downloads the files of `version` (its `source`, a folder of run artifacts) into
/// `<cache>/registry/<server>/<name>/<version>/`, unless they are there already, and
/// returns the folder. Files are written atomically and the folder is published by a
/// rename, so an interrupted pull leaves no half adapter behind.
pub fn pull(client: &Client, version: &ModelVersion, cache: &Path) -> Result<PathBuf, MlflowError> {
    let server = blake3::hash(client.server().as_bytes()).to_hex()[..12].to_owned();
    let dest = cache
        .join("registry")
        .join(server)
        .join(&version.name)
        .join(&version.version);
    if dest.join("adapter_config.json").is_file() {
        return Ok(dest);
    }
    let (artifact_root, rel) = split_source(&version.source).ok_or_else(|| {
        MlflowError::Io(format!(
            "version {} of `{}` has source `{}`, which is not in a run's artifacts on this server",
            version.version, version.name, version.source
        ))
    })?;
    let io = |e: std::io::Error| MlflowError::Io(format!("cannot write {}: {e}", dest.display()));
    let parent = dest.parent().expect("dest has a parent");
    std::fs::create_dir_all(parent).map_err(io)?;
    let staging = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(parent)
        .map_err(io)?;
    let mut folders = vec![String::new()];
    while let Some(sub) = folders.pop() {
        let listed = if sub.is_empty() {
            rel.clone()
        } else {
            format!("{rel}/{sub}")
        };
        for file in client.list_artifacts(&artifact_root, &listed)? {
            let name = file
                .path
                .rsplit('/')
                .next()
                .unwrap_or(&file.path)
                .to_owned();
            let inner = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            if file.is_dir {
                folders.push(inner);
            } else {
                client.download(
                    &artifact_root,
                    &format!("{rel}/{inner}"),
                    &staging.path().join(&inner),
                )?;
            }
        }
    }
    if !staging.path().join("adapter_config.json").is_file() {
        return Err(MlflowError::Io(format!(
            "version {} of `{}` has no adapter_config.json under `{}`; it is not an adapter pipe registered",
            version.version, version.name, version.source
        )));
    }
    let staged = staging.keep();
    if std::fs::rename(&staged, &dest).is_err() {
        // Pulled concurrently by another process: theirs is as good.
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(dest)
}

/// `mlflow-artifacts:/1/<run>/artifacts/adapter` -> (`mlflow-artifacts:/1/<run>/artifacts`,
/// `adapter`).
fn split_source(source: &str) -> Option<(String, String)> {
    let at = source.find("/artifacts/")?;
    let root = &source[..at + "/artifacts".len()];
    let rel = &source[at + "/artifacts/".len()..];
    (source.starts_with("mlflow-artifacts:") && !rel.is_empty())
        .then(|| (root.to_owned(), rel.trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            ModelRef::parse("qs@champion").unwrap(),
            ModelRef::Alias("qs".into(), "champion".into())
        );
        assert_eq!(
            ModelRef::parse("models:/qs/3").unwrap(),
            ModelRef::Version("qs".into(), "3".into())
        );
        assert_eq!(
            ModelRef::parse("qs").unwrap(),
            ModelRef::Latest("qs".into())
        );
        assert!(ModelRef::parse("qs@").is_err());
        assert!(ModelRef::parse("qs/x").is_err());
    }

    #[test]
    fn sources_split_at_the_artifact_root() {
        assert_eq!(
            split_source("mlflow-artifacts:/1/abc/artifacts/adapter"),
            Some(("mlflow-artifacts:/1/abc/artifacts".into(), "adapter".into()))
        );
        assert_eq!(split_source("s3://b/x"), None);
    }
}
