//! The `version` kind: snapshot a data folder into the workspace's content store and write
//! its version record, or bring back a version recorded earlier (see
//! [`crate::data::version`]).
//!
//! ```yaml
//! version:                        # snapshot the current data
//!   kind: version
//!   with:
//!     data: runs/q/data           # dep: the folder (an ingest `out`, or any folder)
//!     out: runs/q/version.json    # out: the version record
//!
//! pinned:                         # use a recorded version instead of the current data
//!   kind: version
//!   with:
//!     version: 3fa2c1d9e0b4       # an id from `pipe data log` (a unique prefix will do)
//!     to: runs/q/pinned           # out: the version's files
//!     out: runs/q/pinned.json     # out: its record
//! ```
//!
//! A pinned stage has no deps: its fingerprint holds the id, and the id *is* the content
//! hash, so the stage is stable for as long as the pin is unchanged, whatever happens to
//! the current data.

use crate::cache::Store;
use crate::data::version::{self, VersionRecord};
use std::path::{Path, PathBuf};

/// Implementation version (part of every version stage's fingerprint).
/// The `version` kind.
pub struct Version;

impl super::StageKind for Version {
    fn name(&self) -> &'static str {
        "version"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "snapshot a data folder as a content-addressed version, or restore a recorded one"
    }
    fn resolve(
        &self,
        with: &serde_json::Value,
    ) -> Result<super::Resolved, pipe_schema::FieldError> {
        let config = config_of(with)?;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Ok(super::Resolved {
            deps: path(&config.data).into_iter().collect(),
            outs: path(&config.to)
                .into_iter()
                .chain([config.out.display().to_string()])
                .collect(),
            config: with.clone(),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<VersionConfig>()
    }
    fn outcome(&self, config: &serde_json::Value, root: &Path) -> crate::history::outcome::Outcome {
        let mut o = crate::history::outcome::Outcome::default();
        if let Ok(config) = serde_json::from_value::<VersionConfig>(config.clone()) {
            let out = config.out.display().to_string();
            if let Some(id) = crate::history::outcome::read_json(&root.join(&out))
                .and_then(|v| v["id"].as_str().map(str::to_owned))
            {
                o.tags.insert("data_version".into(), id);
            }
            o.add_artifact(root, &out, crate::history::record::ArtifactRole::Metrics);
        }
        o
    }
}

pub use pipe_schema::version::VersionConfig;

/// Parses and checks a `with:` (at load time and before running).
pub fn config_of(with: &serde_json::Value) -> Result<VersionConfig, pipe_schema::FieldError> {
    let config: VersionConfig = super::parse_with(with)?;
    config
        .check()
        .map_err(|(key, e)| pipe_schema::FieldError::at(key, e))?;
    Ok(config)
}

/// Runs a version stage.
pub fn run(with: &serde_json::Value, root: &Path) -> anyhow::Result<()> {
    let config = config_of(with)?;
    let store = Store::open(root);
    let record: VersionRecord = match (&config.data, &config.version) {
        (Some(data), _) => {
            let record = version::snapshot(&store, &data.to_string_lossy())?;
            eprintln!(
                "data version {} of {}: {} files, {}",
                &record.id[..12],
                record.data,
                record.files,
                rows_summary(&record)
            );
            record
        }
        (None, Some(id)) => {
            let record = version::resolve(&store, id)?;
            let to = config
                .to
                .as_ref()
                .expect("checked: `to` goes with `version`");
            version::checkout(&store, &record, &root.join(to))?;
            eprintln!(
                "restored data version {} ({} files, {}) into {}",
                &record.id[..12],
                record.files,
                rows_summary(&record),
                to.display()
            );
            record
        }
        (None, None) => unreachable!("checked: `data` or `version`"),
    };
    super::write_json(&root.join(&config.out), &record)
}

/// `train 1420, valid 178, test 177` (or `no .jsonl files`).
pub fn rows_summary(record: &VersionRecord) -> String {
    if record.rows.is_empty() {
        return "no .jsonl files".into();
    }
    record
        .rows
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<VersionConfig, String> {
        let with: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        config_of(&with).map_err(|e| e.to_string())
    }

    #[test]
    fn with_is_checked_for_each_mode() {
        assert!(check("{data: d, out: v.json}").is_ok());
        assert!(check("{version: 3fa2c1, to: p, out: v.json}").is_ok());
        for (yaml, want) in [
            ("{out: v.json}", "missing `data`"),
            ("{data: d, version: ab, to: p, out: v.json}", "not both"),
            ("{data: d, to: p, out: v.json}", "`to` goes with `version`"),
            ("{version: ab, out: v.json}", "needs `to`"),
            ("{version: xyz, to: p, out: v.json}", "not a version id"),
            ("{data: d}", "missing field `out`"),
            ("{data: d, out: v.json, dat: x}", "`dat`: unknown key"),
            ("{version: 123456, to: p, out: v.json}", "quote the id"),
        ] {
            let err = check(yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
