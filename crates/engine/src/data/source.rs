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

use crate::fetch::url::{self, Pin};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// An ingest source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file or folder, relative to the workspace root.
    Path(PathBuf),
    /// A file downloaded from `url`, which must hash to `pin`.
    Url {
        /// The http(s) URL.
        url: String,
        /// The file's expected hash.
        pin: Pin,
        /// The file name in the cache (its extension picks the reader).
        name: String,
    },
}

/// `source:` as written, before it is checked.
#[derive(Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blake3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl TryFrom<RawUrl> for Source {
    type Error = String;

    fn try_from(raw: RawUrl) -> Result<Self, String> {
        let url_text = raw.url;
        if !(url_text.starts_with("https://") || url_text.starts_with("http://")) {
            return Err(format!(
                "`source.url` must start with https:// or http://, not `{url_text}`"
            ));
        }
        let pin = match (raw.sha256, raw.blake3) {
            (Some(h), None) => {
                url::check_digest("sha256", &h)?;
                Pin::Sha256(h)
            }
            (None, Some(h)) => {
                url::check_digest("blake3", &h)?;
                Pin::Blake3(h)
            }
            (Some(_), Some(_)) => {
                return Err("`source` has both `sha256` and `blake3`: keep one".into());
            }
            (None, None) => {
                return Err(format!(
                    "the URL source {url_text} is not pinned: add `sha256:` (or `blake3:`) \
                     with the file's hash, so the stage knows which bytes it reads \
                     (get it with `curl -sL {url_text} | sha256sum`)"
                ));
            }
        };
        let name = match raw.name {
            Some(n) => {
                if n.is_empty() || n.contains(['/', '\\']) || n == "." || n == ".." {
                    return Err(format!(
                        "`source.name` must be a plain file name, not `{n}`"
                    ));
                }
                n
            }
            None => url::file_name_of(&url_text)
                .ok_or_else(|| {
                    format!(
                        "cannot tell a file name from {url_text}: add `name: data.jsonl` \
                         (its extension picks the reader)"
                    )
                })?
                .to_owned(),
        };
        Ok(Source::Url {
            url: url_text,
            pin,
            name,
        })
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(path) => Ok(Source::Path(path.into())),
            value @ serde_json::Value::Object(_) => {
                let raw: RawUrl = serde_json::from_value(value)
                    .map_err(|e| D::Error::custom(format!("in `source`: {e}")))?;
                Source::try_from(raw).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(
                "`source` must be a path, or `{url: https://..., sha256: ...}`",
            )),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Source::Path(p) => p.serialize(s),
            Source::Url { url, pin, name } => RawUrl {
                url: url.clone(),
                sha256: matches!(pin, Pin::Sha256(_)).then(|| pin.hex().to_owned()),
                blake3: matches!(pin, Pin::Blake3(_)).then(|| pin.hex().to_owned()),
                name: Some(name.clone()),
            }
            .serialize(s),
        }
    }
}

impl schemars::JsonSchema for Source {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Source".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A file or folder in the workspace, or an http(s) URL pinned by `sha256` or `blake3`",
            "anyOf": [{"type": "string"}, generator.subschema_for::<RawUrl>()]
        })
    }
}

impl Source {
    /// How the source is named in messages: the path as written, or the URL.
    pub fn shown(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Url { url, .. } => url.clone(),
        }
    }

    /// The local file or folder to read: the workspace path, or the verified download in
    /// the user cache (fetched now if it is not there yet).
    pub fn local(&self, root: &Path) -> anyhow::Result<PathBuf> {
        match self {
            Source::Path(p) => Ok(root.join(p)),
            Source::Url { url, pin, name } => {
                let cache = crate::dirs::user_cache_dir()?;
                url::fetch_url(&cache, url, pin, name)
            }
        }
    }

    /// What `stats.json` records about the source: the path and its content hash, or the
    /// URL and its pin.
    pub fn record(&self, root: &Path) -> serde_json::Value {
        match self {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
