//! Python source text that cannot be misread: string literals that hold any path or name
//! byte for byte, and Airflow ids made from pipe's names.
//!
//! Literals are double-quoted with every non-printable and non-ASCII character escaped,
//! so the generated file is plain ASCII whatever the paths hold (quotes, backslashes,
//! newlines, accents) and reads the same under any source encoding. Nothing pipe writes
//! into a DAG file goes through Jinja or a shell, so these are the only quoting rules.

use std::fmt::Write;

/// `s` as a Python `str` literal that evaluates to exactly `s`.
pub fn str_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// A list of strings as a Python list literal, one item per line when there are any.
pub fn str_list(items: &[String], indent: &str) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let mut out = String::from("[\n");
    for item in items {
        let _ = writeln!(out, "{indent}    {},", str_literal(item));
    }
    out.push_str(indent);
    out.push(']');
    out
}

/// The longest id Airflow accepts (`airflow.utils.helpers.validate_key`).
const MAX_ID: usize = 250;

/// `name` made into an Airflow DAG or task id: letters, digits, `_`, `-` and `.` kept,
/// anything else (a matrix stage's `@`, `=` and `,`) becomes `_`. Empty becomes `fallback`.
pub fn airflow_id(name: &str, fallback: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_ID)
        .collect();
    if id.is_empty() {
        id = fallback.to_owned();
    }
    id
}

/// Whether `id` is a valid Airflow id as given (for a user's `--dag-id`).
pub fn is_airflow_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && airflow_id(id, "") == id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_what_python_would_misread() {
        assert_eq!(str_literal("plain/path"), r#""plain/path""#);
        assert_eq!(str_literal(r#"it's "x" \ y"#), r#""it's \"x\" \\ y""#);
        assert_eq!(str_literal("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(str_literal("\u{7f}é"), r#""\x7f\xe9""#);
        assert_eq!(str_literal("日本"), r#""\u65e5\u672c""#);
        assert_eq!(str_literal("🙂"), r#""\U0001f642""#);
        assert_eq!(str_literal("{{ ds }}"), r#""{{ ds }}""#);
    }

    #[test]
    fn ids() {
        assert_eq!(
            airflow_id("train@rank=8,lr=1e-4", "t"),
            "train_rank_8_lr_1e-4"
        );
        assert_eq!(airflow_id("my pipeline/v2", "p"), "my_pipeline_v2");
        assert_eq!(airflow_id("", "pipe"), "pipe");
        assert_eq!(airflow_id(&"x".repeat(300), "p").len(), 250);
        assert!(is_airflow_id("nightly-v2.1_a"));
        assert!(!is_airflow_id("a b"));
        assert!(!is_airflow_id(""));
    }
}
