//! Where a remote is: parsed from `remote:` (or `--remote`, `PIPE_REMOTE`).

use std::path::{Path, PathBuf};

/// A parsed remote location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on a file system this machine mounts (absolute).
    Dir(PathBuf),
    /// An S3-compatible bucket and a key prefix inside it (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix every key starts with (empty for the bucket's root).
        prefix: String,
    },
}

impl Location {
    /// Parses `url`; a relative folder is taken relative to `root` (the workspace), so a
    /// pipeline that says `remote: ../shared-cache` means the same folder from any cwd.
    pub fn parse(url: &str, root: &Path) -> Result<Self, String> {
        pipe_schema::remote::check_url(url)?;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let abs = if path.is_absolute() {
            path.to_owned()
        } else {
            root.join(path)
        };
        Ok(Self::Dir(abs))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_a_clean_prefix() {
        let root = Path::new("/ws");
        assert_eq!(
            Location::parse("s3://b/team/cache/", root).unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "team/cache".into()
            }
        );
        let bare = Location::parse("s3://b", root).unwrap();
        assert_eq!(bare.to_string(), "s3://b");
    }

    #[test]
    fn folders_are_relative_to_the_workspace_not_the_cwd() {
        let root = Path::new("/ws");
        assert_eq!(
            Location::parse("../share", root).unwrap(),
            Location::Dir(PathBuf::from("/ws/../share"))
        );
        assert_eq!(
            Location::parse("file:///mnt/c", root).unwrap(),
            Location::Dir(PathBuf::from("/mnt/c"))
        );
        assert!(Location::parse("ftp://x", root).is_err());
    }
}
