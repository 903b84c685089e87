//! Helpers on parsed values: YAML to JSON, deep merges, dotted param keys, `--set`,
//! and how matrix values are spelled in stage names.

use super::diag::{Diagnostic, Pos};
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::path::Path;

pub(super) fn key_str(key: &Yaml) -> String {
    scalar_name(key).unwrap_or_else(|| format!("{key:?}"))
}

/// A scalar as it appears in a stage name: floats in their shortest form (`1e-4`, `0.5`).
pub(super) fn scalar_name(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) if n.is_f64() => {
            let f = n.as_f64()?;
            let plain = format!("{f}");
            let sci = format!("{f:e}");
            Some(if sci.len() < plain.len() { sci } else { plain })
        }
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn to_json(v: &Yaml) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Deep-merges `over` into `base`: mappings merge key by key, anything else replaces.
pub(super) fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

pub(super) fn merge_yaml(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Mapping(b), Yaml::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_yaml(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The value at a dotted key (`train.lr`).
pub(crate) fn lookup<'v>(params: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(params, |v, part| v.get(part))
}

/// Every dotted key in `params`, leaves and branches.
pub(super) fn dotted_keys(params: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(key.clone());
                walk(child, &key, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(params, "", &mut out);
    out
}

/// Applies one `--set key.path=value` (the value is parsed as YAML, so `3e-4` is a number).
/// A value holding `{{` stays a string: `--set "prompt={{ input }}"` means a template,
/// never YAML's nested flow mapping.
pub(super) fn apply_set(params: &mut Value, set: &str) -> Result<(), Diagnostic> {
    let diag = |msg: String| Diagnostic::new(Path::new("--set"), "", Pos::default(), msg);
    let Some((key, raw)) = set.split_once('=') else {
        return Err(diag(format!(
            "`--set {set}` must look like `key.path=value`"
        )));
    };
    let value = if raw.contains("{{") {
        Value::String(raw.into())
    } else {
        serde_yaml::from_str::<Yaml>(raw).map_or(Value::String(raw.into()), |v| to_json(&v))
    };
    let keys = dotted_keys(params);
    let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let slot = if parent.is_empty() {
        Some(&mut *params)
    } else {
        parent
            .split('.')
            .try_fold(&mut *params, |v, p| v.get_mut(p))
    };
    match slot.and_then(Value::as_object_mut) {
        Some(map) if map.contains_key(leaf) => {
            map.insert(leaf.to_owned(), value);
            Ok(())
        }
        _ => Err(diag(format!("`--set {key}`: no such param"))
            .suggest(key, keys.iter().map(String::as_str))
            .hint("--set only overrides params defined in `params` or `params_file`")),
    }
}

pub(super) fn list_presets(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("stages")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".yaml")
                .map(String::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_named_shortest() {
        let v: Yaml = serde_yaml::from_str("[1e-4, 0.5, 8, 3.0e-4]").unwrap();
        let names: Vec<_> = v
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(scalar_name)
            .collect();
        assert_eq!(names, ["1e-4", "0.5", "8", "3e-4"]);
    }

    #[test]
    fn set_overrides_existing_params_only() {
        let mut p = serde_json::json!({"train": {"lr": 0.1}});
        apply_set(&mut p, "train.lr=3e-4").unwrap();
        assert_eq!(p["train"]["lr"], serde_json::json!(3e-4));
        let err = apply_set(&mut p, "train.lrr=1").unwrap_err();
        assert!(err.to_string().contains("did you mean `train.lr`"), "{err}");
    }

    #[test]
    fn set_keeps_a_template_a_string() {
        let mut p = serde_json::json!({"prompt": "x", "limits": {"a": 1}});
        apply_set(&mut p, "prompt={{ input }}").unwrap();
        assert_eq!(p["prompt"], serde_json::json!("{{ input }}"));
        apply_set(&mut p, "limits={a: 2}").unwrap();
        assert_eq!(p["limits"], serde_json::json!({"a": 2}));
    }
}
