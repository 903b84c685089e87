//! The lock file (`<pipeline>.lock`, e.g. `pipe.lock`): what each stage last ran with and
//! produced. Human-readable YAML in a deterministic order (stages and keys sorted), meant
//! to be committed like `dvc.lock`. Rewritten atomically (temporary file + rename) after
//! every successful stage: a stage counts as done only once its entry is in this file,
//! which is what makes a `kill -9` at any moment safe.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the lock file format.
pub const LOCK_SCHEMA: u32 = 1;

/// Why a lock file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    /// I/O failed.
    #[error("cannot {op} lock file {path}")]
    Io {
        /// "read" or "write".
        op: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a lock file pipe understands.
    #[error("lock file {path} is invalid: {message} (delete it to rerun everything)")]
    Invalid {
        /// The lock file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// The whole lock file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockFile {
    /// [`LOCK_SCHEMA`].
    pub schema: u32,
    /// Stage name -> what it last ran with.
    #[serde(default)]
    pub stages: BTreeMap<String, LockEntry>,
}

/// One stage's last successful run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockEntry {
    /// The stage key's hash.
    pub fingerprint: String,
    /// The stage kind.
    pub kind: String,
    /// The kind's implementation version.
    pub impl_version: u32,
    /// Hash of the definition (cmd, `with`, paths).
    pub definition: String,
    /// A short hash of each part of the definition ([`super::fingerprint::definition_parts`]),
    /// so a changed definition names what changed; absent in older lock files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definition_parts: BTreeMap<String, String>,
    /// Dep path -> content hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, String>,
    /// Param key -> value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// Out path -> content hash.
    #[serde(default)]
    pub outs: BTreeMap<String, String>,
}

impl LockFile {
    /// Reads `path`; a missing file is an empty lock file.
    pub fn load(path: &Path) -> Result<Self, LockFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(LockFileError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_yaml::from_str(&text).map_err(|e| LockFileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<(), LockFileError> {
        let io = |source| LockFileError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        };
        let mut text = String::from("# Written by `pipe run`. Commit this file; do not edit it.\n");
        let mut this = self.clone();
        this.schema = LOCK_SCHEMA;
        text.push_str(&serde_yaml::to_string(&this).expect("lock file serialises"));
        crate::atomic_write::write_atomic(path, text.as_bytes()).map_err(io)
    }
}
