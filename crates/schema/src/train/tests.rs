use super::*;
use crate::{Auto, FieldError};
use serde_json::Value;
use serde_json::json;

fn err(with: Value) -> FieldError {
    TrainWith::parse(&with).unwrap_err()
}

#[test]
fn a_minimal_job_resolves_with_defaults() {
    let spec = TrainWith::parse(&json!({
        "model": "m", "train_data": "d/train.jsonl", "out_dir": "runs/x"
    }))
    .unwrap();
    let config = spec.fixed_config().unwrap();
    assert_eq!(config, TrainConfig::default());
    assert_eq!(spec.deps(), vec!["d/train.jsonl".to_owned()]);
}

#[test]
fn auto_values_stay_auto_until_chosen() {
    let spec = TrainWith::parse(&json!({
        "model": "m", "tokens": "t", "out_dir": "o",
        "batch_size": "auto", "lora": {"rank": "auto"}
    }))
    .unwrap();
    assert!(spec.fixed_config().is_none());
    let config = spec.config(16, 4);
    assert_eq!((config.lora.rank, config.batch_size), (16, 4));
    assert_eq!(spec.inputs, TrainInputs::Tokens("t".into()));
}

#[test]
fn bad_values_name_their_key() {
    let base = || json!({"model": "m", "train_data": "d", "out_dir": "o"});
    let with = |key: &str, v: Value| {
        let mut w = base();
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut at = &mut w;
        for p in parts {
            at = at.as_object_mut().unwrap().entry(p).or_insert(json!({}));
        }
        at[last] = v;
        w
    };
    for (key, value, path) in [
        ("lora.rank", json!(0), "lora.rank"),
        ("quantize_bits", json!(3), "quantize_bits"),
        ("learning_rate", json!(-1.0), "learning_rate"),
        ("lora.dropout", json!(1.5), "lora.dropout"),
        ("lora.targets", json!(["q_proj", "qq_proj"]), "lora.targets"),
        ("micro_batch", json!(3), "micro_batch"),
        ("lora.rnak", json!(8), "lora.rnak"),
        ("learnin_rate", json!(1e-4), "learnin_rate"),
        ("iters", json!("many"), "iters"),
    ] {
        let e = err(with(key, value));
        assert_eq!(e.path.join("."), path, "{key}: {e}");
    }
}

#[test]
fn tokens_and_data_files_exclude_each_other() {
    let e = err(json!({"model": "m", "tokens": "t", "train_data": "d", "out_dir": "o"}));
    assert!(e.message.contains("not both"), "{e}");
    let e = err(json!({"model": "m", "out_dir": "o"}));
    assert_eq!(e.path, vec!["train_data"]);
}

#[test]
fn the_spec_round_trips_through_json() {
    let spec = TrainWith::parse(&json!({
        "model": "m", "train_data": "d", "valid_data": "v", "out_dir": "o",
        "lora": {"rank": 4, "alpha": 8.0}, "micro_batch": "auto"
    }))
    .unwrap();
    let text = serde_json::to_string(&spec).unwrap();
    let back: TrainSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn batch_size_auto_refuses_a_fixed_split() {
    let e = err(
        json!({"model": "m", "train_data": "d", "out_dir": "o", "batch_size": "auto", "grad_accum": 2}),
    );
    assert_eq!(e.path, vec!["grad_accum"]);
    assert!(e.message.contains("remove `grad_accum`"), "{e}");
    let e = err(
        json!({"model": "m", "train_data": "d", "out_dir": "o", "batch_size": "auto", "micro_batch": 2}),
    );
    assert!(e.message.contains("remove `micro_batch: 2`"), "{e}");
    let spec = TrainWith::parse(&json!({"model": "m", "train_data": "d", "out_dir": "o", "batch_size": "auto", "memory_budget_mb": 512})).unwrap();
    let config = spec.config(8, 16);
    assert_eq!(
        (config.batch_size, config.micro_batch),
        (16, Some(Auto::Auto))
    );
}

#[test]
fn a_params_file_wins_key_by_key_and_is_checked() {
    let spec = TrainWith::parse(&json!({
        "model": "m", "train_data": "d", "out_dir": "o", "params_file": "best.yaml",
        "learning_rate": 1e-4, "lora": {"rank": 8, "alpha": 16.0}, "iters": 5
    }))
    .unwrap();
    let merged = spec
        .with_params(&json!({"learning_rate": 3e-4, "lora": {"rank": 16}}))
        .unwrap();
    let config = merged.fixed_config().unwrap();
    assert_eq!(config.learning_rate, 3e-4);
    assert_eq!((config.lora.rank, config.lora.alpha), (16, Some(16.0)));
    assert_eq!(config.iters, 5);
    let e = spec.with_params(&json!({"lora": {"rank": 0}})).unwrap_err();
    assert_eq!(e.path, vec!["lora", "rank"]);
    let auto = spec.with_params(&json!({"batch_size": "auto"})).unwrap();
    assert!(auto.options.batch_size.is_auto());
}

#[test]
fn an_unknown_key_lists_the_known_ones() {
    let e = err(json!({"model": "m", "train_data": "d", "out_dir": "o", "lora": {"rnak": 8}}));
    assert_eq!(e.path, vec!["lora", "rnak"]);
    assert!(e.expected.iter().any(|k| k == "rank"), "{e:?}");
    let e = err(json!({"model": "m", "train_data": "d", "out_dir": "o", "lerning_rate": 1}));
    assert!(e.expected.iter().any(|k| k == "learning_rate"), "{e:?}");
    assert!(e.expected.iter().any(|k| k == "train_data"), "{e:?}");
}

#[test]
fn zero_sizes_are_refused() {
    for (key, value) in [
        ("micro_batch", json!(0)),
        ("batch_size", json!(0)),
        ("grad_accum", json!(0)),
        ("iters", json!(0)),
    ] {
        let mut with = json!({"model": "m", "train_data": "d", "out_dir": "o"});
        with[key] = value;
        assert_eq!(err(with).path, vec![key.to_owned()]);
    }
}

#[test]
fn a_memory_budget_needs_a_split_that_follows_it() {
    let e = err(json!({"model": "m", "train_data": "d", "out_dir": "o", "memory_budget_mb": 64}));
    assert_eq!(e.path, vec!["memory_budget_mb"]);
    assert!(e.message.contains("add `micro_batch: auto`"), "{e}");
    TrainWith::parse(&json!({"model": "m", "train_data": "d", "out_dir": "o", "micro_batch": "auto", "memory_budget_mb": 64})).unwrap();
}
