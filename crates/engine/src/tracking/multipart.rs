//! Large artifacts in parts, through the tracking server's multipart proxy
//! (`/api/2.0/mlflow-artifacts/mpu/{create,complete,abort}`). The server answers `create`
//! with one presigned URL per part of its cloud store (S3, GCS, Azure), the parts go
//! straight to the store, and `complete` assembles them. A server whose store cannot do this
//! (a local folder) answers `501 Not Implemented`, and the file goes up in one streamed PUT
//! instead, as MLflow's own client does.

use super::client::MlflowError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// MLflow's default: files from 500 MiB up go in parts.
const DEFAULT_MIN_BYTES: u64 = 500 << 20;
/// MLflow's default part size, 10 MiB (S3 takes parts of 5 MiB and up, but the last).
const DEFAULT_PART_BYTES: u64 = 10 << 20;
/// S3's (and so MLflow's) most parts per upload.
const MAX_PARTS: u64 = 10_000;

/// When a file goes up in parts, and how big they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Files of at least this many bytes go in parts.
    pub min_bytes: u64,
    /// The size of each part but the last.
    pub part_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_bytes: DEFAULT_MIN_BYTES,
            part_bytes: DEFAULT_PART_BYTES,
        }
    }
}

impl Policy {
    /// Read from MLflow's own client settings (`MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE`,
    /// `MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE`, in bytes), so a team's tuning of its MLflow
    /// clients applies to pipe as well. Unreadable values keep the defaults.
    pub fn from_env() -> Self {
        let read = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&v| v > 0)
                .unwrap_or(default)
        };
        Policy {
            min_bytes: read(
                "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
                DEFAULT_MIN_BYTES,
            ),
            part_bytes: read("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", DEFAULT_PART_BYTES),
        }
    }

    /// The parts of a file of `size` bytes, as `(offset, length)`, or `None` when it goes
    /// up in one piece. Parts grow past `part_bytes` if the store's part limit needs it.
    pub fn parts(&self, size: u64) -> Option<Vec<(u64, u64)>> {
        if size < self.min_bytes || size == 0 {
            return None;
        }
        let part = self.part_bytes.max(size.div_ceil(MAX_PARTS));
        Some(
            (0..size.div_ceil(part))
                .map(|i| {
                    let offset = i * part;
                    (offset, part.min(size - offset))
                })
                .collect(),
        )
    }
}

/// One part's presigned upload, as the server's `create` answers it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Credential {
    pub url: String,
    pub part_number: u64,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The server's answer to `create`.
#[derive(Debug, Deserialize)]
pub(super) struct Created {
    #[serde(default)]
    pub upload_id: Option<String>,
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// Whether the server said its artifact store cannot take uploads in parts.
pub(super) fn unsupported(err: &MlflowError) -> bool {
    matches!(err, MlflowError::Refused { status, code, message, .. }
        if *status == 501
            || code == "NOT_IMPLEMENTED"
            || message.starts_with("Multipart upload is not supported"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_go_in_one_piece_and_large_ones_in_parts_that_cover_them_exactly() {
        let policy = Policy {
            min_bytes: 100,
            part_bytes: 40,
        };
        assert_eq!(policy.parts(99), None);
        assert_eq!(policy.parts(100), Some(vec![(0, 40), (40, 40), (80, 20)]));
        assert_eq!(policy.parts(120), Some(vec![(0, 40), (40, 40), (80, 40)]));
    }

    #[test]
    fn parts_grow_to_stay_within_the_stores_part_limit() {
        let policy = Policy {
            min_bytes: 1,
            part_bytes: 1,
        };
        let parts = policy.parts(25_000).unwrap();
        assert!(parts.len() as u64 <= MAX_PARTS);
        assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 25_000);
        assert!(parts.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }

    #[test]
    fn a_local_store_refusal_is_recognised() {
        let refused = |status, code: &str, message: &str| MlflowError::Refused {
            server: "http://x".into(),
            call: "mpu/create".into(),
            status,
            code: code.into(),
            message: message.into(),
        };
        assert!(unsupported(&refused(
            501,
            "NOT_IMPLEMENTED",
            "Multipart upload is not supported for the current artifact repository"
        )));
        assert!(!unsupported(&refused(403, "PERMISSION_DENIED", "no")));
    }
}
