//! A pipeline's `tracking:`: where its runs are logged besides the local run history.
//!
//! ```yaml
//! tracking:
//!   mlflow: http://mlflow.internal:5000   # or MLFLOW_TRACKING_URI
//!   experiment: past-tense                # default: the pipeline's name
//!   register: past-tense-adapters         # registered model; default: the pipeline's name
//!   alias: champion                       # set by compare on the recommended version
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `tracking:` mapping as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// The MLflow tracking server (`http://host:port`). Without it, `MLFLOW_TRACKING_URI`
    /// is used when set; without either, runs are recorded locally only.
    #[serde(default)]
    pub mlflow: Option<String>,
    /// The MLflow experiment (default: the pipeline's name).
    #[serde(default)]
    pub experiment: Option<String>,
    /// The registered model that trained adapters become versions of (default: the
    /// pipeline's name); `false` registers nothing.
    #[serde(default)]
    pub register: Option<Register>,
    /// The alias a `compare` stage sets on the version it recommends.
    #[serde(default = "default_alias")]
    pub alias: String,
}

/// `register:` is a model name, or `false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Register {
    /// `false` turns registration off (`true` is the default name).
    Enabled(bool),
    /// The registered model's name.
    Name(String),
}

fn default_alias() -> String {
    "champion".into()
}

impl TrackingConfig {
    /// The first problem, with the key it concerns.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(uri) = &self.mlflow
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err((
                "mlflow",
                format!(
                    "`{uri}` is not an MLflow server address; pipe talks to MLflow over HTTP \
                     (`http://host:port`), and keeps its own local run history without one"
                ),
            ));
        }
        if let Some(Register::Name(name)) = &self.register
            && name.trim().is_empty()
        {
            return Err(("register", "the registered model name is empty".into()));
        }
        if self.alias.is_empty()
            || !self
                .alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err((
                "alias",
                format!(
                    "`{}` is not a valid alias (letters, digits, `_` and `-`)",
                    self.alias
                ),
            ));
        }
        Ok(())
    }

    /// The registered model name for a pipeline called `pipeline`, unless registration is
    /// off.
    pub fn model_name(&self, pipeline: &str) -> Option<String> {
        match &self.register {
            None | Some(Register::Enabled(true)) => Some(pipeline.to_owned()),
            Some(Register::Enabled(false)) => None,
            Some(Register::Name(name)) => Some(name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> TrackingConfig {
        crate::from_value(&v).unwrap()
    }

    #[test]
    fn defaults_and_names() {
        let t = parse(serde_json::json!({"mlflow": "http://127.0.0.1:5000"}));
        assert_eq!(t.alias, "champion");
        assert_eq!(t.model_name("qs").as_deref(), Some("qs"));
        assert!(t.check().is_ok());
        let off = parse(serde_json::json!({"register": false}));
        assert_eq!(off.model_name("qs"), None);
        let named = parse(serde_json::json!({"register": "adapters"}));
        assert_eq!(named.model_name("qs").as_deref(), Some("adapters"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let e = crate::from_value::<TrackingConfig>(&serde_json::json!({"experiments": "x"}))
            .unwrap_err();
        assert_eq!(e.path, ["experiments"]);
        assert!(e.expected.contains(&"experiment".to_string()));
        let t = parse(serde_json::json!({"mlflow": "mlruns"}));
        assert_eq!(t.check().unwrap_err().0, "mlflow");
        let t = parse(serde_json::json!({"alias": "a b"}));
        assert_eq!(t.check().unwrap_err().0, "alias");
    }
}
