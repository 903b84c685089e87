//! Arbitrary-input property tests (issue #18, item 4) for what users hand pipe: dataset
//! files (JSONL, CSV, TSV in the chat, completions and text formats; BIG-bench tasks) and
//! pipeline files (the YAML loader, templates, params, matrix, `--set` overrides, which the
//! spec resolver renders). For every input: no panic, and either a value or an error that
//! names the file (and, for a bad row or a pipeline diagnostic, a line inside it).
//!
//! Inputs mix structure (rows and pipelines that are almost right) with damage (invalid
//! UTF-8, NUL bytes, CR/LF, huge lines, JSON nested past any parser's limit, YAML anchors
//! and aliases, broken templates). The case count is proptest's: 256 per property by
//! default; `PROPTEST_CASES=20000 cargo test --release -p pipe-engine --test fuzz_inputs`
//! for a long run by hand (docs/reliability.md records one).

use pipe_engine::data::{ErrorPolicy, Format, ReadError, ReadOptions, read_examples};
use pipe_engine::spec::{LoadOptions, SpecError};
use proptest::prelude::*;
use std::path::Path;

/// A string with the characters that break readers: quotes, separators, NUL, CR,
/// non-ASCII, template braces.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        "(?s).{0,40}",
        Just(String::new()),
        Just("\0".to_owned()),
        Just("\"quoted, \"\"twice\"\"\"".to_owned()),
        Just("tab\there\r\nnewline".to_owned()),
        Just("ünïcödé ✓ 🚀".to_owned()),
        Just("{{ input }}{% if %}".to_owned()),
    ]
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One line of a dataset file.
fn dataset_line() -> impl Strategy<Value = String> {
    let role = prop_oneof![
        Just("user"),
        Just("assistant"),
        Just("system"),
        Just("tool"),
        Just("wizard"),
        Just(""),
    ];
    let message = (role, nasty_text())
        .prop_map(|(r, c)| format!(r#"{{"role": "{r}", "content": {}}}"#, json_string(&c)));
    prop_oneof![
        (nasty_text(), nasty_text()).prop_map(|(p, c)| format!(
            r#"{{"prompt": {}, "completion": {}}}"#,
            json_string(&p),
            json_string(&c)
        )),
        nasty_text().prop_map(|t| format!(r#"{{"text": {}}}"#, json_string(&t))),
        proptest::collection::vec(message, 0..4)
            .prop_map(|ms| format!(r#"{{"messages": [{}]}}"#, ms.join(", "))),
        // Wrong types, wrong shapes.
        Just(r#"{"prompt": 1, "completion": null}"#.to_owned()),
        Just(r#"{"messages": "not a list"}"#.to_owned()),
        Just(r#"{"messages": [{"role": 3}]}"#.to_owned()),
        Just("[1, 2, 3]".to_owned()),
        Just("null".to_owned()),
        // JSON nested deeper than any parser allows.
        (1usize..5000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..3000).prop_map(|n| format!(
            r#"{{"prompt": {}1{}, "completion": "x"}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )),
        // A huge line.
        (50_000usize..300_000)
            .prop_map(|n| format!(r#"{{"prompt": "{}", "completion": "x"}}"#, "a".repeat(n))),
        // CSV and TSV rows, headers included.
        Just("prompt,completion".to_owned()),
        Just("prompt\tcompletion".to_owned()),
        Just("text".to_owned()),
        (nasty_text(), nasty_text()).prop_map(|(a, b)| format!("{a},{b}")),
        (nasty_text(), nasty_text()).prop_map(|(a, b)| format!("\"{a}\"\t{b}")),
        "(?s).{0,80}",
    ]
}

/// A dataset file's bytes: lines joined by LF or CRLF, then maybe damaged by invalid
/// UTF-8 or NUL bytes at random places.
fn dataset_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(dataset_line(), 0..8),
        any::<bool>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(lines, crlf, damage)| {
            let mut bytes = lines.join(if crlf { "\r\n" } else { "\n" }).into_bytes();
            for (at, byte) in damage {
                let at = at.index(bytes.len() + 1);
                // 0x80..0xFF alone are never valid UTF-8; 0 is NUL.
                bytes.insert(at, if byte % 2 == 0 { 0 } else { byte | 0x80 });
            }
            bytes
        })
}

fn options() -> impl Strategy<Value = ReadOptions> {
    (
        prop_oneof![
            Just(None),
            Just(Some(Format::Chat)),
            Just(Some(Format::Completions)),
            Just(Some(Format::Text)),
        ],
        any::<bool>(),
        prop_oneof![Just(None), (0usize..100).prop_map(Some)],
    )
        .prop_map(|(format, skip, max_chars)| ReadOptions {
            format,
            on_error: if skip {
                ErrorPolicy::Skip
            } else {
                ErrorPolicy::Fail
            },
            max_chars,
            ..ReadOptions::default()
        })
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dataset_readers_return_rows_or_located_errors(
        bytes in dataset_bytes(),
        ext in prop_oneof![Just("jsonl"), Just("json"), Just("csv"), Just("tsv")],
        options in options(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("data.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        let lines = line_count(&bytes);
        let in_file = |line: usize| (1..=lines).contains(&line);
        match read_examples(&path, &options) {
            Ok((rows, errors)) => {
                for (line, _) in &rows {
                    prop_assert!(in_file(*line), "row at line {line} of {lines}");
                }
                if matches!(options.on_error, ErrorPolicy::Fail) {
                    prop_assert!(errors.is_empty());
                }
                for e in &errors {
                    prop_assert_eq!(&e.file, &path);
                    prop_assert!(in_file(e.line), "error at line {} of {lines}: {e}", e.line);
                }
            }
            Err(ReadError::Row(e)) => {
                prop_assert_eq!(&e.file, &path);
                prop_assert!(in_file(e.line), "error at line {} of {lines}: {e}", e.line);
                let located = format!("data.{ext}:{}:", e.line);
                prop_assert!(e.to_string().contains(&located), "{e}");
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains("data."), "error names no file: {text}");
            }
        }
    }

    #[test]
    fn bigbench_tasks_return_examples_or_located_errors(
        examples in proptest::collection::vec(
            (nasty_text(), prop_oneof![
                nasty_text().prop_map(|t| json_string(&t)),
                proptest::collection::vec(nasty_text(), 0..3)
                    .prop_map(|ts| serde_json::to_string(&ts).unwrap()),
                Just("5".to_owned()),
                Just("null".to_owned()),
            ]),
            0..5,
        ),
        wrap in prop_oneof![Just(0u8), Just(1), Just(2), Just(3)],
        cut in any::<prop::sample::Index>(),
    ) {
        let rows: Vec<String> = examples
            .iter()
            .map(|(i, t)| format!(r#"{{"input": {}, "target": {t}}}"#, json_string(i)))
            .collect();
        let mut text = format!(r#"{{"name": "t", "examples": [{}]}}"#, rows.join(", "));
        match wrap {
            1 => {
                let mut at = cut.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            2 => text = format!("[{text}]"),
            3 => text = text.replace("examples", "exemples"),
            _ => {}
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.json");
        std::fs::write(&path, &text).unwrap();
        match pipe_engine::data::read_bigbench_task(&path, "Past tense of {{ input }}?") {
            Ok(found) => prop_assert!(found.len() <= examples.len()),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.contains("task.json"), "{message}");
            }
        }
    }
}

/// A valid pipeline using what the resolver renders: params, vars, templates, a matrix, an
/// argv command, metrics, and a built-in kind with `with:`.
const SEED: &str = r#"name: fuzz
params:
  report:
    title: Word counts
  sizes: [1, 3]
vars:
  out: reports
stages:
  clean:
    cmd: mkdir -p {{ vars.out }} && sort words.txt > {{ vars.out }}/clean.txt
    deps: [words.txt]
    outs: ["{{ vars.out }}/clean.txt"]
  top:
    matrix:
      n: [1, 3]
    cmd: head -n {{ matrix.n }} {{ vars.out }}/clean.txt > {{ vars.out }}/top{{ matrix.n }}.txt
    deps: ["{{ vars.out }}/clean.txt"]
    outs: ["{{ vars.out }}/top{{ matrix.n }}.txt"]
  summary:
    cmd:
      - sh
      - -c
      - >-
        printf '{"title": "%s"}' "{{ params.report.title }}" > {{ vars.out }}/summary.json
    params: [report.title]
    deps: ["{{ vars.out }}/clean.txt"]
    metrics: ["{{ vars.out }}/summary.json"]
  ingest:
    kind: ingest
    with:
      source: raw.jsonl
      out: data/clean
"#;

/// Fragments that are meaningful to YAML or to the template engine.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "  ",
    "\t",
    "\n",
    "{{",
    "}}",
    "{%",
    "%}",
    "{{ params.report.title }}",
    "{{ matrix.n }}",
    "{{ vars.nope }}",
    "{% for x in params.sizes %}{{ x }}{% endfor %}",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "..",
    "/",
    "../escape",
    "/abs",
    "\0",
    "\u{feff}",
    "é",
    "deps:",
    "outs:",
    "matrix:",
    "kind: train\n",
    "with:",
    "stages:",
    "cmd:",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, &'static str),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<prop::sample::Index>(), prop::sample::select(TOKENS))
            .prop_map(|(i, t)| Edit::Insert(i, t)),
        any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// Applies `edit` on char boundaries.
fn apply(text: &mut String, edit: &Edit) {
    let boundary = |text: &str, i: &prop::sample::Index| {
        let mut at = i.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match edit {
        Edit::Delete(i, n) => {
            let from = boundary(text, i);
            let mut to = (from + n).min(text.len());
            while !text.is_char_boundary(to) {
                to += 1;
            }
            text.replace_range(from..to, "");
        }
        Edit::Insert(i, t) => {
            let at = boundary(text, i);
            text.insert_str(at, t);
        }
        Edit::DuplicateLine(i) | Edit::SwapLines(i, _) => {
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.is_empty() {
                return;
            }
            let a = i.index(lines.len());
            match edit {
                Edit::SwapLines(_, j) => {
                    let b = j.index(lines.len());
                    lines.swap(a, b);
                }
                _ => {
                    let line = lines[a].clone();
                    lines.insert(a, line);
                }
            }
            *text = lines.join("\n");
        }
    }
}

fn set() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("report.title=Fruit".to_owned()),
        Just("sizes=[1, 2, 3]".to_owned()),
        Just("report=".to_owned()),
        Just("=x".to_owned()),
        Just("nope.deep.key=1".to_owned()),
        Just("sizes=[".to_owned()),
        "(?s).{0,20}",
    ]
}

/// Checks what loading `text` as a pipeline gives.
fn check_load(text: &[u8], sets: Vec<String>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.yaml");
    std::fs::write(&path, text).unwrap();
    let options = LoadOptions {
        root: dir.path().to_owned(),
        sets,
        skip_dep_check: true,
    };
    // A diagnostic quotes a line the file has (as `str::lines` counts them).
    let lines = String::from_utf8_lossy(text).lines().count().max(1);
    match pipe_engine::spec::load(&path, &options) {
        Ok(pipeline) => prop_assert!(!pipeline.name.is_empty()),
        Err(SpecError::Invalid(diagnostics)) => {
            prop_assert!(!diagnostics.0.is_empty(), "an error with no diagnostic");
            for d in &diagnostics.0 {
                // A bad override is located at the flag that carried it.
                prop_assert!(d.file == path || d.file == Path::new("--set"), "{d}");
                prop_assert!(!d.message.trim().is_empty(), "empty message: {d}");
                prop_assert!(d.pos.line <= lines, "line {} of {lines}: {d}", d.pos.line);
            }
            let text = diagnostics.to_string();
            prop_assert!(
                text.contains("pipe.yaml") || text.contains("--set"),
                "{text}"
            );
        }
        Err(e @ SpecError::Read { .. }) => {
            prop_assert!(format!("{e}").contains("pipe.yaml"), "{e}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_pipelines_load_or_give_located_diagnostics(
        edits in proptest::collection::vec(edit(), 0..6),
        sets in proptest::collection::vec(set(), 0..3),
    ) {
        let mut text = SEED.to_owned();
        for e in &edits {
            apply(&mut text, e);
        }
        check_load(text.as_bytes(), sets)?;
    }

    #[test]
    fn arbitrary_bytes_as_a_pipeline_give_located_diagnostics(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "(?s).{0,300}".prop_map(String::into_bytes),
        ],
    ) {
        check_load(&bytes, Vec::new())?;
    }
}

#[test]
fn the_seed_pipeline_loads() {
    // The damage above starts from a valid file; if the seed stopped loading, every case
    // would only test the first error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.yaml");
    std::fs::write(&path, SEED).unwrap();
    let options = LoadOptions {
        root: dir.path().to_owned(),
        sets: Vec::new(),
        skip_dep_check: true,
    };
    let p = pipe_engine::spec::load(&path, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.stages.len(), 5, "top expands into two stages");
}
