//! `batch_size: auto` through `pipe run` on SmolLM2: the rows per step come from the size
//! of the training set, the memory probe splits them into micro-batches and accumulation,
//! and `metrics.json` records the choice, the split and the measured peak memory.

use serde_json::Value;

/// Eight training and two validation examples: the rule's floor of 4 rows per step.
fn data(ws: &crate::support::Ws) {
    let verbs = [
        "walk", "jump", "play", "look", "call", "open", "clean", "paint", "visit", "watch",
    ];
    let rows = |verbs: &[&str]| -> String {
        verbs
            .iter()
            .map(|v| format!("{{\"prompt\": \"Past tense of {v}?\", \"completion\": \"{v}ed\"}}\n"))
            .collect()
    };
    ws.file("data/train.jsonl", &rows(&verbs[..8]));
    ws.file("data/valid.jsonl", &rows(&verbs[8..]));
}

fn stage(name: &str, extra: &str) -> String {
    let model =
        std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    format!(
        r#"  {name}:
    kind: train
    with:
      model: "{model}"
      train_data: data/train.jsonl
      valid_data: data/valid.jsonl
      out_dir: {name}
      lora: {{rank: 4, num_layers: 2}}
      iters: 2
      batch_size: auto
      max_seq_len: 64
{extra}"#
    )
}

#[test]
fn batch_size_auto_is_chosen_from_the_data_split_by_memory_and_recorded() {
    let ws = crate::support::Ws::new();
    data(&ws);
    // A generous budget: the whole batch goes through at once. The second stage's budget
    // is the first one's measured peak minus a little, so the probe must split the batch.
    ws.pipeline(&format!(
        "stages:\n{}",
        stage("roomy", "      memory_budget_mb: 8192\n")
    ));
    ws.run_ok(&[]);
    let metrics: Value = serde_json::from_str(&ws.read("roomy/metrics.json")).unwrap();
    let auto = &metrics["batch_size_auto"];
    assert_eq!(auto["batch_size"], 4, "{auto}");
    assert_eq!(auto["train_examples"], 8, "{auto}");
    assert!(
        auto["reason"]
            .as_str()
            .unwrap()
            .contains("8 training examples"),
        "{auto}"
    );
    assert_eq!(
        (&auto["micro_batch"], &auto["grad_accum"]),
        (&4.into(), &1.into())
    );
    let roomy_peak = auto["peak_memory_bytes"].as_u64().unwrap();
    assert!(
        roomy_peak > 100 << 20,
        "the weights alone are larger: {auto}"
    );

    // Room for one row of the longest examples but not four: accumulation makes up the
    // rest, and the rows per step stay 4.
    let probes = metrics["batch"]["probes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let one_row = probes
        .iter()
        .find(|p| p["rows"] == 1)
        .and_then(|p| p["peak_bytes"].as_u64())
        .expect("the probe measured one row");
    let tight_mb = (one_row >> 20) + 1;
    ws.pipeline(&format!(
        "stages:\n{}{}",
        stage("roomy", "      memory_budget_mb: 8192\n"),
        stage("tight", &format!("      memory_budget_mb: {tight_mb}\n"))
    ));
    ws.run_ok(&[]);
    let metrics: Value = serde_json::from_str(&ws.read("tight/metrics.json")).unwrap();
    let auto = &metrics["batch_size_auto"];
    assert_eq!(auto["batch_size"], 4, "{auto}");
    let (micro, accum) = (
        auto["micro_batch"].as_u64().unwrap(),
        auto["grad_accum"].as_u64().unwrap(),
    );
    assert_eq!(micro * accum, 4, "{auto}");
    assert!(
        micro < 4,
        "a budget of {tight_mb} MiB cannot hold 4 rows: {auto}"
    );
    assert!(auto["peak_memory_bytes"].as_u64().unwrap() > 0, "{auto}");
}

#[test]
fn batch_size_auto_refuses_a_fixed_split() {
    let ws = crate::support::Ws::new();
    data(&ws);
    ws.pipeline(&format!("stages:\n{}", stage("t", "      grad_accum: 2\n")));
    let run = ws.run(&[]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("remove `grad_accum`"), "{}", run.stderr);
}
