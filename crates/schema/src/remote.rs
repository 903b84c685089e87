//! A pipeline's `remote:`: the shared cache other machines push to and pull from.
//!
//! ```yaml
//! remote: s3://team-bucket/pipe-cache        # an S3-compatible store
//! remote: /mnt/share/pipe-cache              # or a folder (a mounted share)
//! remote:                                    # or the long form, for other S3 servers
//!   url: s3://team-bucket/pipe-cache
//!   endpoint: https://minio.example.com:9000
//!   region: eu-west-1
//!   profile: research                        # a profile of ~/.aws/config and credentials
//! ```
//!
//! Credentials never go in the pipeline file: they come from the usual AWS variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or an AWS profile.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `remote:` as written: a URL or folder, or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RemoteConfig {
    /// `s3://bucket/prefix`, `file:///path`, or a folder (relative to the workspace).
    Url(String),
    /// The long form.
    Full(RemoteSettings),
}

/// The long form of `remote:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// `s3://bucket/prefix`, `file:///path`, or a folder (relative to the workspace).
    pub url: String,
    /// The S3 endpoint of a server other than AWS (MinIO, Ceph, R2...): `http(s)://host:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The S3 region (default: `AWS_REGION`, the profile's, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// The AWS profile to read credentials and settings from (default: `AWS_PROFILE`).
    #[serde(default)]
    pub profile: Option<String>,
}

impl RemoteConfig {
    /// The long form, whichever way it was written.
    pub fn settings(&self) -> RemoteSettings {
        match self {
            Self::Url(url) => RemoteSettings {
                url: url.clone(),
                endpoint: None,
                region: None,
                profile: None,
            },
            Self::Full(s) => s.clone(),
        }
    }

    /// Checks what can be checked without the network: a URL scheme pipe knows.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let s = self.settings();
        let field = if matches!(self, Self::Url(_)) {
            ""
        } else {
            "url"
        };
        check_url(&s.url).map_err(|m| (field, m))?;
        if let Some(endpoint) = &s.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err((
                    "endpoint",
                    format!("`{endpoint}` is not an http(s) URL, e.g. http://127.0.0.1:9000"),
                ));
            }
            if !s.url.starts_with("s3://") {
                return Err((
                    "endpoint",
                    "`endpoint` only applies to an s3:// remote".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A remote location pipe can use: `s3://bucket[/prefix]`, `file://`, or a plain path.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the remote is empty; give s3://bucket/prefix or a folder".into());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        if bucket.is_empty() {
            return Err(format!("`{url}` names no bucket; write s3://BUCKET/prefix"));
        }
        return Ok(());
    }
    match url.split_once("://") {
        Some(("file", _)) | None => Ok(()),
        Some((scheme, _)) => Err(format!(
            "`{scheme}://` remotes are not supported; use s3:// (any S3-compatible store) or a folder"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_read_the_same_url() {
        let short: RemoteConfig = serde_json::from_str(r#""s3://b/p""#).unwrap();
        let long: RemoteConfig =
            serde_json::from_str(r#"{"url": "s3://b/p", "endpoint": "http://h:9000"}"#).unwrap();
        assert_eq!(short.settings().url, long.settings().url);
        assert_eq!(long.settings().endpoint.as_deref(), Some("http://h:9000"));
        short.check().unwrap();
        long.check().unwrap();
    }

    #[test]
    fn unknown_schemes_and_bucketless_urls_are_refused_with_the_fix() {
        assert!(check_url("gs://b/p").unwrap_err().contains("s3://"));
        assert!(check_url("s3:///p").unwrap_err().contains("BUCKET"));
        assert!(check_url("../share/cache").is_ok());
        let bad: RemoteConfig =
            serde_json::from_str(r#"{"url": "/mnt/x", "endpoint": "http://h"}"#).unwrap();
        assert_eq!(bad.check().unwrap_err().0, "endpoint");
    }
}
