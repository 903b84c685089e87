//! `params_file:` in a train stage's `with:`: a YAML mapping of train options, read when
//! the stage runs and merged over `with:` (the file wins), so a stage downstream of a
//! `tune` stage trains with the best parameters found:
//!
//! ```yaml
//! train_best:
//!   kind: train
//!   with:
//!     params_file: tune/lr/best.yaml      # {learning_rate: 3.1e-4, lora: {rank: 16}}
//!     model: smollm2-135m-instruct
//!     lora: {rank: 8, alpha: 16}          # rank replaced by the file's, alpha kept
//!     ...
//! ```
//!
//! The file is a dep of the stage (a new best reruns it). It is read at run time, not when
//! the pipeline loads, because it is usually written by an earlier stage of the same run;
//! so `with:` is checked at load time without it, and again with it when the stage runs.

use serde_json::Value;
use std::path::Path;

/// The key.
pub const KEY: &str = "params_file";

/// The file a `with:` names, if any.
pub fn path(with: &Value) -> Option<&str> {
    with.get(KEY).and_then(Value::as_str)
}

/// `with` without the key (what is checked when the pipeline loads).
pub fn without(with: &Value) -> Value {
    let mut with = with.clone();
    if let Some(map) = with.as_object_mut() {
        map.remove(KEY);
    }
    with
}

/// Reads the file `with` names (relative to `root`) and merges it over `with`, mappings
/// key by key; returns `with` unchanged when it names none.
pub fn merge(with: &Value, root: &Path) -> anyhow::Result<Value> {
    let Some(rel) = with.get(KEY) else {
        return Ok(with.clone());
    };
    let Some(rel) = rel.as_str() else {
        anyhow::bail!("`{KEY}` must be a path to a YAML file, not {rel}");
    };
    let path = root.join(rel);
    let text = fs_err::read_to_string(&path)?;
    let file: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| match e.location() {
        Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let file: Value = serde_json::to_value(file)?;
    if !file.is_object() && !file.is_null() {
        anyhow::bail!(
            "{}: a params file must be a mapping of train options (like a tune stage's best.yaml)",
            path.display()
        );
    }
    let mut merged = without(with);
    overlay(&mut merged, file);
    Ok(merged)
}

fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_file_wins_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join("best.yaml"),
            "# best of 3\nlearning_rate: 0.0003\nlora:\n  rank: 16\n",
        )
        .unwrap();
        let with = json!({"params_file": "best.yaml", "learning_rate": 1e-4, "lora": {"rank": 8, "alpha": 16}, "iters": 5});
        let merged = merge(&with, dir.path()).unwrap();
        assert_eq!(
            merged,
            json!({"learning_rate": 0.0003, "lora": {"rank": 16, "alpha": 16}, "iters": 5})
        );
        assert_eq!(
            merge(&json!({"iters": 1}), dir.path()).unwrap(),
            json!({"iters": 1})
        );
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("bad.yaml"), "lora: [1\n").unwrap();
        fs_err::write(dir.path().join("list.yaml"), "- 1\n").unwrap();
        let err = merge(&json!({"params_file": "bad.yaml"}), dir.path()).unwrap_err();
        assert!(format!("{err}").contains("bad.yaml:"), "{err}");
        let err = merge(&json!({"params_file": "list.yaml"}), dir.path()).unwrap_err();
        assert!(format!("{err}").contains("must be a mapping"), "{err}");
        let err = merge(&json!({"params_file": "none.yaml"}), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("none.yaml"), "{err:#}");
    }
}
