//! What a finished stage produced, read back from its outs: numbers, step series, files
//! worth keeping and tuning trials. Each kind says how ([`crate::stages::StageKind::outcome`]);
//! any stage's `metrics:` files add their numbers. Reading never fails a run: a missing or
//! odd file just contributes nothing.

use super::record::{Artifact, ArtifactRole, Series, Trial};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What one stage produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Final numbers by dotted name.
    pub metrics: BTreeMap<String, f64>,
    /// Step series; the third value of a point is milliseconds since the stage started
    /// (the recorder makes it absolute).
    pub series: Vec<Series>,
    /// Files worth keeping.
    pub artifacts: Vec<Artifact>,
    /// Tuning trials.
    pub trials: Vec<Trial>,
    /// Facts for tracking tags (`data_version`, `base_model`, `method`, `rank`).
    pub tags: BTreeMap<String, String>,
    /// For a compare stage: the out folder of the train stage it recommends.
    pub recommended_train_dir: Option<String>,
}

impl Outcome {
    /// Adds every number in `value` under `prefix` (`base.exact_match`); booleans count as
    /// 0/1, strings and nulls are left out.
    pub fn add_numbers(&mut self, prefix: &str, value: &Value) {
        flatten(prefix, value, &mut self.metrics);
    }

    /// Adds the numbers of a JSON file (relative to `root`) and keeps it as an artifact.
    pub fn add_metrics_file(&mut self, root: &Path, rel: &str, prefix: &str) {
        if let Some(value) = read_json(&root.join(rel)) {
            self.add_numbers(prefix, &value);
            self.add_artifact(root, rel, ArtifactRole::Metrics);
        }
    }

    /// Keeps `rel` as an artifact if it exists.
    pub fn add_artifact(&mut self, root: &Path, rel: &str, role: ArtifactRole) {
        let path = root.join(rel);
        let bytes = if path.is_dir() {
            walkdir::WalkDir::new(&path)
                .into_iter()
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        } else {
            match path.metadata() {
                Ok(m) => m.len(),
                Err(_) => return,
            }
        };
        if self.artifacts.iter().all(|a| a.path != rel) {
            self.artifacts.push(Artifact {
                path: rel.to_owned(),
                role,
                bytes,
            });
        }
    }
}

/// Reads a JSON file, or `None`.
pub fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, f64>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.insert(prefix.to_owned(), x);
            }
        }
        Value::Bool(b) => {
            out.insert(prefix.to_owned(), f64::from(u8::from(*b)));
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&join(k), v, out);
            }
        }
        // Lists are samples and per-example rows, not summary numbers.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_numbers_only() {
        let mut o = Outcome::default();
        o.add_numbers(
            "",
            &serde_json::json!({"base": {"exact_match": 0.5, "name": "x"}, "ok": true,
                                "samples": [1, 2], "nan": null, "steps": 60}),
        );
        assert_eq!(
            o.metrics,
            BTreeMap::from([
                ("base.exact_match".into(), 0.5),
                ("ok".into(), 1.0),
                ("steps".into(), 60.0)
            ])
        );
    }
}
