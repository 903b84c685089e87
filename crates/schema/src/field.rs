//! Where inside `with:` a value is wrong.

use serde::de::DeserializeOwned;

/// A problem with one key of a stage's `with:`: the key path (`["lora", "rank"]`) and
/// what is wrong. The engine turns the path into a `file:line:col` in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("`{}`: ", path.join(".")) })]
pub struct FieldError {
    /// Keys from the top of `with:` down to the offending one (empty: `with:` itself).
    pub path: Vec<String>,
    /// What is wrong, in one sentence, with the fix where there is one.
    pub message: String,
    /// For an unknown key: the keys that would be known there (for "did you mean").
    pub expected: Vec<String>,
}

impl FieldError {
    /// A problem with the key at `path` (dotted, e.g. `lora.rank`).
    pub fn at(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path
                .split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            message: message.into(),
            expected: Vec::new(),
        }
    }
}

/// Deserializes `value` into `T`, reporting the path of the key that did not fit. An
/// unknown key is reported at the key itself, not at the mapping that holds it.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, FieldError> {
    let empty = serde_json::Value::Object(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = e.inner().to_string();
        match unknown_key(&message) {
            Some((key, expected)) => {
                if path.last() != Some(&key) {
                    path.push(key);
                }
                FieldError {
                    path,
                    message: "unknown key".into(),
                    expected,
                }
            }
            None => FieldError {
                path,
                message,
                expected: Vec::new(),
            },
        }
    })
}

/// The key and the known keys named by serde's "unknown field `x`, expected one of `a`,
/// `b`" message.
fn unknown_key(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split_once("expected")
        .map(|(_, list)| {
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some((key.to_owned(), expected))
}
