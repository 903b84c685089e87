//! Which adapter a deploy serves (a compare stage's pick, a folder, or a registry version),
//! its version name, and its copy in the deploy's out folder.
//!
//! The version name is the public name and the first 12 hex digits of the blake3 hash of
//! the adapter's files, so deploying the same weights twice names the same version (a
//! deploy is idempotent) and different weights never share a name.

use crate::tracking::client::Client;
use crate::tracking::registry::{self, ModelRef};
use anyhow::{Context, bail};
use pipe_schema::deploy::DeployConfig;
use std::path::{Path, PathBuf};

/// The files an adapter is served from (mlx-lm and PEFT layouts); checkpoints, logs and
/// metrics beside them are not part of a release.
const ADAPTER_FILES: [&str; 3] = [
    "adapter_config.json",
    "adapters.safetensors",
    "adapter_model.safetensors",
];

/// The adapter a deploy serves.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its folder.
    pub dir: PathBuf,
    /// What it is, for messages and `deploy.json` (`compare runs/c: lora`, a folder, a
    /// registry version).
    pub describe: String,
}

/// Finds the adapter `config` names.
pub fn find(config: &DeployConfig, root: &Path) -> anyhow::Result<Source> {
    if let Some(dir) = &config.adapter {
        return Ok(Source {
            dir: root.join(dir),
            describe: dir.display().to_string(),
        });
    }
    if let Some(compare) = &config.compare {
        let comparison = super::super::compare::read(&root.join(compare))?;
        let Some(variant) = comparison.recommendation.variant else {
            bail!(
                "the compare stage's out {} recommends no variant (none met its constraints); \
                 nothing to deploy, and what is served stays as it is",
                compare.display()
            );
        };
        let Some(train) = comparison.recommended_train else {
            bail!(
                "{} does not name the recommended variant's out_dir (written by an older \
                 pipe); rerun the compare stage: pipe run --force -s STAGE",
                compare.display()
            );
        };
        return Ok(Source {
            dir: root.join(&train),
            describe: format!("{variant} ({train}), recommended by {}", compare.display()),
        });
    }
    let Some(reference) = &config.registry else {
        bail!("a deploy stage names no adapter (`compare`, `adapter` or `registry`)");
    };
    let uri = match &config.tracking_uri {
        Some(uri) => uri.clone(),
        None => std::env::var("MLFLOW_TRACKING_URI").map_err(|_| {
            anyhow::anyhow!(
                "`registry: {reference}` needs an MLflow server: set `tracking_uri` in the \
                 stage's `with:` or MLFLOW_TRACKING_URI"
            )
        })?,
    };
    let model = ModelRef::parse(reference).map_err(anyhow::Error::msg)?;
    let client = Client::new(&uri);
    let version = registry::resolve(&client, &model)?;
    let cache = crate::dirs::user_cache_dir()?;
    let dir = registry::pull(&client, &version, &cache)?;
    Ok(Source {
        dir,
        describe: format!(
            "{reference} (version {} of `{}`)",
            version.version, version.name
        ),
    })
}

/// The adapter's files in `dir`, by name, checked to make an adapter.
fn adapter_files(dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    if !dir.join("adapter_config.json").is_file() {
        bail!(
            "{} is not an adapter folder (no adapter_config.json); point the deploy at a \
             train stage's out_dir",
            dir.display()
        );
    }
    let files: Vec<&str> = ADAPTER_FILES
        .into_iter()
        .filter(|f| dir.join(f).is_file())
        .collect();
    if files.len() < 2 {
        bail!(
            "{} holds no adapter weights (adapters.safetensors or adapter_model.safetensors)",
            dir.display()
        );
    }
    Ok(files)
}

/// The version name of the adapter in `dir`: `{public}-{12 hex digits of its content}`.
pub fn version_name(public: &str, dir: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    for name in adapter_files(dir)? {
        let path = dir.join(name);
        let bytes = fs_err::read(&path)?;
        // Name and length first: two files' bytes can never run into one another.
        hasher.update(name.as_bytes());
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(format!("{public}-{}", &hasher.finalize().to_hex()[..12]))
}

/// Whether `name` is a version name of `public` (so a deploy only ever retires its own).
pub fn is_version_of(public: &str, name: &str) -> bool {
    name.strip_prefix(public)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hash| hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Copies the adapter's files into `release` (a folder named after the version), unless
/// it is there already; the folder appears whole (written aside, then renamed).
pub fn copy_release(dir: &Path, release: &Path) -> anyhow::Result<()> {
    if release.join("adapter_config.json").is_file() {
        return Ok(());
    }
    let parent = release.parent().context("a release folder has a parent")?;
    fs_err::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".release-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    for name in adapter_files(dir)? {
        fs_err::copy(dir.join(name), staging.path().join(name))?;
    }
    let staged = staging.keep();
    crate::atomic_write::sync_dir(&staged)?;
    if let Err(e) = fs_err::rename(&staged, release) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.into());
    }
    crate::atomic_write::sync_dir(parent)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(dir: &Path, weights: &[u8]) {
        fs_err::create_dir_all(dir).unwrap();
        fs_err::write(dir.join("adapter_config.json"), b"{}").unwrap();
        fs_err::write(dir.join("adapters.safetensors"), weights).unwrap();
        fs_err::write(dir.join("train_log.jsonl"), b"not part of a release").unwrap();
    }

    #[test]
    fn versions_follow_the_weights_and_releases_hold_only_adapter_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        adapter(&a, b"one");
        adapter(&b, b"two");
        let va = version_name("assistant", &a).unwrap();
        assert_eq!(va, version_name("assistant", &a).unwrap());
        assert_ne!(va, version_name("assistant", &b).unwrap());
        assert!(is_version_of("assistant", &va));
        assert!(!is_version_of("assistant", "assistant-v2"));
        assert!(!is_version_of("assist", &va));
        let release = tmp.path().join("out/adapters").join(&va);
        copy_release(&a, &release).unwrap();
        assert_eq!(version_name("assistant", &release).unwrap(), va);
        assert!(!release.join("train_log.jsonl").exists());
        let e = version_name("assistant", tmp.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("adapter_config.json"), "{e}");
    }
}
