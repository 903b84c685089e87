//! The shipped quickstart pipeline end to end on the real model and data, with small
//! settings: every stage runs, the report holds every section with the numbers the
//! stages wrote, a second run executes nothing, and a param change reruns only what reads
//! it (and what depends on that).

use crate::support::{Ws, set};

const SMALL: [&str; 4] = ["--set", "train.iters=4", "--set", "eval.examples=4"];

#[test]
fn quickstart_runs_reports_and_reruns_only_what_changed() {
    let ws = Ws::new();
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/quickstart.yaml"
    ))
    .unwrap();
    ws.file("pipelines/quickstart.yaml", &yaml);

    let mut args = vec!["pipelines/quickstart.yaml"];
    args.extend(SMALL);
    let first = ws.run_ok(&args);
    assert_eq!(
        first.ran(),
        set(&[
            "fetch", "ingest", "version", "tokenize", "train", "evaluate", "compare", "report"
        ])
    );

    let progress: Vec<&serde_json::Value> = first
        .events
        .iter()
        .filter(|e| e["event"] == "stage-progress" && e["stage"] == "train")
        .collect();
    let last = progress.last().expect("the train stage reports progress");
    assert_eq!((&last["step"], &last["total"]), (&4.into(), &4.into()));
    assert!(
        last["loss"].as_f64().unwrap() > 0.0 && last["tokens_per_second"].as_f64().unwrap() > 0.0
    );

    let html = ws.read("reports/quickstart.html");
    for id in [
        "summary",
        "dag",
        "data",
        "training",
        "comparison",
        "samples",
        "environment",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "report lacks {id}");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&ws.read("runs/quickstart/eval/lora.json")).unwrap();
    // Each accuracy with its 95% interval: `0.000 [0.000, 0.490] → 0.250 [0.046, 0.699]`.
    let shown = |side: &str| {
        let r = &eval[side]["exact_match_ci"];
        assert_eq!(r["value"], eval[side]["exact_match"]);
        format!(
            "{:.3} [{:.3}, {:.3}]",
            r["value"].as_f64().unwrap(),
            r["low"].as_f64().unwrap(),
            r["high"].as_f64().unwrap()
        )
    };
    assert!(
        html.contains(&format!("{} → {}", shown("base"), shown("tuned"))),
        "report shows the evaluation's numbers"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&ws.read("runs/quickstart/lora/metrics.json")).unwrap();
    assert_eq!(metrics["steps"], 4);
    let valid = metrics["final_valid_loss"].as_f64().unwrap();
    assert!(
        html.contains(&format!("{valid:.3}")),
        "report shows the validation loss"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ws.read("runs/quickstart/data/stats.json")).unwrap();
    let train_examples = stats["splits"]["train"]["examples"].as_u64().unwrap();
    assert!(train_examples > 1000, "{train_examples}");
    assert!(
        html.contains(&format!(">{train_examples}<")),
        "report shows the data statistics"
    );
    let tokens: serde_json::Value =
        serde_json::from_str(&ws.read("runs/quickstart/tokens/metrics.json")).unwrap();
    for split in ["train", "valid"] {
        let n = tokens[split]["tokens"].as_u64().unwrap();
        assert!(
            n > 10 * tokens[split]["examples"].as_u64().unwrap(),
            "{split}: {n}"
        );
        assert!(
            html.contains(&format!(">{n}<")),
            "report shows the {split} token count"
        );
    }
    assert_eq!(
        metrics["train_tokens"], tokens["train"]["tokens"],
        "training saw the tokenize stage's tokens"
    );
    assert!(ws.exists("reports/index.html"));
    let version: serde_json::Value =
        serde_json::from_str(&ws.read("runs/quickstart/version.json")).unwrap();
    assert_eq!(version["rows"]["train"].as_u64(), Some(train_examples));

    let again = ws.run_ok(&args);
    assert!(
        again.started().is_empty(),
        "a second run executes nothing: {:?}",
        again.started()
    );

    let fewer = ws.run_ok(&[
        "pipelines/quickstart.yaml",
        "--set",
        "train.iters=4",
        "--set",
        "eval.examples=3",
    ]);
    assert_eq!(fewer.ran(), set(&["evaluate", "compare", "report"]));
}
