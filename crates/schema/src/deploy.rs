//! The `deploy` kind's options, and the serving file it writes (what `pipe serve --config`
//! reads at its next start).
//!
//! ```yaml
//! with:
//!   compare: runs/compare         # a compare stage's out: deploy its recommendation, or
//!   # adapter: runs/lora          # one adapter folder
//!   # registry: quickstart@champion  # with tracking: the registry's alias (MLflow)
//!   model: assistant              # the public name requests use (`"model": "assistant"`)
//!   server: http://127.0.0.1:8080 # the running `pipe serve` (its admin routes)
//!   mode: auto                    # auto: the server if one answers, else only the file
//!   base: smollm2-135m-instruct   # the base model written into the serving file
//!   keep_previous: true           # the version replaced stays loaded (rollback)
//!   out: runs/deploy              # serve.yaml, deploy.json, adapters/<version>/
//! ```

use crate::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The deploy options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// A compare stage's out folder: its recommended variant is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<PathBuf>,
    /// An adapter folder (mlx-lm or PEFT layout) to deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// A registered model version, `NAME@ALIAS` or `NAME/VERSION`, pulled from the MLflow
    /// registry (`tracking_uri`, else `MLFLOW_TRACKING_URI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The MLflow server of `registry` (default: `MLFLOW_TRACKING_URI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    /// The name clients request (`"model": NAME`); routed to the deployed version.
    pub model: String,
    /// The `pipe serve` to deploy to (its loopback admin routes).
    #[serde(default = "default_server")]
    pub server: String,
    /// Where the deployment goes.
    #[serde(default)]
    pub mode: DeployMode,
    /// The base model the serving file names (default: none; `pipe serve --model` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Leave the version the route pointed at before loaded after a swap (a rollback is
    /// then a route change); older versions of this `model` are removed either way.
    #[serde(default = "default_keep")]
    pub keep_previous: bool,
    /// The out folder: `serve.yaml` (the serving file), `deploy.json` (what was deployed)
    /// and `adapters/<version>/` (the deployed adapter, copied).
    pub out: PathBuf,
}

/// How a deploy reaches the serving side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    /// Deploy to the server when one answers; otherwise write the serving file only.
    #[default]
    Auto,
    /// Deploy to the server; fail when none answers.
    Server,
    /// Write the serving file only; never contact a server.
    Config,
}

fn default_server() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_keep() -> bool {
    true
}

impl DeployConfig {
    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), FieldError> {
        let sources = [
            self.compare.is_some(),
            self.adapter.is_some(),
            self.registry.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(FieldError::at(
                "",
                "name exactly one of `compare` (a compare stage's out), `adapter` (a folder) \
                 or `registry` (NAME@ALIAS)",
            ));
        }
        if !valid_name(&self.model) {
            return Err(FieldError::at(
                "model",
                format!(
                    "`{}` cannot be a model name: use letters, digits, `-`, `_` and `.`",
                    self.model
                ),
            ));
        }
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return Err(FieldError::at(
                "server",
                format!(
                    "`{}` is not a server address; write http://host:port",
                    self.server
                ),
            ));
        }
        if let Some(uri) = &self.tracking_uri
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err(FieldError::at(
                "tracking_uri",
                format!("`{uri}` is not an MLflow server address; write http://host:port"),
            ));
        }
        if self.tracking_uri.is_some() && self.registry.is_none() {
            return Err(FieldError::at(
                "tracking_uri",
                "is only read with `registry: NAME@ALIAS`",
            ));
        }
        Ok(())
    }
}

/// A public model name: what the server's adapter names allow, without path characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The serving file (`pipe serve --config FILE`): the base, the adapters to load at
/// start and the public names routed to them. Relative paths are relative to the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingFile {
    /// The base model (`pipe serve --model` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Adapters loaded at start: name to folder.
    #[serde(default)]
    pub adapters: BTreeMap<String, PathBuf>,
    /// Public names to adapters: a request for the key is answered by the value.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
}

impl ServingFile {
    /// The first route that names no adapter of the file, as a message.
    pub fn check(&self) -> Result<(), String> {
        for (route, target) in &self.routes {
            if !self.adapters.contains_key(target) {
                return Err(format!(
                    "route `{route}` names adapter `{target}`, which `adapters` does not list"
                ));
            }
            if self.adapters.contains_key(route) {
                return Err(format!(
                    "`{route}` is both a route and an adapter name; rename one"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(with: serde_json::Value) -> Result<DeployConfig, FieldError> {
        let c: DeployConfig = crate::from_value(&with)?;
        c.validate().map(|()| c)
    }

    #[test]
    fn exactly_one_source_and_a_clean_public_name() {
        let ok =
            config(serde_json::json!({"compare": "c", "model": "assistant", "out": "d"})).unwrap();
        assert_eq!((ok.mode, ok.keep_previous), (DeployMode::Auto, true));
        assert!(config(serde_json::json!({"model": "a", "out": "d"})).is_err());
        assert!(
            config(serde_json::json!({"compare": "c", "adapter": "a", "model": "a", "out": "d"}))
                .is_err()
        );
        let bad = config(serde_json::json!({"adapter": "a", "model": "a/b", "out": "d"}));
        assert_eq!(bad.unwrap_err().path, vec!["model"]);
        let bad = config(
            serde_json::json!({"adapter": "a", "model": "a", "mode": "push",
            "out": "d"}),
        );
        assert_eq!(bad.unwrap_err().path, vec!["mode"]);
    }

    #[test]
    fn a_serving_file_routes_only_to_its_adapters() {
        let mut file = ServingFile::default();
        file.adapters.insert("a-1".into(), "x".into());
        file.routes.insert("a".into(), "a-1".into());
        assert!(file.check().is_ok());
        file.routes.insert("b".into(), "a-2".into());
        assert!(file.check().unwrap_err().contains("a-2"));
    }
}
