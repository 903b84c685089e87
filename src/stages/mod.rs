//! Built-in ML stage kinds (placeholder module until merged with the engine's stages).

pub mod evaluate;
pub mod ingest;
pub mod train;

use std::path::Path;

/// Parses a stage's `with:` into a kind's config, naming the kind on error.
pub fn parse_with<T: serde::de::DeserializeOwned>(
    kind: &str,
    with: &serde_json::Value,
) -> anyhow::Result<T> {
    serde_json::from_value(with.clone()).map_err(|e| anyhow::anyhow!("{kind} stage `with`: {e}"))
}

/// Writes JSON atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}
