//! The ingest step: read a source (a file, or a folder of `train`/`valid`/`test` files),
//! validate every row, drop duplicates, split, add any training-only rows, and write
//! canonical JSONL plus statistics.
//!
//! Output folder:
//! - `train.jsonl`, `valid.jsonl`, `test.jsonl`: one canonical example per line. A split
//!   made here is in the seeded random order of its draw (see [`split_draw`]), so its first
//!   rows are a sample of it; a folder's own splits keep their order;
//! - `stats.json`: per-split counts and length histograms, skipped rows (with file:line
//!   and reason) and duplicates removed.
//!
//! Every file is written to a temporary name and renamed, so a crash never leaves a
//! half-written split that looks complete.

use super::{
    DatasetStats, Example, ReadError, ReadOptions, RowError, Source, Split, read_bigbench_task,
    read_examples, split_draw, split_of_draw,
};
use crate::atomic_write::write_atomic;
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub use pipe_schema::ingest::IngestConfig;

/// What ingest did (written as `stats.json`).
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Where the rows came from: `{path, blake3}` or `{url, sha256|blake3}`.
    pub source: serde_json::Value,
    /// Where the training-only rows came from (`train_extra`), recorded like `source`, and
    /// how many joined the train split after deduplication (`rows`). Absent without it, so
    /// an ingest without extra rows writes what it wrote before they existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_extra: Option<serde_json::Value>,
    /// Statistics per split.
    pub splits: BTreeMap<&'static str, DatasetStats>,
    /// Rows read from the source, good or bad.
    pub rows_read: usize,
    /// Exact duplicates removed.
    pub duplicates_removed: usize,
    /// Bad rows skipped (only with `on_error: skip`), as `file:line: reason` with the file
    /// named relative to the workspace (or by its URL), so the report is the same in every
    /// clone.
    pub skipped: Vec<String>,
}

/// Runs ingest; relative paths in `config` are resolved against `root`.
pub fn ingest(config: &IngestConfig, root: &Path) -> anyhow::Result<IngestReport> {
    config.split.validate().map_err(anyhow::Error::msg)?;
    let source = super::source::local(&config.source, root)?;
    // Rows are reported by the source as the pipeline names it, not by where it happens to
    // be on this machine (the workspace or the user cache).
    let shown = |source: &Source, path: &Path| -> PathBuf {
        match source {
            Source::Url { url, .. } => PathBuf::from(url),
            Source::Path(_) => path.strip_prefix(root).unwrap_or(path).to_owned(),
        }
    };
    let options = ReadOptions {
        format: config.format,
        fields: config.fields.clone(),
        on_error: config.on_error,
        max_chars: config.max_chars,
    };
    let mut skipped: Vec<RowError> = Vec::new();
    let mut read = |source: &Source, path: &Path| -> anyhow::Result<Vec<Example>> {
        if path.file_name().is_some_and(|n| n == "task.json") || config.bigbench_prompt.is_some() {
            let prompt = config.bigbench_prompt.as_deref().with_context(|| {
                format!(
                    "{} looks like a BIG-bench task: set `bigbench_prompt`",
                    path.display()
                )
            })?;
            return read_bigbench_task(path, prompt);
        }
        let (rows, bad) = read_examples(path, &options).map_err(|e| match e {
            ReadError::Row(mut row) => {
                row.file = shown(source, path);
                ReadError::Row(row)
            }
            other => other,
        })?;
        skipped.extend(bad.into_iter().map(|row| RowError {
            file: shown(source, path),
            ..row
        }));
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    };
    let mut splits: BTreeMap<Split, Vec<Example>> = BTreeMap::new();
    if source.is_dir() {
        for split in Split::ALL {
            if let Some(file) = find_split_file(&source, split.name())? {
                splits.insert(split, read(&config.source, &file)?);
            }
        }
        if !splits.contains_key(&Split::Train) {
            bail!(
                "{}: no train.jsonl, train.csv or train.tsv in this folder",
                config.source.shown()
            );
        }
    } else if source.is_file() {
        let mut drawn: Vec<(f64, Example)> = read(&config.source, &source)?
            .into_iter()
            .map(|e| (split_draw(&e, &config.split), e))
            .collect();
        // Stable, so rows with one split key (duplicates) keep their order.
        drawn.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (u, example) in drawn {
            splits
                .entry(split_of_draw(u, &config.split))
                .or_default()
                .push(example);
        }
    } else {
        bail!(
            "{}: no such file or folder (the ingest source)",
            config.source.shown()
        );
    }
    let extra = match &config.train_extra {
        Some(extra) => {
            let path = super::source::local(extra, root)?;
            if !path.is_file() {
                bail!(
                    "{}: no such file (the ingest's `train_extra`)",
                    extra.shown()
                );
            }
            read(extra, &path)?
        }
        None => Vec::new(),
    };
    let rows_read = splits.values().map(Vec::len).sum::<usize>() + extra.len() + skipped.len();
    let mut duplicates_removed = 0;
    let mut seen = HashSet::new();
    if config.dedup {
        // A duplicate across splits would leak test data into training: keep the first
        // occurrence in train, valid, test order.
        for rows in splits.values_mut() {
            let before = rows.len();
            rows.retain(|e| seen.insert(e.content_hash()));
            duplicates_removed += before - rows.len();
        }
    }
    // Extra rows come last so that a repeat never takes a held-out example's place.
    let extra_before = extra.len();
    let extra: Vec<Example> = extra
        .into_iter()
        .filter(|e| !config.dedup || seen.insert(e.content_hash()))
        .collect();
    duplicates_removed += extra_before - extra.len();
    let train_extra_rows = extra.len();
    splits.entry(Split::Train).or_default().extend(extra);
    if splits.get(&Split::Train).is_none_or(Vec::is_empty) {
        bail!(
            "{}: no training examples left after validation",
            config.source.shown()
        );
    }
    let out = root.join(&config.out);
    fs_err::create_dir_all(&out)?;
    let mut report = IngestReport {
        source: super::source::record(&config.source, root),
        train_extra: config.train_extra.as_ref().map(|extra| {
            let mut record = super::source::record(extra, root);
            record["rows"] = train_extra_rows.into();
            record
        }),
        splits: BTreeMap::new(),
        rows_read,
        duplicates_removed,
        skipped: skipped.iter().map(ToString::to_string).collect(),
    };
    for split in Split::ALL {
        let rows = splits.remove(&split).unwrap_or_default();
        let mut text = String::new();
        for e in &rows {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        write_atomic(
            &out.join(format!("{}.jsonl", split.name())),
            text.as_bytes(),
        )?;
        report
            .splits
            .insert(split.name(), DatasetStats::of(rows.iter()));
    }
    write_atomic(
        &out.join("stats.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

fn find_split_file(dir: &Path, stem: &str) -> anyhow::Result<Option<PathBuf>> {
    let found: Vec<PathBuf> = ["jsonl", "json", "csv", "tsv"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .filter(|p| p.is_file())
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => bail!(
            "{}: more than one {stem} file ({}); keep one",
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ErrorPolicy;

    fn config(source: &str) -> IngestConfig {
        serde_yaml::from_str(&format!("source: {source}\nout: clean\n")).unwrap()
    }

    #[test]
    fn splits_dedups_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = String::new();
        for i in 0..200 {
            body.push_str(&format!(
                "{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n"
            ));
        }
        body.push_str("{\"prompt\":\"q1\",\"completion\":\"a1\"}\n");
        std::fs::write(dir.path().join("qa.jsonl"), body).unwrap();
        let report = ingest(&config("qa.jsonl"), dir.path()).unwrap();
        assert_eq!(report.rows_read, 201);
        assert_eq!(report.duplicates_removed, 1);
        let total: usize = report.splits.values().map(|s| s.examples).sum();
        assert_eq!(total, 200);
        assert!(report.splits["valid"].examples > 5 && report.splits["test"].examples > 5);
        let train = std::fs::read_to_string(dir.path().join("clean/train.jsonl")).unwrap();
        assert_eq!(train.lines().count(), report.splits["train"].examples);
        assert!(dir.path().join("clean/stats.json").is_file());
    }

    #[test]
    fn extra_rows_join_train_only_and_never_repeat_a_held_out_row() {
        let dir = tempfile::tempdir().unwrap();
        let row = |i: usize| format!("{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n");
        std::fs::write(
            dir.path().join("qa.jsonl"),
            (0..100).map(row).collect::<String>(),
        )
        .unwrap();
        let held_out = |split: &str| -> Vec<String> {
            let text =
                std::fs::read_to_string(dir.path().join(format!("clean/{split}.jsonl"))).unwrap();
            text.lines().map(str::to_owned).collect()
        };
        ingest(&config("qa.jsonl"), dir.path()).unwrap();
        let (valid, test) = (held_out("valid"), held_out("test"));
        // The extra file repeats every source row (held-out ones included) and adds 50 new.
        std::fs::write(
            dir.path().join("more.jsonl"),
            (0..150).map(row).collect::<String>(),
        )
        .unwrap();
        let mut with_extra = config("qa.jsonl");
        with_extra.train_extra = Some(Source::Path("more.jsonl".into()));
        let report = ingest(&with_extra, dir.path()).unwrap();
        assert_eq!(report.rows_read, 250);
        assert_eq!(report.duplicates_removed, 100);

        assert_eq!(
            (held_out("valid"), held_out("test")),
            (valid.clone(), test.clone())
        );
        let train = held_out("train");
        assert_eq!(train.len(), 100 - valid.len() - test.len() + 50);
        assert!(
            train
                .iter()
                .all(|r| !valid.contains(r) && !test.contains(r))
        );
        let extra = report.train_extra.unwrap();
        assert_eq!(
            (&extra["path"], &extra["rows"]),
            (&"more.jsonl".into(), &50.into())
        );

        with_extra.train_extra = Some(Source::Path("absent.jsonl".into()));
        let err = ingest(&with_extra, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("absent.jsonl: no such file (the ingest's `train_extra`)"),
            "{err}"
        );
    }

    #[test]
    fn a_split_of_a_sorted_source_starts_with_a_sample_of_it() {
        // A source sorted by category, as BIG-bench tasks and word lists often are: every
        // short row, then every long one.
        let dir = tempfile::tempdir().unwrap();
        let body: String = (0..400)
            .map(|i| {
                let kind = if i < 200 { "short" } else { "long" };
                format!("{{\"prompt\":\"{kind} q{i}\",\"completion\":\"a\"}}\n")
            })
            .collect();
        std::fs::write(dir.path().join("qa.jsonl"), body).unwrap();
        ingest(&config("qa.jsonl"), dir.path()).unwrap();
        for split in ["train", "valid", "test"] {
            let text =
                std::fs::read_to_string(dir.path().join(format!("clean/{split}.jsonl"))).unwrap();
            let first: Vec<&str> = text.lines().take(12).collect();
            let long = first.iter().filter(|l| l.contains("long q")).count();
            assert!(
                (2..=10).contains(&long),
                "{split}: {long} of its first 12 rows are long"
            );
        }
    }

    #[test]
    fn editing_one_row_changes_only_its_split_file() {
        let dir = tempfile::tempdir().unwrap();
        let rows = |edit: bool| -> String {
            (0..100)
                .map(|i| {
                    let c = if edit && i == 7 {
                        "changed".to_owned()
                    } else {
                        format!("a{i}")
                    };
                    format!("{{\"prompt\":\"q{i}\",\"completion\":\"{c}\"}}\n")
                })
                .collect()
        };
        std::fs::write(dir.path().join("qa.jsonl"), rows(false)).unwrap();
        ingest(&config("qa.jsonl"), dir.path()).unwrap();
        let read = |s: &str| std::fs::read(dir.path().join("clean").join(s)).unwrap();
        let before: Vec<_> = ["train.jsonl", "valid.jsonl", "test.jsonl"]
            .iter()
            .map(|s| read(s))
            .collect();
        std::fs::write(dir.path().join("qa.jsonl"), rows(true)).unwrap();
        ingest(&config("qa.jsonl"), dir.path()).unwrap();
        let after: Vec<_> = ["train.jsonl", "valid.jsonl", "test.jsonl"]
            .iter()
            .map(|s| read(s))
            .collect();
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "exactly one split file changes");
    }

    #[test]
    fn a_folder_of_splits_is_kept_as_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("raw")).unwrap();
        std::fs::write(
            dir.path().join("raw/train.jsonl"),
            "{\"text\":\"a\"}\n{\"text\":\"b\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("raw/valid.jsonl"), "{\"text\":\"c\"}\n").unwrap();
        let report = ingest(&config("raw"), dir.path()).unwrap();
        assert_eq!(report.splits["train"].examples, 2);
        assert_eq!(report.splits["valid"].examples, 1);
        assert_eq!(report.splits["test"].examples, 0);
    }

    #[test]
    fn bad_rows_fail_with_file_and_line_or_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.jsonl"),
            "{\"text\":\"a\"}\n{\"text\":\"\"}\n",
        )
        .unwrap();
        let err = ingest(&config("d.jsonl"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl:2: field `text` is empty"), "{err}");
        let mut c = config("d.jsonl");
        c.on_error = ErrorPolicy::Skip;
        let report = ingest(&c, dir.path()).unwrap();
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].ends_with("d.jsonl:2: field `text` is empty"));
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ingest(&config("nope.jsonl"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.jsonl: no such file or folder"), "{err}");
    }
}
