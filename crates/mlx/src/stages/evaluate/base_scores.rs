//! The base model's evaluation, kept across evaluate runs.
//!
//! Every evaluate run scores the base model before the adapter, so each result has a
//! before and an after. In a sweep (every trial of a tune stage) or a method comparison
//! (one evaluate per variant), that base score is the same computation each time: same
//! weights, same examples, same generation budget, greedy decoding. It is about half of
//! each evaluation, so it is computed once per workspace and read back afterwards.
//!
//! The key covers everything the result depends on: the bytes of the model's files, the
//! examples scored (their JSON form, as `ingest` writes them), the generation budget and
//! the evaluate kind's implementation version. Entries live in `<root>/cache/eval-base/v1/<key>.json`, are
//! written atomically, and one that cannot be read is ignored and rewritten; deleting the
//! folder is always safe.

use pipe_engine::data::Example;
use pipe_schema::evaluate::Scores;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the entry layout (part of the key).
const LAYOUT_VERSION: u32 = 1;

/// The folder, under the workspace root.
pub const DIR: &str = pipe_engine::cache::eval_base::DIR;

/// What is kept: the scores and the per-record answers (for the samples' "before").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseScores {
    /// The base model's scores.
    pub scores: Scores,
    /// Per example: (answer, reference).
    pub answers: Vec<(String, String)>,
}

/// Where the entry for a model and an evaluation lives: `None` when the model's files
/// cannot be read (the load that follows reports that properly).
pub fn entry_path(
    root: &Path,
    model: &Path,
    examples: &[Example],
    max_tokens: usize,
) -> Option<PathBuf> {
    let mut key = blake3::Hasher::new();
    key.update(
        format!(
            "eval-base {LAYOUT_VERSION} {} {max_tokens}\n",
            pipe_engine::stages::Kind::EVALUATE.impl_version()
        )
        .as_bytes(),
    );
    hash_model(&mut key, model).ok()?;
    key.update(&serde_json::to_vec(examples).ok()?);
    Some(
        root.join(DIR)
            .join(format!("{}.json", key.finalize().to_hex())),
    )
}

/// The model's files in name order: a GGUF file, or a directory's weights, config and
/// tokenizer (everything in it: a directory is the model). Each file is hashed as the
/// content store hashes outputs (memory-mapped and parallel for large weights).
fn hash_model(
    key: &mut blake3::Hasher,
    model: &Path,
) -> Result<(), pipe_engine::cache::CacheError> {
    let files: Vec<PathBuf> = if model.is_dir() {
        walkdir::WalkDir::new(model)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect()
    } else {
        vec![model.to_path_buf()]
    };
    for file in files {
        let size = std::fs::metadata(&file)
            .map_err(pipe_engine::cache::io_err("cannot stat", &file))?
            .len();
        let rel = file.strip_prefix(model).unwrap_or(&file);
        key.update(rel.to_string_lossy().as_bytes());
        key.update(b"\0");
        key.update(pipe_engine::cache::hash_file(&file, size)?.as_bytes());
        key.update(b"\n");
    }
    Ok(())
}

/// The kept scores, if an intact entry for exactly this many examples exists.
pub fn load(entry: &Path, examples: usize) -> Option<BaseScores> {
    let text = std::fs::read(entry).ok()?;
    pipe_engine::cache::eval_base::touch(entry);
    let kept: BaseScores = serde_json::from_slice(&text).ok()?;
    (kept.answers.len() == examples).then_some(kept)
}

/// Keeps the scores. Failing to write only costs a recomputation later, so it is a
/// warning.
pub fn store(entry: &Path, scores: &BaseScores) {
    if let Err(e) = pipe_engine::atomic_write::write_json(entry, scores) {
        eprintln!(
            "warning: could not keep the base model's scores in {}: {e}",
            entry.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipe_engine::data::{Message, Role};

    fn scores(exact: f64) -> BaseScores {
        BaseScores {
            scores: Scores {
                loss: 2.5,
                perplexity: 12.18,
                exact_match: exact,
                contains_match: 0.5,
                seconds: 3.0,
                exact_match_ci: None,
                contains_match_ci: None,
            },
            answers: vec![
                ("walked".into(), "walked".into()),
                ("jumps".into(), "jumped".into()),
            ],
        }
    }

    fn records(word: &str) -> Vec<Example> {
        vec![Example::Completion {
            prompt: format!("Past tense of {word}?"),
            completion: format!("{word}ed"),
            category: None,
            choices: Vec::new(),
        }]
    }

    #[test]
    fn the_key_follows_the_model_bytes_the_records_and_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let root = dir.path();
        let key = |records: &[Example], tokens| entry_path(root, &model, records, tokens).unwrap();
        let first = key(&records("walk"), 12);
        assert_eq!(first, key(&records("walk"), 12), "deterministic");
        assert_ne!(first, key(&records("jump"), 12), "other records");
        assert_ne!(first, key(&records("walk"), 16), "another budget");
        std::fs::write(&model, b"weightz").unwrap();
        assert_ne!(first, key(&records("walk"), 12), "other weights, same name");
        assert!(first.starts_with(root.join(DIR)));

        // A directory model: every file counts, a renamed one too.
        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        std::fs::write(hf.join("config.json"), b"{}").unwrap();
        std::fs::write(hf.join("model.safetensors"), b"w").unwrap();
        let a = entry_path(root, &hf, &records("walk"), 12).unwrap();
        std::fs::write(hf.join("tokenizer.json"), b"{}").unwrap();
        assert_ne!(a, entry_path(root, &hf, &records("walk"), 12).unwrap());
        assert!(entry_path(root, &dir.path().join("missing"), &records("walk"), 12).is_none());
    }

    #[test]
    fn the_key_hashes_rows_in_their_jsonl_form() {
        // Entries written while evaluation had its own row type hashed exactly this JSON;
        // it must not change, or every kept base score is silently recomputed.
        let rows = vec![
            Example::Chat {
                messages: vec![
                    Message::new(Role::System, "Be brief."),
                    Message::new(Role::User, "Hi"),
                    Message::new(Role::Assistant, "Hello"),
                ],
                category: None,
            },
            Example::Completion {
                prompt: "a".into(),
                completion: "b".into(),
                category: None,
                choices: Vec::new(),
            },
            Example::Text { text: "t".into() },
        ];
        assert_eq!(
            serde_json::to_string(&rows).unwrap(),
            r#"[{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]},{"prompt":"a","completion":"b"},{"text":"t"}]"#
        );
    }

    #[test]
    fn an_entry_round_trips_and_a_damaged_or_mismatched_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join(DIR).join("k.json");
        assert_eq!(load(&entry, 2), None, "nothing kept yet");
        store(&entry, &scores(0.5));
        assert_eq!(load(&entry, 2), Some(scores(0.5)));
        assert_eq!(load(&entry, 3), None, "kept for another number of records");
        std::fs::write(&entry, b"{\"scores\": ").unwrap();
        assert_eq!(load(&entry, 2), None, "a cut-short entry is not read");
    }
}
