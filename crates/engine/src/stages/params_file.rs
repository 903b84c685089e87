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
//! so `with:` is checked at load time without it, and again with it when the stage runs
//! (`pipe_schema::train::TrainSpec::with_params`).

use serde_json::Value;
use std::path::Path;

/// Reads a params file: a YAML mapping of train options, as JSON.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let text = fs_err::read_to_string(path)?;
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
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_mapping_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join("best.yaml"),
            "# best of 3\nlearning_rate: 0.0003\nlora:\n  rank: 16\n",
        )
        .unwrap();
        assert_eq!(
            read(&dir.path().join("best.yaml")).unwrap(),
            json!({"learning_rate": 0.0003, "lora": {"rank": 16}})
        );
        fs_err::write(dir.path().join("bad.yaml"), "lora: [1\n").unwrap();
        fs_err::write(dir.path().join("list.yaml"), "- 1\n").unwrap();
        let err = read(&dir.path().join("bad.yaml")).unwrap_err();
        assert!(format!("{err}").contains("bad.yaml:"), "{err}");
        let err = read(&dir.path().join("list.yaml")).unwrap_err();
        assert!(format!("{err}").contains("must be a mapping"), "{err}");
        let err = read(&dir.path().join("none.yaml")).unwrap_err();
        assert!(format!("{err:#}").contains("none.yaml"), "{err:#}");
    }
}
