//! Where an ingest reads from: a path in the workspace, or an http(s) URL pinned by hash.
//!
//! ```yaml
//! source: data/raw/qa.jsonl                    # a file or folder in the workspace
//! source:
//!   url: https://example.org/qa.jsonl          # fetched once into the user cache
//!   sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!   name: qa.jsonl                             # optional; the URL's last segment
//! ```
//!
//! A URL without `sha256` or `blake3` is refused when the pipeline loads: a stage key made
//! of the URL alone would say nothing about the bytes, and checking them would need the
//! network on every run. The pin is in `with:`, so it is in the stage's fingerprint, and a
//! no-op run touches no network.

use crate::fetch::url;
pub use pipe_schema::ingest::Source;
use std::path::{Path, PathBuf};

/// The local file or folder to read: the workspace path, or the verified download in
/// the user cache (fetched now if it is not there yet).
pub fn local(source: &Source, root: &Path) -> anyhow::Result<PathBuf> {
    match source {
        Source::Path(p) => Ok(root.join(p)),
        Source::Url { url, pin, name } => {
            let cache = crate::dirs::user_cache_dir()?;
            url::fetch_url(&cache, url, pin, name)
        }
    }
}

/// What `stats.json` records about the source: the path and its content hash, or the
/// URL and its pin.
pub fn record(source: &Source, root: &Path) -> serde_json::Value {
    match source {
        Source::Path(p) => {
            let rel = p.to_string_lossy();
            let hash = crate::cache::Store::open(root)
                .hash_path(&rel)
                .ok()
                .flatten();
            serde_json::json!({"path": rel, "blake3": hash})
        }
        Source::Url { url, pin, .. } => {
            serde_json::json!({"url": url, pin.algo(): pin.hex()})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::url::Pin;

    fn parse(yaml: &str) -> Result<Source, String> {
        serde_yaml::from_str::<Source>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn paths_and_pinned_urls_parse() {
        assert_eq!(
            parse("raw/a.jsonl").unwrap(),
            Source::Path("raw/a.jsonl".into())
        );
        let sha = "a".repeat(64);
        let s = parse(&format!(
            "{{url: 'https://h/x/qa.csv?dl=1', sha256: {sha}}}"
        ))
        .unwrap();
        assert_eq!(
            s,
            Source::Url {
                url: "https://h/x/qa.csv?dl=1".into(),
                pin: Pin::Sha256(sha.clone()),
                name: "qa.csv".into()
            }
        );
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["sha256"], sha.as_str());
        assert_eq!(serde_json::from_value::<Source>(back).unwrap(), s);
    }

    #[test]
    fn an_unpinned_url_is_refused_with_a_hint() {
        let err = parse("{url: 'https://h/qa.jsonl'}").unwrap_err();
        assert!(err.contains("is not pinned"), "{err}");
        assert!(
            err.contains("curl -sL https://h/qa.jsonl | sha256sum"),
            "{err}"
        );
    }

    #[test]
    fn bad_url_sources_say_what_is_wrong() {
        let b3 = "b".repeat(64);
        for (yaml, want) in [
            (
                "{url: 'ftp://h/a.jsonl', blake3: x}".to_owned(),
                "must start with https://",
            ),
            (
                "{url: 'https://h/a.jsonl', sha256: abc}".to_owned(),
                "is not a sha256 digest",
            ),
            (
                format!("{{url: 'https://h/', blake3: {b3}}}"),
                "add `name: data.jsonl`",
            ),
            (
                format!("{{url: 'https://h/a', blake3: {b3}, sha256: {b3}}}"),
                "keep one",
            ),
            (
                format!("{{url: 'https://h/a', blake3: {b3}, sha: 1}}"),
                "unknown field `sha`",
            ),
            ("[1]".to_owned(), "must be a path"),
        ] {
            let err = parse(&yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
