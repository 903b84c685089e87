//! The `ingest` kind's options: where the data comes from (a workspace path, or an http(s)
//! URL pinned by hash), its format and field names, the bad-row policy and the split.
//! Reading, checking and splitting the rows is the engine's (`pipe_engine::data`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The shape of the examples in a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Conversations: a list of role/content messages.
    Chat,
    /// A prompt and the completion the model should learn to produce.
    Completions,
    /// Plain text, all of which is learned.
    Text,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Chat => "chat",
            Format::Completions => "completions",
            Format::Text => "text",
        })
    }
}

/// What to do with a row that fails validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop at the first bad row (the default: bad data should be seen, not trained on).
    #[default]
    Fail,
    /// Leave bad rows out and count them.
    Skip,
}

/// The names of the fields each format reads. Defaults follow mlx-lm's JSONL conventions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMap {
    /// The list of messages (chat).
    pub messages: String,
    /// A message's role (chat).
    pub role: String,
    /// A message's text (chat).
    pub content: String,
    /// The prompt (completions).
    pub prompt: String,
    /// The completion (completions).
    pub completion: String,
    /// The text (text).
    pub text: String,
    /// An optional label per example (completions and chat), kept for per-category
    /// scores in evaluation and reports.
    pub category: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        Self {
            messages: "messages".into(),
            role: "role".into(),
            content: "content".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
            text: "text".into(),
            category: "category".into(),
        }
    }
}

/// Fractions for valid and test (train gets the rest) and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSpec {
    /// Fraction of examples for validation.
    pub valid: f64,
    /// Fraction of examples for test.
    pub test: f64,
    /// Changes which examples land where.
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        Self {
            valid: 0.1,
            test: 0.1,
            seed: 0,
        }
    }
}

impl SplitSpec {
    /// Checks the fractions; the message names the fix.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |f: f64| (0.0..1.0).contains(&f);
        if !ok(self.valid) || !ok(self.test) || self.valid + self.test >= 1.0 {
            return Err(format!(
                "split fractions valid = {} and test = {} must each be in [0, 1) and leave \
                 some data for training (valid + test < 1)",
                self.valid, self.test
            ));
        }
        Ok(())
    }
}

/// The hash a downloaded file must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// sha256, 64 lowercase hex digits (what `sha256sum` prints).
    Sha256(String),
    /// blake3, 64 lowercase hex digits (what `b3sum` prints).
    Blake3(String),
}

impl Pin {
    /// The algorithm's name as written in pipelines (`sha256`, `blake3`).
    pub fn algo(&self) -> &'static str {
        match self {
            Pin::Sha256(_) => "sha256",
            Pin::Blake3(_) => "blake3",
        }
    }

    /// The expected digest.
    pub fn hex(&self) -> &str {
        match self {
            Pin::Sha256(h) | Pin::Blake3(h) => h,
        }
    }
}

/// Checks that `hex` is 64 lowercase hex digits (what `sha256sum` and `b3sum` print).
pub fn check_digest(algo: &str, hex: &str) -> Result<(), String> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "`{algo}: {hex}` is not a {algo} digest (64 lowercase hex digits)"
        ))
    }
}

/// The last path segment of `url` (without query or fragment), if it is a usable file name.
pub fn file_name_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let (_, path) = path.split_once('/')?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != ".." && !name.contains('\\')).then_some(name)
}

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
#[derive(Deserialize, Serialize, JsonSchema)]
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
                check_digest("sha256", &h)?;
                Pin::Sha256(h)
            }
            (None, Some(h)) => {
                check_digest("blake3", &h)?;
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
            None => file_name_of(&url_text)
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

impl JsonSchema for Source {
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
}

/// The ingest options (a stage's `with:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A JSONL/CSV/TSV file, a BIG-bench `task.json` (with `bigbench_prompt`), or a folder
    /// holding `train.*` and optionally `valid.*`/`test.*`; or such a file at an http(s)
    /// URL pinned by hash (see [`Source`]).
    pub source: Source,
    /// Where the splits go.
    pub out: PathBuf,
    /// The format; detected from the first row when absent.
    #[serde(default)]
    pub format: Option<Format>,
    /// Field names.
    #[serde(default)]
    pub fields: FieldMap,
    /// Fail on the first bad row (default) or skip and count bad rows.
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Longest allowed example, in characters.
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Drop exact duplicates (default true).
    #[serde(default = "yes")]
    pub dedup: bool,
    /// How to split a single source file.
    #[serde(default)]
    pub split: SplitSpec,
    /// For BIG-bench JSON tasks: the prompt template around each `input`.
    #[serde(default)]
    pub bigbench_prompt: Option<String>,
    /// More rows for the training split only: a file (or pinned URL) read like `source`.
    /// Its rows never land in valid or test, and (with `dedup`) a row that repeats one of
    /// `source`'s is dropped, so extra data cannot put a held-out example into training.
    #[serde(default)]
    pub train_extra: Option<Source>,
}

fn yes() -> bool {
    true
}
