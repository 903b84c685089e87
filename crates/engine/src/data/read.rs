//! Reading JSONL and CSV/TSV files into [`Example`]s, with every bad row reported by file
//! and line.

use super::{Example, Format, Message, Role};
use std::path::{Path, PathBuf};

pub use pipe_schema::ingest::{ErrorPolicy, FieldMap};

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The expected format; `None` detects it from the first row's fields.
    pub format: Option<Format>,
    /// Field names.
    pub fields: FieldMap,
    /// Fail or skip on bad rows.
    pub on_error: ErrorPolicy,
    /// Rows longer than this many characters are errors (they would be truncated silently
    /// at tokenization otherwise).
    pub max_chars: Option<usize>,
}

/// Why a row is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowErrorKind {
    /// The line is not valid JSON.
    #[error("invalid JSON: {message}")]
    BadJson {
        /// serde_json's description.
        message: String,
    },
    /// A row is not a JSON object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error(
        "missing field `{field}` (the {format} format needs it; map other names with `fields:`)"
    )]
    MissingField {
        /// The field name.
        field: String,
        /// The format that needs it.
        format: Format,
    },
    /// A field has the wrong type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field name.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A text field is empty or only whitespace.
    #[error("field `{field}` is empty")]
    Empty {
        /// The field name.
        field: String,
    },
    /// A chat message names a role that does not exist.
    #[error("unknown role `{role}` (expected system, user, assistant or tool)")]
    UnknownRole {
        /// The role found.
        role: String,
    },
    /// A chat has no assistant message, so nothing would be learned.
    #[error("the conversation has no assistant message to learn from")]
    NoAssistant,
    /// A row is longer than `max_chars`.
    #[error("the example has {chars} characters, more than max_chars = {max}")]
    TooLong {
        /// Its length.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A row's fields belong to none of the formats.
    #[error("cannot tell the format: no `{messages}`, `{prompt}`/`{completion}` or `{text}` field")]
    UnknownFormat {
        /// Field names looked for.
        messages: String,
        /// Field names looked for.
        prompt: String,
        /// Field names looked for.
        completion: String,
        /// Field names looked for.
        text: String,
    },
    /// A multiple-choice row whose answer is none of its choices.
    #[error("the answer {answer:?} is not one of `choices`: list it there, spelt the same")]
    AnswerNotAChoice {
        /// The row's answer.
        answer: String,
    },
    /// A CSV record could not be read.
    #[error("invalid CSV: {message}")]
    BadCsv {
        /// The csv crate's description.
        message: String,
    },
}

/// A bad row, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind}", file.display())]
pub struct RowError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub kind: RowErrorKind,
}

/// The rows of one file that passed, each with its line number, and the ones that failed
/// (only under [`ErrorPolicy::Skip`]; under `Fail` the first bad row is the `Err`).
pub type ReadResult = Result<(Vec<(usize, Example)>, Vec<RowError>), ReadError>;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A row is bad and the policy is `fail`.
    #[error("{0}\nhint: fix the row, or set `on_error: skip` to leave bad rows out")]
    Row(Box<RowError>),
    /// The extension names no format we read.
    #[error("{}: unsupported file type (expected .jsonl, .json, .csv or .tsv)", path.display())]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
}

/// Reads one JSONL, CSV or TSV file.
pub fn read_examples(path: &Path, options: &ReadOptions) -> ReadResult {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let rows: Vec<(usize, Result<serde_json::Value, RowErrorKind>)> = match ext.as_deref() {
        Some("jsonl") | Some("json") => read_jsonl(path)?,
        Some("csv") => read_delimited(path, b',')?,
        Some("tsv") => read_delimited(path, b'\t')?,
        _ => {
            return Err(ReadError::UnsupportedFile {
                path: path.to_owned(),
            });
        }
    };
    let mut format = options.format;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (line, row) in rows {
        let parsed = row.and_then(|value| {
            let fmt = match format {
                Some(f) => f,
                None => {
                    let detected = detect_format(&value, &options.fields)?;
                    format = Some(detected);
                    detected
                }
            };
            parse_row(&value, fmt, options)
        });
        match parsed {
            Ok(example) => good.push((line, example)),
            Err(kind) => {
                let err = RowError {
                    file: path.to_owned(),
                    line,
                    kind,
                };
                match options.on_error {
                    ErrorPolicy::Fail => return Err(ReadError::Row(Box::new(err))),
                    ErrorPolicy::Skip => bad.push(err),
                }
            }
        }
    }
    Ok((good, bad))
}

type RawRows = Vec<(usize, Result<serde_json::Value, RowErrorKind>)>;

fn read_jsonl(path: &Path) -> std::io::Result<RawRows> {
    let text = fs_err::read_to_string(path)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let value = serde_json::from_str(line).map_err(|e| RowErrorKind::BadJson {
                message: e.to_string(),
            });
            (i + 1, value)
        })
        .collect())
}

fn read_delimited(path: &Path, delimiter: u8) -> std::io::Result<RawRows> {
    let file = fs_err::File::open(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| std::io::Error::other(format!("{}: bad header: {e}", path.display())))?
        .clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line() as usize);
                let object: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| {
                        // A CSV cell holding a JSON list (e.g. messages) is read as JSON.
                        let value = if v.trim_start().starts_with('[') {
                            serde_json::from_str(v).unwrap_or_else(|_| v.into())
                        } else {
                            v.into()
                        };
                        (h.to_owned(), value)
                    })
                    .collect();
                rows.push((line, Ok(serde_json::Value::Object(object))));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                rows.push((
                    line,
                    Err(RowErrorKind::BadCsv {
                        message: e.to_string(),
                    }),
                ));
            }
        }
    }
    Ok(rows)
}

fn detect_format(value: &serde_json::Value, fields: &FieldMap) -> Result<Format, RowErrorKind> {
    let object = value.as_object().ok_or(RowErrorKind::NotAnObject)?;
    if object.contains_key(&fields.messages) {
        Ok(Format::Chat)
    } else if object.contains_key(&fields.prompt) || object.contains_key(&fields.completion) {
        Ok(Format::Completions)
    } else if object.contains_key(&fields.text) {
        Ok(Format::Text)
    } else {
        Err(RowErrorKind::UnknownFormat {
            messages: fields.messages.clone(),
            prompt: fields.prompt.clone(),
            completion: fields.completion.clone(),
            text: fields.text.clone(),
        })
    }
}

fn parse_row(
    value: &serde_json::Value,
    format: Format,
    options: &ReadOptions,
) -> Result<Example, RowErrorKind> {
    let object = value.as_object().ok_or(RowErrorKind::NotAnObject)?;
    let fields = &options.fields;
    let example = match format {
        Format::Text => Example::Text {
            text: string_field(object, &fields.text, format, false)?,
        },
        Format::Completions => Example::Completion {
            // A prompt may be empty (pure continuation); a completion may not.
            prompt: string_field(object, &fields.prompt, format, true)?,
            completion: string_field(object, &fields.completion, format, false)?,
            category: category_field(object, &fields.category)?,
            choices: choices_field(object)?,
        },
        Format::Chat => {
            let list = object
                .get(&fields.messages)
                .ok_or_else(|| RowErrorKind::MissingField {
                    field: fields.messages.clone(),
                    format,
                })?
                .as_array()
                .ok_or_else(|| RowErrorKind::WrongType {
                    field: fields.messages.clone(),
                    expected: "a list of messages",
                })?;
            let mut messages = Vec::with_capacity(list.len());
            for item in list {
                let message = item.as_object().ok_or_else(|| RowErrorKind::WrongType {
                    field: fields.messages.clone(),
                    expected: "a list of objects with role and content",
                })?;
                let role_name = string_field(message, &fields.role, format, false)?;
                let role =
                    Role::parse(&role_name).ok_or(RowErrorKind::UnknownRole { role: role_name })?;
                let content =
                    string_field(message, &fields.content, format, role != Role::Assistant)?;
                messages.push(Message { role, content });
            }
            if !messages.iter().any(|m| m.role == Role::Assistant) {
                return Err(RowErrorKind::NoAssistant);
            }
            Example::Chat {
                messages,
                category: category_field(object, &fields.category)?,
            }
        }
    };
    if let Example::Completion {
        completion,
        choices,
        ..
    } = &example
        && !choices.is_empty()
        && !choices.contains(completion)
    {
        return Err(RowErrorKind::AnswerNotAChoice {
            answer: completion.clone(),
        });
    }
    if let Some(max) = options.max_chars {
        let chars = example.char_len();
        if chars > max {
            return Err(RowErrorKind::TooLong { chars, max });
        }
    }
    Ok(example)
}

/// A multiple-choice row's `choices`: at least two distinct non-empty strings.
fn choices_field(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, RowErrorKind> {
    let wrong = || RowErrorKind::WrongType {
        field: CHOICES.to_owned(),
        expected: "a list of at least two different, non-empty strings",
    };
    let list = match object.get(CHOICES) {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => return Err(wrong()),
    };
    let mut choices = Vec::with_capacity(list.len());
    for item in list {
        match item.as_str() {
            Some(s) if !s.trim().is_empty() && !choices.iter().any(|c: &String| c == s) => {
                choices.push(s.to_owned())
            }
            _ => return Err(wrong()),
        }
    }
    if choices.len() < 2 {
        return Err(wrong());
    }
    Ok(choices)
}

/// The field of a multiple-choice row that lists its answers.
const CHOICES: &str = "choices";

/// The optional category: a string, or absent (an empty one counts as absent).
fn category_field(
    object: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<String>, RowErrorKind> {
    match object.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RowErrorKind::WrongType {
            field: field.to_owned(),
            expected: "a string",
        }),
    }
}

fn string_field(
    object: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    format: Format,
    may_be_empty: bool,
) -> Result<String, RowErrorKind> {
    let value = object
        .get(field)
        .ok_or_else(|| RowErrorKind::MissingField {
            field: field.to_owned(),
            format,
        })?;
    let text = value.as_str().ok_or_else(|| RowErrorKind::WrongType {
        field: field.to_owned(),
        expected: "a string",
    })?;
    if !may_be_empty && text.trim().is_empty() {
        return Err(RowErrorKind::Empty {
            field: field.to_owned(),
        });
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, body: &str, options: &ReadOptions) -> ReadResult {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        read_examples(&path, options)
    }

    fn first_error(name: &str, body: &str) -> RowError {
        match read(name, body, &ReadOptions::default()) {
            Err(ReadError::Row(e)) => *e,
            other => panic!("expected a row error, got {other:?}"),
        }
    }

    #[test]
    fn jsonl_formats_are_detected() {
        let (rows, _) = read(
            "a.jsonl",
            "{\"prompt\":\"p\",\"completion\":\"c\"}\n\n{\"prompt\":\"\",\"completion\":\"d\"}\n",
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0, 3, "line numbers count blank lines");
        let (rows, _) = read("t.jsonl", "{\"text\":\"hello\"}\n", &ReadOptions::default()).unwrap();
        assert_eq!(
            rows[0].1,
            Example::Text {
                text: "hello".into()
            }
        );
    }

    #[test]
    fn each_bad_row_names_file_line_and_problem() {
        let e = first_error("a.jsonl", "{\"text\":\"ok\"}\n{not json}\n");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, RowErrorKind::BadJson { .. }));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: invalid JSON", e.file.display()))
        );

        let e = first_error(
            "a.jsonl",
            "{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"prompt\":\"p\"}\n",
        );
        assert!(
            matches!(e.kind, RowErrorKind::MissingField { ref field, .. } if field == "completion")
        );

        let e = first_error("a.jsonl", "{\"text\":\"  \"}\n");
        assert!(matches!(e.kind, RowErrorKind::Empty { .. }));

        let e = first_error(
            "a.jsonl",
            "{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}\n",
        );
        assert_eq!(
            e.kind,
            RowErrorKind::UnknownRole {
                role: "wizard".into()
            }
        );

        let e = first_error(
            "a.jsonl",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n",
        );
        assert_eq!(e.kind, RowErrorKind::NoAssistant);

        let e = first_error("a.jsonl", "[1,2]\n");
        assert_eq!(e.kind, RowErrorKind::NotAnObject);

        let e = first_error("a.jsonl", "{\"question\":\"q\"}\n");
        assert!(matches!(e.kind, RowErrorKind::UnknownFormat { .. }));
    }

    #[test]
    fn multiple_choice_rows_keep_their_choices_and_must_list_their_answer() {
        let (rows, _) = read(
            "mc.jsonl",
            r#"{"prompt":"go?","completion":"went","choices":["goed","went"]}"#,
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(rows[0].1.choices(), ["goed", "went"]);
        let e = first_error(
            "mc.jsonl",
            "{\"prompt\":\"p\",\"completion\":\"ok\"}\n{\"prompt\":\"go?\",\"completion\":\"gone\",\"choices\":[\"goed\",\"went\"]}\n",
        );
        assert_eq!(e.line, 2);
        assert_eq!(
            e.kind,
            RowErrorKind::AnswerNotAChoice {
                answer: "gone".into()
            }
        );
        for choices in [
            r#""went""#,
            r#"["went"]"#,
            r#"["went","went"]"#,
            r#"["went",""]"#,
            r#"["went",3]"#,
        ] {
            let row = format!(r#"{{"prompt":"go?","completion":"went","choices":{choices}}}"#);
            let e = first_error("mc.jsonl", &row);
            assert!(
                matches!(&e.kind, RowErrorKind::WrongType { field, .. } if field == "choices"),
                "{choices}: {e}"
            );
        }
    }

    #[test]
    fn over_long_rows_are_errors() {
        let options = ReadOptions {
            max_chars: Some(5),
            ..ReadOptions::default()
        };
        match read("a.jsonl", "{\"text\":\"abcdefgh\"}\n", &options) {
            Err(ReadError::Row(e)) => {
                assert_eq!(e.kind, RowErrorKind::TooLong { chars: 8, max: 5 })
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skip_policy_counts_bad_rows() {
        let options = ReadOptions {
            on_error: ErrorPolicy::Skip,
            ..ReadOptions::default()
        };
        let (good, bad) = read(
            "a.jsonl",
            "{\"text\":\"a\"}\nnope\n{\"text\":\"\"}\n{\"text\":\"b\"}\n",
            &options,
        )
        .unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn csv_with_mapped_fields() {
        let options = ReadOptions {
            fields: FieldMap {
                prompt: "question".into(),
                completion: "answer".into(),
                ..FieldMap::default()
            },
            ..ReadOptions::default()
        };
        let (rows, _) = read(
            "qa.csv",
            "question,answer\n\"What, then?\",yes\nWhy,no\n",
            &options,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 2);
        assert_eq!(
            rows[0].1,
            Example::Completion {
                prompt: "What, then?".into(),
                completion: "yes".into(),
                category: None,
                choices: Vec::new(),
            }
        );
        let (rows, _) = read("qa.tsv", "question\tanswer\nq\ta\n", &options).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn a_category_is_kept_and_written_back_only_when_present() {
        let (rows, _) = read(
            "c.jsonl",
            "{\"prompt\":\"go\",\"completion\":\"went\",\"category\":\"irregular\"}\n{\"prompt\":\"walk\",\"completion\":\"walked\",\"category\":\"\"}\n",
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(rows[0].1.category(), Some("irregular"));
        assert_eq!(rows[1].1.category(), None, "empty is none");
        assert_eq!(
            serde_json::to_string(&rows[0].1).unwrap(),
            r#"{"prompt":"go","completion":"went","category":"irregular"}"#
        );
        assert_eq!(
            serde_json::to_string(&rows[1].1).unwrap(),
            r#"{"prompt":"walk","completion":"walked"}"#,
            "rows without one are written as before"
        );
        let e = first_error(
            "c.jsonl",
            "{\"prompt\":\"a\",\"completion\":\"b\",\"category\":3}\n",
        );
        assert!(matches!(e.kind, RowErrorKind::WrongType { .. }), "{e}");
    }

    #[test]
    fn chat_rows_round_trip_to_canonical_json() {
        let (rows, _) = read(
            "c.jsonl",
            "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}],\"extra\":1}\n",
            &ReadOptions::default(),
        )
        .unwrap();
        let json = serde_json::to_string(&rows[0].1).unwrap();
        assert_eq!(
            json,
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#
        );
        let back: Example = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rows[0].1);
    }

    #[test]
    fn unsupported_extension() {
        assert!(matches!(
            read("a.parquet", "", &ReadOptions::default()),
            Err(ReadError::UnsupportedFile { .. })
        ));
    }
}
