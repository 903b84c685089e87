//! Stage keys: what a stage's fingerprint is made of (see the table in [`crate::cache`]).
//!
//! Keys are `#[derive(Serialize)]` structs of borrowed inputs, streamed as JSON straight
//! into a blake3 hasher: no intermediate string, and serde guarantees a stable field
//! order. Maps are `BTreeMap`s so key order never depends on hashing or insertion.

use crate::spec::{Cmd, Stage};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Bump when the layout of the stage key or definition structs changes: every stage reruns.
pub const KEY_SCHEMA: u32 = 1;

/// The parts of a stage that are not dep content or param values.
#[derive(Serialize)]
struct Definition<'a> {
    kind: &'static str,
    cmd: Option<&'a Cmd>,
    with: &'a Value,
    deps: &'a [String],
    outs: &'a [String],
    metrics: &'a [String],
    params: Vec<&'a str>,
}

/// Everything a stage's result depends on.
#[derive(Serialize)]
struct StageKey<'a> {
    schema: u32,
    kind: &'static str,
    impl_version: u32,
    definition: &'a str,
    params: &'a BTreeMap<String, Value>,
    deps: &'a BTreeMap<String, String>,
}

fn hash_json<T: Serialize>(value: &T) -> String {
    let mut hasher = blake3::Hasher::new();
    serde_json::to_writer(&mut hasher, value).expect("hashing cannot fail");
    hasher.finalize().to_hex().to_string()
}

/// Hash of the stage's definition after templating (kind, cmd, `with`, paths, param keys).
pub fn definition_hash(stage: &Stage) -> String {
    hash_json(&Definition {
        kind: stage.kind.name(),
        cmd: stage.cmd.as_ref(),
        with: &stage.config,
        deps: &stage.deps,
        outs: &stage.outs,
        metrics: &stage.metrics,
        params: stage.params.keys().map(String::as_str).collect(),
    })
}

/// A short hash of each part of the stage's definition, by name: `kind`, `cmd`, `deps`,
/// `outs`, `metrics`, `params` (the keys read), and each leaf of `with` by its dotted path
/// (`with.split.valid`). Kept in the lock entry so that a changed definition can say which
/// part changed; the fingerprint uses [`definition_hash`] alone.
pub fn definition_parts(stage: &Stage) -> BTreeMap<String, String> {
    let mut parts = BTreeMap::new();
    parts.insert("kind".to_owned(), short(&stage.kind.name()));
    parts.insert("cmd".to_owned(), short(&stage.cmd.as_ref()));
    parts.insert("deps".to_owned(), short(&stage.deps));
    parts.insert("outs".to_owned(), short(&stage.outs));
    parts.insert("metrics".to_owned(), short(&stage.metrics));
    let keys: Vec<&str> = stage.params.keys().map(String::as_str).collect();
    parts.insert("params".to_owned(), short(&keys));
    flatten_into(&mut parts, "with".to_owned(), &stage.config);
    parts
}

fn flatten_into(parts: &mut BTreeMap<String, String>, path: String, value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flatten_into(parts, format!("{path}.{key}"), inner);
            }
        }
        Value::Null if path == "with" => {}
        leaf => {
            parts.insert(path, short(leaf));
        }
    }
}

/// A 64-bit prefix of [`hash_json`]: enough to tell a part's versions apart.
fn short<T: Serialize + ?Sized>(value: &T) -> String {
    hash_json(&value)[..16].to_owned()
}

/// The stage's fingerprint given its definition hash and its deps' content hashes.
pub fn fingerprint(stage: &Stage, definition: &str, deps: &BTreeMap<String, String>) -> String {
    hash_json(&StageKey {
        schema: KEY_SCHEMA,
        kind: stage.kind.name(),
        impl_version: stage.kind.impl_version(),
        definition,
        params: &stage.params,
        deps,
    })
}
