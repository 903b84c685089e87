//! The shared remote cache: what one machine computed, another pulls instead of running.
//!
//! A remote is an S3-compatible bucket (`remote: s3://bucket/prefix`) or a folder
//! (`remote: /mnt/share/pipe-cache`, a mounted share). It holds the same content-addressed
//! objects as the workspace cache, the run-cache entries that name them, and recorded data
//! versions:
//!
//! ```text
//! <remote>/v1/objects/ab/cdef...            content, named by blake3 hex (as cache/v1/objects)
//! <remote>/v1/runs/<fingerprint>.json       run-cache entries (fingerprint -> outs)
//! <remote>/v1/data/versions/<id>.json       data versions (`pipe data push`)
//! <remote>/v1/tune/trials/<key>.json        finished tune trials (see [`trials`])
//! <remote>/v1/tune/studies/<study>.jsonl    tune study journals
//! ```
//!
//! Why this is safe with many writers and no locks: an object's name is its hash, so two
//! machines pushing the same object write the same bytes, and a push never needs to
//! overwrite anything; a run entry is written only after every object it names is on the
//! remote, so a reader never follows an entry to a missing object. Every download is
//! rehashed before it enters the local cache: a corrupt or tampered remote object is
//! refused, never used. Every upload is rehashed first too, so a local object damaged
//! behind pipe's back is not spread to other machines.
//!
//! The object store crate does the protocol work (S3 signing, multipart uploads, retries
//! with backoff; atomic rename-into-place for folders); [`aws`] finds the credentials.

pub mod aws;
mod location;
mod sync;
mod transfer;
mod trials;

pub use location::Location;
pub use sync::{
    PullReport, PushReport, StageTransfer, fetch_run, pull_lock, pull_versions, push_lock,
    push_versions,
};
pub use transfer::Counts;
pub use trials::{pull_trials, push_trials};

use object_store::ObjectStore;
use pipe_schema::remote::RemoteSettings;
use std::path::Path;
use std::sync::Arc;

/// Why a remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The remote's settings are wrong (bad URL, unknown profile...).
    #[error("remote `{url}`: {why}")]
    Config {
        /// The remote as written.
        url: String,
        /// What is wrong, with the fix.
        why: String,
    },
    /// A folder remote that does not exist (pulling never creates one).
    #[error("remote folder {0} does not exist (is the share mounted? `pipe push` creates it)")]
    NoFolder(std::path::PathBuf),
    /// The store refused or failed a request.
    #[error("{op} {key} on {remote}: {message}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The key.
        key: String,
        /// The remote.
        remote: String,
        /// The store's error, with a hint for credentials.
        message: String,
    },
    /// A downloaded object did not hash to its name.
    #[error(
        "object {hex} on {remote} is corrupt ({why}); it was refused and nothing was restored from it\nhint: delete it from the remote, then `pipe push` from a machine whose `pipe cache verify` is clean"
    )]
    Corrupt {
        /// The object.
        hex: String,
        /// The remote.
        remote: String,
        /// What the check found.
        why: String,
    },
    /// An object to push is missing from, or damaged in, the local cache.
    #[error("{0}")]
    Local(#[from] crate::cache::CacheError),
    /// A run-cache entry or data version on the remote is not valid JSON.
    #[error("{key} on {remote} is not a valid record: {why}")]
    BadRecord {
        /// The key.
        key: String,
        /// The remote.
        remote: String,
        /// The parse error.
        why: String,
    },
}

/// An open remote.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    location: Location,
    /// The key prefix inside the store, ending in `v1/`.
    base: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.location)
    }
}

/// Bump when the remote layout changes (a new layout lives beside the old one).
const LAYOUT: &str = "v1";

impl Remote {
    /// Opens the remote `settings` name; a relative folder is relative to the workspace
    /// `root`. `create` makes a missing folder remote (pushing); pulling from a missing
    /// one is an error.
    pub fn open(settings: &RemoteSettings, root: &Path, create: bool) -> Result<Self, RemoteError> {
        let config = |why: String| RemoteError::Config {
            url: settings.url.clone(),
            why,
        };
        let location = Location::parse(&settings.url, root).map_err(config)?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match &location {
            Location::Dir(dir) => {
                if create {
                    fs_err::create_dir_all(dir).map_err(|e| config(e.to_string()))?;
                } else if !dir.is_dir() {
                    return Err(RemoteError::NoFolder(dir.clone()));
                }
                let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| config(e.to_string()))?;
                (Arc::new(local), String::new())
            }
            Location::S3 { bucket, prefix } => (
                Arc::new(aws::s3(bucket, settings).map_err(config)?),
                prefix.clone(),
            ),
        };
        let base = if prefix.is_empty() {
            format!("{LAYOUT}/")
        } else {
            format!("{prefix}/{LAYOUT}/")
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| config(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Self {
            store,
            location,
            base,
            runtime,
        })
    }

    /// Where the remote is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn key(&self, rel: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}{rel}", self.base))
    }

    fn store_error(
        &self,
        op: &'static str,
        key: &object_store::path::Path,
        e: object_store::Error,
    ) -> RemoteError {
        let text = e.to_string();
        let hint =
            if text.contains("403") || text.contains("Forbidden") || text.contains("credential") {
                " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile)"
            } else if text.contains("NoSuchBucket") {
                " (create the bucket first)"
            } else {
                ""
            };
        RemoteError::Store {
            op,
            key: key.to_string(),
            remote: self.location.to_string(),
            message: format!("{text}{hint}"),
        }
    }
}

fn object_rel(hex: &str) -> String {
    format!("objects/{}/{}", &hex[..2], &hex[2..])
}

fn run_rel(fingerprint: &str) -> String {
    format!("runs/{fingerprint}.json")
}

fn version_rel(id: &str) -> String {
    format!("data/versions/{id}.json")
}
