//! Confidence and error analysis (issue #20) through `pipe run` on the real model and data:
//! ingest keeps the task's `comment` (regular or irregular) as each row's category, evaluate writes every
//! accuracy with its 95% interval and the per-example results, compare tests two LoRA
//! ranks on the same examples and applies the fallback to the cheaper one, and the report
//! draws error bars and shows the categories, the wrong answers and the disagreements.

use crate::support::{Ws, set};
use serde_json::Value;

const PIPELINE: &str = r#"
name: quality
stages:
  fetch:
    cmd: >-
      mkdir -p raw && cp "$(pipe data fetch agid-past-tense)" raw/past_tense.json
    outs: [raw/past_tense.json]
  ingest:
    kind: ingest
    with:
      source: raw/past_tense.json
      bigbench_prompt: "What is the past tense of the verb '{{ '{{' }} input {{ '}}' }}'? Answer with one word."
      split: {valid: 0.1, test: 0.1, seed: 0}
      out: data
  tokenize:
    kind: tokenize
    with:
      model: smollm2-135m-instruct
      data: data
      splits: [train, valid]
      out: tokens
  train:
    kind: train
    matrix:
      rank: [2, 8]
    with:
      model: smollm2-135m-instruct
      tokens: tokens
      out_dir: "adapters/r{{ matrix.rank }}"
      method: lora
      lora: {rank: "{{ matrix.rank }}", num_layers: 8}
      iters: 6
      learning_rate: 1.0e-3
      batch_size: 8
      valid_every: 6
      valid_batches: 2
  evaluate:
    kind: evaluate
    matrix:
      rank: [2, 8]
    with:
      model: smollm2-135m-instruct
      adapter: "adapters/r{{ matrix.rank }}"
      data: data/test.jsonl
      max_examples: 12
      max_tokens: 8
      out: "evals/r{{ matrix.rank }}.json"
  compare:
    kind: compare
    with:
      variants:
        - {name: r2, train: adapters/r2, eval: evals/r2.json}
        - {name: r8, train: adapters/r8, eval: evals/r8.json}
      metric: exact_match
      out: compare
  report:
    kind: report
    with:
      title: quality
      data: data/stats.json
      compare: compare
      out: reports/quality.html
"#;

/// A rate with its interval, checked: the counts give the value, and the interval holds it.
fn check_rate(r: &Value, what: &str) -> (f64, f64, f64) {
    let (value, low, high) = (
        r["value"].as_f64().unwrap(),
        r["low"].as_f64().unwrap(),
        r["high"].as_f64().unwrap(),
    );
    let (k, n) = (r["successes"].as_u64().unwrap(), r["n"].as_u64().unwrap());
    assert!(n > 0, "{what}: {r}");
    assert!((value - k as f64 / n as f64).abs() < 1e-12, "{what}: {r}");
    assert!(
        0.0 <= low && low <= value && value <= high && high <= 1.0 && low < high,
        "{what}: the interval holds the estimate: {r}"
    );
    (value, low, high)
}

#[test]
fn accuracies_carry_intervals_and_the_report_shows_the_errors() {
    let ws = Ws::new();
    ws.pipeline(PIPELINE);
    let run = ws.run_ok(&[]);
    assert!(
        run.ran()
            .is_superset(&set(&["ingest", "compare", "report"]))
    );

    // Ingest keeps the task's comment as the category.
    let test_rows = ws.read("data/test.jsonl");
    assert!(
        test_rows.lines().all(|l| l.contains(r#""category":""#)),
        "{test_rows}"
    );

    // Evaluate: intervals on every accuracy, every example, and the categories.
    for v in ["r2", "r8"] {
        let eval: Value = serde_json::from_str(&ws.read(&format!("evals/{v}.json"))).unwrap();
        for side in ["base", "tuned"] {
            for metric in ["exact_match", "contains_match"] {
                let (value, ..) = check_rate(
                    &eval[side][format!("{metric}_ci")],
                    &format!("{v} {side} {metric}"),
                );
                assert_eq!(eval[side][metric].as_f64(), Some(value));
                assert_eq!(eval[side][format!("{metric}_ci")]["n"], 12);
            }
        }
        let results = eval["results"].as_array().unwrap();
        assert_eq!(results.len(), 12);
        for r in results {
            let id = r["id"].as_str().unwrap();
            assert!(
                id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
                "{r}"
            );
            assert!(["regular", "irregular"].contains(&r["category"].as_str().unwrap()));
        }
        let right = results
            .iter()
            .filter(|r| r["tuned_correct"] == true)
            .count();
        assert_eq!(eval["tuned"]["exact_match_ci"]["successes"], right);
        let categories = eval["categories"].as_array().unwrap();
        let mut counted = 0;
        for c in categories {
            check_rate(&c["base"], "category");
            check_rate(&c["tuned"], "category");
            counted += c["tuned"]["n"].as_u64().unwrap();
        }
        assert_eq!(counted, 12, "the categories cover every example");
    }

    // Compare: intervals in the table, a paired test on the same 12 examples, and the
    // recommendation follows it (r2 has the smaller adapter: it is the cheaper one).
    let c: Value = serde_json::from_str(&ws.read("compare/compare.json")).unwrap();
    for v in c["variants"].as_array().unwrap() {
        check_rate(&v["accuracy_after_ci"], "compare table");
        check_rate(&v["accuracy_before_ci"], "compare table");
    }
    let tests = c["quality"]["paired"].as_array().unwrap();
    assert_eq!(tests.len(), 1, "{c:#}");
    let t = &tests[0];
    assert_eq!(t["test"]["n"], 12);
    let (d, low, high) = (
        t["test"]["difference"].as_f64().unwrap(),
        t["test"]["low"].as_f64().unwrap(),
        t["test"]["high"].as_f64().unwrap(),
    );
    assert!(low <= d && d <= high, "{t}");
    let p = t["test"]["p_value"].as_f64().unwrap();
    assert_eq!(t["distinguishable"], p < 0.05);
    let reco = &c["recommendation"];
    let reasons = reco["reasons"].to_string();
    if t["distinguishable"] == false {
        assert_eq!(
            reco["variant"], "r2",
            "not distinguishable: the cheaper: {reasons}"
        );
        assert!(
            reasons.contains("not distinguishable") && reasons.contains("exact McNemar p = "),
            "{reasons}"
        );
    } else {
        assert_eq!(reco["variant"], t["a"], "{reasons}");
        assert!(reasons.contains("better than"), "{reasons}");
    }
    let metrics: Value = serde_json::from_str(&ws.read("compare/metrics.json")).unwrap();
    check_rate(&metrics["value_ci"], "compare metrics");
    assert_eq!(metrics["paired_tests"], 1);

    // The report: error bars on the accuracy chart, intervals in the table, the
    // per-category table, the wrong answers and the disagreements.
    let html = ws.read("reports/quality.html");
    assert_eq!(
        html.matches(r#"<g class="errorbar""#).count(),
        4,
        "2 variants, before and after"
    );
    let r2: Value = serde_json::from_str(&ws.read("evals/r2.json")).unwrap();
    let text = |r: &Value| {
        format!(
            "{:.3} [{:.3}, {:.3}]",
            r["value"].as_f64().unwrap(),
            r["low"].as_f64().unwrap(),
            r["high"].as_f64().unwrap()
        )
    };
    let cell = format!(
        "{} → {}",
        text(&r2["base"]["exact_match_ci"]),
        text(&r2["tuned"]["exact_match_ci"])
    );
    assert!(html.contains(&cell), "{cell} in the comparison table");
    assert!(html.contains(r#"id="errors""#) && html.contains("Exact match per category"));
    assert!(html.contains("<td>regular</td>"), "a category row");
    assert!(html.contains("Examples the fine-tuned model got wrong"));
    let wrong = 12 - r2["tuned"]["exact_match_ci"]["successes"].as_u64().unwrap();
    assert!(
        html.contains(&format!("r2: {wrong} of 12 wrong")),
        "{wrong}"
    );
    assert!(html.contains("Where r8 and r2 disagree") || html.contains("Where r2 and r8 disagree"));
    assert!(html.contains("Paired tests on the same examples"));

    // `pipe eval --json` gives the interval too.
    let out = ws
        .pipe()
        .args([
            "eval",
            "-m",
            "smollm2-135m-instruct",
            "--data",
            "data/test.jsonl",
        ])
        .args(["--limit", "3", "--accuracy", "--max-tokens", "6", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (value, ..) = check_rate(&json["exact_match_ci"], "pipe eval");
    assert_eq!(json["exact_match"].as_f64(), Some(value));
    assert_eq!(json["exact_match_ci"]["n"], 3);
}
