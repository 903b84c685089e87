//! `pipe schema`: the JSON Schema of pipeline files validates every shipped pipeline and
//! catches the mistakes an editor should flag.

use crate::support::Ws;
use serde_json::Value;

fn schema() -> Value {
    let ws = Ws::new();
    let out = ws.pipe().arg("schema").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pipe schema prints JSON")
}

fn yaml_to_json(text: &str) -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_shipped_pipeline_validates_against_the_schema() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(repo.join("pipelines")) {
        let entry = entry.unwrap();
        if entry.path().extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let doc = yaml_to_json(&fs_err::read_to_string(entry.path()).unwrap());
        let errs = errors(&validator, &doc);
        assert!(errs.is_empty(), "{}: {errs:#?}", entry.path().display());
        checked += 1;
    }
    assert!(checked >= 5, "found only {checked} pipelines");
}

#[test]
fn the_schema_flags_typos_and_bad_values_inside_with() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let stage = |with: &str| {
        yaml_to_json(&format!(
            "stages:\n  t:\n    kind: train\n    with:\n      model: m\n      train_data: d.jsonl\n      out_dir: o\n{with}\n"
        ))
    };
    assert!(errors(&validator, &stage("      iters: 10")).is_empty());
    assert!(errors(&validator, &stage("      iters: \"{{ params.iters }}\"")).is_empty());
    assert!(errors(&validator, &stage("      batch_size: auto")).is_empty());
    assert!(!errors(&validator, &stage("      lerning_rate: 1")).is_empty());
    assert!(!errors(&validator, &stage("      method: lorra")).is_empty());
    assert!(!errors(&validator, &stage("      lora: {rnak: 4}")).is_empty());
    assert!(!errors(&validator, &stage("      iters: many")).is_empty());
    let no_model = yaml_to_json("stages:\n  t:\n    kind: train\n    with: {out_dir: o}\n");
    assert!(
        !errors(&validator, &no_model).is_empty(),
        "model is required"
    );
    let preset =
        yaml_to_json("stages:\n  t:\n    kind: train\n    extends: lora\n    with: {out_dir: o}\n");
    assert!(
        errors(&validator, &preset).is_empty(),
        "a preset may supply the model"
    );
    let typo = yaml_to_json("stages:\n  t:\n    kind: train\n    dpes: [x]\n");
    assert!(!errors(&validator, &typo).is_empty());
}

#[test]
fn schema_out_writes_a_file() {
    let ws = Ws::new();
    let out = ws
        .pipe()
        .args(["schema", "--out", "s.json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let written: Value = serde_json::from_str(&ws.read("s.json")).unwrap();
    assert_eq!(written["title"], "pipe pipeline");
}
