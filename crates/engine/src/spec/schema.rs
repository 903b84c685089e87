//! The JSON Schema of a pipeline file (`pipe schema`), generated from the stage kinds'
//! configuration types, for editors (YAML language servers validate against it) and for
//! forms in the web UI.
//!
//! What the schema allows beyond the types, and why:
//! - any value inside `with:` may be a template string (`"{{ params.train.iters }}"`):
//!   templates are rendered when the pipeline loads, so a number may be written as one;
//! - a stage that `extends` presets may leave out required `with:` keys, since the preset
//!   (`stages/<name>.yaml`) may supply them; `pipe run` checks the merged stage.
//!
//! Value checks that JSON Schema cannot state (a micro-batch that divides the batch, a
//! pinned URL's digest) are made by `pipe run`/`pipe status` when the pipeline loads.

use super::{PIPELINE_KEYS, STAGE_KEYS};
use crate::stages::KINDS;
use serde_json::{Map, Value, json};

/// The schema's `$id`.
pub const SCHEMA_ID: &str = "https://pipe.dev/schema/pipeline.json";

/// The JSON Schema (draft 2020-12) of a pipeline file.
pub fn pipeline_schema() -> Value {
    let mut generator = schemars::SchemaGenerator::default();
    let mut per_kind = Vec::new();
    for kind in KINDS {
        let with = kind.with_schema(&mut generator).to_value();
        per_kind.push(json!({
            "if": {"properties": {"kind": {"const": kind.name()}}, "required": ["kind"]},
            "then": {
                "description": kind.summary(),
                "properties": {"with": with}
            }
        }));
    }
    let tracking = generator
        .subschema_for::<pipe_schema::tracking::TrackingConfig>()
        .to_value();
    let notify = generator
        .subschema_for::<pipe_schema::notify::NotifyConfig>()
        .to_value();
    let remote = generator
        .subschema_for::<pipe_schema::remote::RemoteConfig>()
        .to_value();
    let mut defs: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .map(|(name, schema)| (name, allow_templates(schema)))
        .collect();
    // The same definitions with nothing required, for stages that extend presets.
    let relaxed: Vec<(String, Value)> = defs
        .iter()
        .map(|(name, schema)| {
            let partial = retarget(without_required(schema.clone()));
            (format!("{name}_partial"), partial)
        })
        .collect();
    defs.extend(relaxed);
    let with_per_kind: Vec<Value> = per_kind
        .into_iter()
        .map(|mut rule| {
            let with = rule["then"]["properties"]["with"].take();
            rule["then"]["properties"]["with"] = allow_templates(with.clone());
            let partial = retarget(allow_templates(without_required(with)));
            json!({
                "if": rule["if"],
                "then": {
                    "description": rule["then"]["description"],
                    "if": {"required": ["extends"]},
                    "then": {"properties": {"with": partial}},
                    "else": {"properties": {"with": rule["then"]["properties"]["with"]}}
                }
            })
        })
        .collect();
    let kinds: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
    let strings =
        json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]});
    let stage = json!({
        "type": "object",
        "description": "A stage: `cmd` (a shell command) or `kind` (a built-in kind) with its options under `with`",
        "properties": {
            "kind": {"enum": kinds, "description": "The built-in kind; without it, `cmd` makes a command stage"},
            "desc": {"type": "string"},
            "cmd": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
            "deps": strings,
            "outs": strings,
            "params": strings,
            "with": {"description": "The kind's options (see the kind's schema)"},
            "needs": strings,
            "metrics": strings,
            "matrix": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}},
            "always_run": {"type": "boolean"},
            "frozen": {"type": "boolean"},
            "extends": strings,
            "resources": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
        },
        "additionalProperties": false,
        "anyOf": [{"required": ["kind"]}, {"required": ["cmd"]}, {"required": ["extends"]}],
        "allOf": with_per_kind
    });
    debug_assert_eq!(
        stage["properties"].as_object().map(Map::len),
        Some(STAGE_KEYS.len())
    );
    let top = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "pipe pipeline",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "params": {"type": "object"},
            "params_file": {"type": "string"},
            "vars": {"type": "object"},
            "tracking": tracking,
            "notify": notify,
            "remote": remote,
            "stages": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z0-9_.-]+$"},
                "additionalProperties": {"$ref": "#/$defs/Stage"}
            }
        },
        "required": ["stages"],
        "additionalProperties": false,
        "$defs": {}
    });
    debug_assert_eq!(
        top["properties"].as_object().map(Map::len),
        Some(PIPELINE_KEYS.len())
    );
    let mut top = top;
    defs.insert("Stage".into(), stage);
    top["$defs"] = Value::Object(defs);
    top
}

/// `schema` where every leaf value may also be a template string.
fn allow_templates(schema: Value) -> Value {
    let template = json!({"type": "string", "pattern": "\\{\\{|\\{%"});
    match schema {
        Value::Object(mut map) => {
            for key in ["properties", "$defs", "patternProperties"] {
                if let Some(Value::Object(props)) = map.remove(key) {
                    let props = props
                        .into_iter()
                        .map(|(k, v)| (k, allow_templates(v)))
                        .collect();
                    map.insert(key.into(), Value::Object(props));
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(v @ Value::Object(_)) = map.get(key).cloned() {
                    map.insert(key.into(), allow_templates(v));
                }
            }
            for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
                if let Some(Value::Array(list)) = map.remove(key) {
                    map.insert(key.into(), list.into_iter().map(allow_templates).collect());
                }
            }
            let is_object =
                map.get("type") == Some(&json!("object")) || map.contains_key("properties");
            let only_ref = map.contains_key("$ref");
            if is_object && !only_ref {
                Value::Object(map)
            } else {
                json!({"anyOf": [Value::Object(map), template]})
            }
        }
        other => other,
    }
}

/// `schema` with every `required` list removed.
fn without_required(schema: Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k != "required")
                .map(|(k, v)| (k, without_required(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.into_iter().map(without_required).collect()),
        other => other,
    }
}

/// `schema` with its `$ref`s pointing at the `_partial` definitions.
fn retarget(schema: Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => (k, Value::String(format!("{r}_partial"))),
                    (_, v) => (k, retarget(v)),
                })
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.into_iter().map(retarget).collect()),
        other => other,
    }
}
