//! The `compare` kind through `pipe run`, on small fabricated variant folders (the
//! metrics a train and an evaluate stage write): the glob finds the matrix expansions,
//! constraints exclude, the recommendation and its reasons land in `compare.json`, and the
//! report renders them.

use crate::support::{Ws, set};

/// A train out_dir's `metrics.json` and step log, and an evaluate out.
fn fabricate(ws: &Ws, v: &str, peak_gib: f64, seconds: f64, before: f64, after: f64) {
    let metrics = serde_json::json!({
        "method": "lora", "steps": 2, "seconds": seconds,
        "peak_memory_bytes": (peak_gib * (1u64 << 30) as f64) as u64,
        "trained_tokens_per_second": 1000.0 / seconds, "adapter_bytes": 1 << 20,
        "final_valid_loss": 1.0 - after, "train_tokens": 500, "train_loss_tokens": 90,
    });
    ws.file(&format!("fixtures/{v}/metrics.json"), &metrics.to_string());
    ws.file(
        &format!("fixtures/{v}/train_log.jsonl"),
        &(1..=2)
            .map(|step| {
                serde_json::json!({
                    "step": step, "loss": 2.0 / step as f64, "lr": 1e-4, "seconds": 1.0,
                    "trained_tokens": 45, "processed_tokens": 250,
                    "trained_tokens_per_second": 45.0, "processed_tokens_per_second": 250.0,
                    "peak_memory_bytes": 1 << 30, "grad_norm": 1.0,
                    "valid_loss": if step == 2 { Some(1.0 - after) } else { None },
                })
                .to_string()
                    + "\n"
            })
            .collect::<String>(),
    );
    let scores = |em: f64| {
        serde_json::json!({"loss": 1.0, "perplexity": 2.7, "exact_match": em,
                           "contains_match": em, "seconds": 1.0})
    };
    let eval = serde_json::json!({
        "model": "m", "adapter": format!("runs/{v}"), "examples": 10,
        "normalization": "lower-cased", "base": scores(before), "tuned": scores(after),
        "samples": [{"prompt": format!("prompt of {v}"), "expected": "went",
                     "before": "The past tense is", "after": "went"}],
    });
    ws.file(&format!("evals/{v}.json"), &eval.to_string());
}

const PIPELINE: &str = r#"
stages:
  train:
    matrix:
      v: [small, big, slow]
    cmd: mkdir -p runs/{{ matrix.v }} && cp fixtures/{{ matrix.v }}/* runs/{{ matrix.v }}/
    deps: ["fixtures/{{ matrix.v }}"]
    outs: ["runs/{{ matrix.v }}"]
  compare:
    kind: compare
    with:
      variants:
        - {glob: "runs/*", eval: "evals/{dir}.json"}
      metric: exact_match
      max_memory_gb: 2
      max_minutes: 10
      out: out/compare
  report:
    kind: report
    with:
      title: fabricated
      compare: out/compare
      out: reports/fabricated.html
"#;

#[test]
fn compare_finds_the_variants_applies_the_limits_and_reports() {
    let ws = Ws::new();
    fabricate(&ws, "small", 1.0, 60.0, 0.0, 0.7);
    fabricate(&ws, "big", 3.0, 60.0, 0.0, 0.9);
    fabricate(&ws, "slow", 1.5, 1200.0, 0.0, 0.8);
    ws.pipeline(PIPELINE);
    let run = ws.run_ok(&[]);
    assert!(run.ran().is_superset(&set(&["compare", "report"])));

    let c: serde_json::Value = serde_json::from_str(&ws.read("out/compare/compare.json")).unwrap();
    let reco = &c["recommendation"];
    assert_eq!(reco["variant"], "train@v=small");
    assert_eq!(
        reco["reasons"][0],
        "highest held-out exact match: 0.700 (base model 0.000)"
    );
    let others: Vec<&str> = reco["others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(
        others,
        [
            "train@v=big excluded: peak memory 3.00 GiB exceeds max_memory_gb = 2",
            "train@v=slow excluded: training took 20.0 min, over max_minutes = 10",
        ]
    );
    assert_eq!(c["variants"].as_array().unwrap().len(), 3);
    assert_eq!(c["ranking"][0]["standing"], "recommended");
    assert_eq!(c["samples"].as_array().unwrap().len(), 3);
    let m: serde_json::Value = serde_json::from_str(&ws.read("out/compare/metrics.json")).unwrap();
    assert_eq!(
        (
            &m["variants"],
            &m["eligible"],
            &m["recommended"],
            &m["value"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!("train@v=small"),
            &serde_json::json!(0.7)
        )
    );

    let html = ws.read("reports/fabricated.html");
    assert!(html.contains("Recommended: train@v=small"));
    assert!(html.contains("train@v=big excluded: peak memory 3.00 GiB"));
    assert!(
        html.contains("0.000 → 0.900"),
        "every variant is in the table"
    );
    assert!(
        html.contains("prompt of slow"),
        "samples come through compare.json"
    );

    // Loosen the memory limit: the compare stage reruns and big wins.
    ws.pipeline(&PIPELINE.replace("max_memory_gb: 2", "max_memory_gb: 4"));
    let run = ws.run_ok(&[]);
    assert_eq!(run.ran(), set(&["compare", "report"]));
    let c: serde_json::Value = serde_json::from_str(&ws.read("out/compare/compare.json")).unwrap();
    assert_eq!(c["recommendation"]["variant"], "train@v=big");
    assert_eq!(c["ranking"][1]["variant"], "train@v=small");
    assert_eq!(
        c["ranking"][1]["reasons"][0],
        "held-out exact match 0.700 vs 0.900 for train@v=big"
    );
}

#[test]
fn a_glob_that_matches_nothing_fails_at_load_with_the_fix() {
    let ws = Ws::new();
    ws.pipeline(&PIPELINE.replace("glob: \"runs/*\"", "glob: \"run/*\""));
    let out = ws.pipe().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipe.yaml:") && err.contains("the glob `run/*` matches no stage's outs"),
        "{err}"
    );
    ws.pipeline(&PIPELINE.replace(
        "      compare: out/compare\n",
        "      compare: out/compare\n      variants: [{name: a, train: runs/a}]\n",
    ));
    let out = ws.pipe().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not both"), "{err}");
}
