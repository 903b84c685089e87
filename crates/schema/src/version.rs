//! The `version` kind's options: snapshot a folder, or restore a recorded version.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A version stage's `with:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// The folder to snapshot (snapshot mode).
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// A recorded version to restore (pinned mode).
    #[serde(default, deserialize_with = "id_string")]
    pub version: Option<String>,
    /// Where a pinned version's files go.
    #[serde(default)]
    pub to: Option<PathBuf>,
    /// The version record (JSON).
    pub out: PathBuf,
}

impl VersionConfig {
    /// The first problem, with the key it concerns.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match (&self.data, &self.version) {
            (Some(_), Some(_)) => Err((
                "version",
                "give either `data` (snapshot a folder) or `version` (use a recorded one), not both"
                    .into(),
            )),
            (None, None) => Err((
                "",
                "missing `data` (the folder to snapshot) or `version` (a recorded id from `pipe data log`)"
                    .into(),
            )),
            (Some(_), None) if self.to.is_some() => Err((
                "to",
                "`to` goes with `version`; a snapshot of `data` writes only `out`".into(),
            )),
            (None, Some(_)) if self.to.is_none() => Err((
                "version",
                "a pinned `version` needs `to`, the folder its files are restored into".into(),
            )),
            (None, Some(id)) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Err((
                    "version",
                    format!(
                        "`version: {id}` is not a version id (hex digits, as `pipe data log` prints them)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A version id must stay text: YAML reads an all-digit prefix like `123456` as a number,
/// which would lose leading zeros.
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Null => Ok(None),
        other => Err(serde::de::Error::custom(format!(
            "`version: {other}` must be a string: quote the id, e.g. `version: \"{other}\"`"
        ))),
    }
}
