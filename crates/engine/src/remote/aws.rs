//! Connection settings for an S3 remote, taken where the AWS tools take them: the
//! pipeline's `remote:` first, then the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`...), then
//! the profile (`AWS_PROFILE`, default `default`) of the shared files `~/.aws/credentials`
//! and `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`).
//!
//! The profile files are read here because the object store crate reads only the
//! environment; their format is the documented INI one, with `[profile NAME]` sections in
//! the config file and `[NAME]` sections in the credentials file.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use pipe_schema::remote::RemoteSettings;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A profile's settings from the shared files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
}

/// Reads profile `name` from the texts of the credentials and config files.
pub fn read_profile(name: &str, credentials: &str, config: &str) -> Result<Profile, String> {
    let section =
        |text: &str, section: &str, file: &str| -> Result<BTreeMap<String, String>, String> {
            let ini = ini::Ini::load_from_str(text).map_err(|e| format!("{file}: {e}"))?;
            Ok(ini
                .section(Some(section))
                .map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default())
        };
    let creds = section(credentials, name, "the AWS credentials file")?;
    let config_section = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let conf = section(config, &config_section, "the AWS config file")?;
    let get = |key: &str| creds.get(key).or_else(|| conf.get(key)).cloned();
    Ok(Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: conf.get("region").or_else(|| creds.get("region")).cloned(),
        endpoint_url: get("endpoint_url"),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_file(var: &str, default: &str) -> Option<PathBuf> {
    env(var)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join(default)))
}

/// The profile the settings or `AWS_PROFILE` name, from this machine's shared files
/// (empty when they do not exist).
fn load_profile(settings: &RemoteSettings) -> Result<Profile, String> {
    let name = settings
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let read = |p: Option<PathBuf>| {
        p.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let credentials = read(home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config = read(home_file("AWS_CONFIG_FILE", "config"));
    let profile = read_profile(&name, &credentials, &config)?;
    if settings.profile.is_some() && profile == Profile::default() {
        return Err(format!(
            "AWS profile `{name}` is not in ~/.aws/credentials or ~/.aws/config (check `remote: profile:`)"
        ));
    }
    Ok(profile)
}

/// The S3 endpoint in use: the pipeline's, else the environment's, else the profile's;
/// `None` for AWS itself.
pub fn endpoint(settings: &RemoteSettings, profile: &Profile) -> Option<String> {
    settings
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .or_else(|| profile.endpoint_url.clone())
}

/// An S3 client for `bucket`.
pub fn s3(bucket: &str, settings: &RemoteSettings) -> Result<AmazonS3, String> {
    let profile = load_profile(settings)?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if env("AWS_ACCESS_KEY_ID").is_none()
        && let (Some(id), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key)
    {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
        if let Some(token) = &profile.session_token {
            builder = builder.with_token(token);
        }
    }
    let region = settings
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.region.clone())
        .unwrap_or_else(|| "us-east-1".into());
    builder = builder.with_region(region);
    if let Some(endpoint) = endpoint(settings, &profile) {
        // A local or private server (MinIO, moto) often speaks plain HTTP on a port.
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[research]\naws_access_key_id = R\naws_secret_access_key = RS\naws_session_token = T\n";
    const CONFIG: &str = "[default]\nregion = us-west-2\n\n[profile research]\nregion = eu-west-1\nendpoint_url = http://minio:9000\n";

    #[test]
    fn a_named_profile_reads_its_own_sections_of_both_files() {
        let p = read_profile("research", CREDENTIALS, CONFIG).unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("R"));
        assert_eq!(p.session_token.as_deref(), Some("T"));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        assert_eq!(p.endpoint_url.as_deref(), Some("http://minio:9000"));
        let d = read_profile("default", CREDENTIALS, CONFIG).unwrap();
        assert_eq!(
            (d.access_key_id.as_deref(), d.region.as_deref()),
            (Some("D"), Some("us-west-2"))
        );
    }

    #[test]
    fn a_missing_profile_is_empty_and_a_broken_file_says_which() {
        assert_eq!(
            read_profile("nope", CREDENTIALS, CONFIG).unwrap(),
            Profile::default()
        );
        let err = read_profile("default", "[default\nx", "").unwrap_err();
        assert!(err.contains("credentials file"), "{err}");
    }
}
