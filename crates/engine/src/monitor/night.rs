//! One monitor evaluation, start to end, without MLX: load and check the examples, find the
//! watched model, have it scored ([`Scorer`], implemented by `pipe-mlx` as the evaluate
//! kind scores), append to the history, decide, and on firing retrain and gate the
//! candidate. What it did is the [`Report`] the stage writes to its out.

use super::history::{self, Entry, Scored};
use super::models::{self, Model};
use super::retrain::{self, Retrained};
use super::rules::{self, Decision, Judgement};
use crate::data::{Example, ReadOptions, read_examples};
use anyhow::Context;
use pipe_schema::monitor::MonitorConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Scores an adapter (on the stage's base model) on examples: per example, whether the
/// answer matched the reference.
pub trait Scorer {
    /// One `bool` per example, in order.
    fn score(&mut self, adapter: &Path, examples: &[Example]) -> anyhow::Result<Vec<bool>>;
}

/// The examples of a night: the probe set, then the new data.
#[derive(Debug, Clone)]
pub struct Examples {
    /// The examples, probe set first.
    pub examples: Vec<Example>,
    /// A stable key per example.
    pub keys: Vec<String>,
    /// How many come from the probe set.
    pub probe: usize,
    /// The hash of keys in order (the history's `data_hash`).
    pub hash: String,
}

/// Reads the probe set (checking its pin) and the new data.
pub fn examples(config: &MonitorConfig, root: &Path) -> anyhow::Result<Examples> {
    let probe = root.join(&config.probe.path);
    let bytes = fs_err::read(&probe)?;
    let actual = blake3::hash(&bytes).to_hex().to_string();
    if !actual.eq_ignore_ascii_case(&config.probe.blake3) {
        anyhow::bail!(
            "{}: the probe set changed: its blake3 is {actual}, the stage pins {}; a probe set \
             is fixed so that nights compare; if the change is wanted, pin the new one \
             (`probe: {{blake3: {actual}}}`), which starts a new baseline",
            probe.display(),
            config.probe.blake3
        );
    }
    let read = |path: &Path, max: usize| -> anyhow::Result<Vec<Example>> {
        let (rows, _) = read_examples(path, &ReadOptions::default())?;
        Ok(rows.into_iter().take(max).map(|(_, e)| e).collect())
    };
    let mut examples = read(&probe, usize::MAX)?;
    let probe_count = examples.len();
    if probe_count == 0 {
        anyhow::bail!("{}: the probe set has no examples", probe.display());
    }
    let mut keys: Vec<String> = examples.iter().map(key).collect();
    if let Some(new) = &config.new_data {
        // New examples that repeat a probe example (or each other) are scored once: an
        // example counted twice would weigh twice in the rules.
        let mut seen: std::collections::HashSet<String> = keys.iter().cloned().collect();
        for e in read(&root.join(new), config.max_new_examples)? {
            let k = key(&e);
            if seen.insert(k.clone()) {
                keys.push(k);
                examples.push(e);
            }
        }
    }
    let mut hasher = blake3::Hasher::new();
    for k in &keys {
        hasher.update(k.as_bytes());
    }
    Ok(Examples {
        examples,
        keys,
        probe: probe_count,
        hash: hasher.finalize().to_hex()[..16].to_owned(),
    })
}

/// An example's key: a hash of the record (prompt and reference).
fn key(example: &Example) -> String {
    let json = serde_json::to_string(example).unwrap_or_default();
    blake3::hash(json.as_bytes()).to_hex()[..16].to_owned()
}

/// A point of the history chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When.
    pub at: String,
    /// Accuracy.
    pub accuracy: f64,
    /// The model (content hash) scored.
    pub model_hash: String,
    /// Whether it regressed.
    pub regressed: bool,
}

/// The retraining and the candidate's gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The child run.
    pub retrain: Retrained,
    /// The candidate, for people (absent when the child run failed).
    pub candidate: Option<String>,
    /// The candidate against the watched model (absent when the child run failed).
    pub gate: Option<Judgement>,
    /// Whether the watched alias now points at the candidate.
    pub promoted: bool,
    /// Why or why not, in words.
    pub why: String,
}

/// `monitor.json`: what a night found and did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The watched model, for people.
    pub model: String,
    /// Its content hash.
    pub model_hash: String,
    /// Examples scored: probe set and new data.
    pub examples: usize,
    /// Of which from the probe set.
    pub probe_examples: usize,
    /// Tonight's accuracy.
    pub accuracy: f64,
    /// The decision.
    pub decision: Decision,
    /// Against the baseline (absent on the baseline's own night).
    pub judgement: Option<Judgement>,
    /// Whether tonight's score was the history's last entry (same model, same examples),
    /// so nothing was scored or appended again. Not written: a rerun's `monitor.json` is
    /// then byte-identical, and the stages after it stay cached.
    #[serde(skip)]
    pub reused: bool,
    /// Every evaluation in the history, oldest first.
    pub points: Vec<Point>,
    /// What firing did.
    pub promotion: Option<Promotion>,
}

impl Report {
    /// The stage's `metrics.json`: numbers for the history, tracking and `notify:`
    /// (`regression` is 1 when the monitor fired).
    pub fn metrics(&self) -> serde_json::Value {
        let fired = matches!(self.decision, Decision::Fired { .. });
        serde_json::json!({
            "accuracy": self.accuracy,
            "baseline_accuracy": self.judgement.as_ref().map(|j| j.baseline),
            "drop": self.judgement.as_ref().map(|j| j.drop),
            "regression": u8::from(fired),
            "retrained": u8::from(self.promotion.is_some()),
            "promoted": u8::from(self.promotion.as_ref().is_some_and(|p| p.promoted)),
            "examples": self.examples,
        })
    }

    /// One line for the stage's log.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{}: accuracy {:.3} on {} examples ({} probe)",
            self.decision.word(),
            self.accuracy,
            self.examples,
            self.probe_examples
        );
        if self.reused {
            line.push_str(
                " (the same model and examples as the last evaluation: not scored again)",
            );
        }
        if let Some(j) = &self.judgement {
            line.push_str(&format!("; {}", j.why));
        }
        if let Some(p) = &self.promotion {
            line.push_str(&format!("\n{}", p.why));
        }
        line
    }
}

/// Runs one night: see the module doc.
pub fn run(config: &MonitorConfig, root: &Path, scorer: &mut dyn Scorer) -> anyhow::Result<Report> {
    let data = examples(config, root)?;
    let watched = watched(config, root)?;
    let history_path = root.join(&config.history);
    let mut past = history::read(&history_path)?;
    let seed = u64::from_str_radix(&data.hash[..16], 16).unwrap_or(0);
    let reuse = past
        .last()
        .is_some_and(|e| e.model_hash == watched.hash && e.data_hash == data.hash);
    let (entry, scores) = if reuse {
        let last = past.pop().expect("checked above");
        let scores = last.examples.clone();
        (last, scores)
    } else {
        let oks = scorer.score(&watched.dir, &data.examples)?;
        let scores = scored(&data.keys, &oks)?;
        let entry = Entry {
            at: crate::exec::events::utc_now(),
            model: watched.describe.clone(),
            model_hash: watched.hash.clone(),
            data_hash: data.hash.clone(),
            examples: scores.clone(),
            regressed: false,
        };
        (entry, scores)
    };
    let judgement = rules::baseline(&past, &watched.hash)
        .map(|b| rules::judge(&b.examples, &scores, &config.rules, seed));
    let entry = Entry {
        regressed: judgement.as_ref().is_some_and(|j| j.regressed),
        ..entry
    };
    let decision = rules::decide(&past, &entry, &config.rules);
    if !reuse {
        history::append(&history_path, &entry)?;
    }
    past.push(entry);
    let promotion = match (&decision, &config.on_regression) {
        (Decision::Fired { .. }, Some(on)) => Some(promote(
            config, root, on, &watched, &data, &scores, seed, scorer,
        )?),
        _ => None,
    };
    Ok(Report {
        model: watched.describe,
        model_hash: watched.hash,
        examples: data.examples.len(),
        probe_examples: data.probe,
        accuracy: history::accuracy(&scores),
        decision,
        judgement,
        reused: reuse,
        points: past
            .iter()
            .map(|e| Point {
                at: e.at.clone(),
                accuracy: e.accuracy(),
                model_hash: e.model_hash.clone(),
                regressed: e.regressed,
            })
            .collect(),
        promotion,
    })
}

/// The watched model.
pub fn watched(config: &MonitorConfig, root: &Path) -> anyhow::Result<Model> {
    match (&config.adapter, &config.registry) {
        (Some(dir), _) => models::folder(root, dir),
        (None, Some(reference)) => {
            let uri = models::tracking_uri(config.tracking_uri.as_deref(), reference)?;
            models::registered(&uri, reference)
        }
        (None, None) => anyhow::bail!(
            "a monitor stage names no adapter to watch: set `registry: NAME@ALIAS` or `adapter`"
        ),
    }
}

fn scored(keys: &[String], oks: &[bool]) -> anyhow::Result<Vec<Scored>> {
    if keys.len() != oks.len() {
        anyhow::bail!(
            "the scorer answered {} examples of {}",
            oks.len(),
            keys.len()
        );
    }
    Ok(keys
        .iter()
        .zip(oks)
        .map(|(key, &ok)| Scored {
            key: key.clone(),
            ok,
        })
        .collect())
}

/// Retrains, scores the candidate on tonight's examples, and moves the alias if it wins.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the night's state, spelled out"
)]
fn promote(
    config: &MonitorConfig,
    root: &Path,
    on: &pipe_schema::monitor::OnRegression,
    watched: &Model,
    data: &Examples,
    scores: &[Scored],
    seed: u64,
    scorer: &mut dyn Scorer,
) -> anyhow::Result<Promotion> {
    let log = config.out.join("retrain.log");
    eprintln!(
        "the monitor fired: retraining with `pipe run {}` (log: {})",
        on.run.display(),
        log.display()
    );
    let retrain = retrain::run(root, on, &log)?;
    if !retrain.succeeded() {
        let why = format!(
            "the retraining `pipe run {}` failed (exit {}; see {}): the watched model stays",
            on.run.display(),
            retrain
                .exit_code
                .map_or("by a signal".into(), |c| c.to_string()),
            log.display()
        );
        return Ok(Promotion {
            retrain,
            candidate: None,
            gate: None,
            promoted: false,
            why,
        });
    }
    let candidate = match (&on.candidate.registry, &on.candidate.adapter) {
        (Some(reference), _) => {
            let uri = models::tracking_uri(config.tracking_uri.as_deref(), reference)?;
            models::registered(&uri, reference)?
        }
        (None, Some(dir)) => models::folder(root, dir)?,
        (None, None) => anyhow::bail!("on_regression.candidate names no adapter"),
    };
    let oks = scorer.score(&candidate.dir, &data.examples)?;
    let candidate_scores = scored(&data.keys, &oks)?;
    let gate = rules::gate(scores, &candidate_scores, &config.rules, seed);
    let (promoted, why) = if candidate.hash == watched.hash {
        (
            false,
            "the candidate is the watched model itself (same adapter files)".to_owned(),
        )
    } else if !gate.regressed {
        (false, format!("kept {}: {}", watched.describe, gate.why))
    } else {
        match (&config.registry, &candidate.version) {
            (Some(reference), Some(version)) => {
                let uri = models::tracking_uri(config.tracking_uri.as_deref(), reference)?;
                models::move_alias(&uri, reference, version)
                    .with_context(|| format!("cannot promote {}", candidate.describe))?;
                (
                    true,
                    format!(
                        "promoted {} to {reference}: {}",
                        candidate.describe, gate.why
                    ),
                )
            }
            _ => (
                false,
                format!(
                    "{}; not promoted: promotion moves a registry alias, and the watched model \
                     or the candidate is a folder (deploy the candidate by hand)",
                    gate.why
                ),
            ),
        }
    };
    Ok(Promotion {
        retrain,
        candidate: Some(candidate.describe),
        gate: Some(gate),
        promoted,
        why,
    })
}
