//! The `tune` kind over real train + evaluate trials on SmolLM2-135M-Instruct (tiny
//! settings), the best parameters trained downstream through `params_file`, and
//! `lora: {rank: auto}` choosing a higher rank for larger, harder data.

use crate::support::Ws;
use serde_json::Value;

/// A fetch stage that copies the past-tense task to `raw/past_tense.json`.
const FETCH: &str = r#"
  fetch:
    cmd: mkdir -p raw && cp "$(pipe data fetch agid-past-tense)" raw/past_tense.json
    outs: [raw/past_tense.json]"#;

/// An ingest stage that splits `SOURCE` into `data/`.
const INGEST_SOURCE: &str = r#"
  ingest:
    kind: ingest
    with:
      source: SOURCE
      bigbench_prompt: "What is the past tense of the verb '{{ '{{' }} input {{ '}}' }}'? Answer with one word."
      split: {valid: 0.1, test: 0.1, seed: 0}
      out: data
"#;

fn ingest(source: &str) -> String {
    INGEST_SOURCE.replace("SOURCE", source)
}

fn model() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

fn json(ws: &Ws, rel: &str) -> Value {
    serde_json::from_str(&ws.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn tune_runs_train_and_evaluate_trials_and_the_best_trains_downstream() {
    let ws = Ws::new();
    let model = model();
    // The data is the user's file (a stage's outs would be restored if edited).
    let fetched = ws
        .pipe()
        .args(["data", "fetch", "agid-past-tense"])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    let source = String::from_utf8(fetched.stdout).unwrap();
    ws.file(
        "verbs.json",
        &std::fs::read_to_string(source.trim()).unwrap(),
    );
    let ingest = ingest("verbs.json");
    ws.pipeline(&format!(
        r#"stages:{ingest}
  search:
    kind: tune
    with:
      out: search
      space:
        learning_rate: {{float: [1.0e-4, 3.0e-3], log: true}}
        lora.rank: {{int: [2, 8]}}
      objective: {{metric: eval.tuned.loss, mode: min}}
      budget: {{n_trials: 3, iters: 2}}
      trial:
        train:
          model: "{model}"
          train_data: data/train.jsonl
          valid_data: data/valid.jsonl
          lora: {{num_layers: 1}}
          batch_size: 2
          valid_every: 1
          valid_batches: 1
          max_seq_len: 64
        evaluate:
          data: data/valid.jsonl
          max_examples: 2
          max_tokens: 4
  best:
    kind: train
    with:
      params_file: search/best.yaml
      model: "{model}"
      train_data: data/train.jsonl
      out_dir: best
      lora: {{rank: 16, num_layers: 1}}
      iters: 1
      batch_size: 2
      max_seq_len: 64
"#
    ));
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("search") && run.ran().contains("best"));
    let trials: Vec<Value> = ws
        .read("search/trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t["status"], "complete", "{t}");
        assert!(t["value"].as_f64().unwrap() > 0.0);
        assert!(t["peak_memory_bytes"].as_u64().unwrap() > 0, "{t}");
        // Validation losses after steps 1 and 2 are the pruning rule's intermediate values.
        let steps: Vec<u64> = t["intermediate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2], "{t}");
        let rank = t["params"]["lora.rank"].as_i64().unwrap();
        assert!((2..=8).contains(&rank));
        // Each trial kept its adapter and evaluation in the trial cache.
        let dir = format!("cache/tune/v1/trials/{}", t["key"].as_str().unwrap());
        let config = json(&ws, &format!("{dir}/train/adapter_config.json"));
        assert_eq!(config["lora_parameters"]["rank"].as_i64(), Some(rank));
        assert!(ws.exists(&format!("{dir}/eval.json")));
    }
    // The base model's score is computed by the first trial only; the others read it back
    // (same model, records and budget) and report the same numbers.
    let evals: Vec<Value> = trials
        .iter()
        .map(|t| {
            let key = t["key"].as_str().unwrap();
            json(&ws, &format!("cache/tune/v1/trials/{key}/eval.json"))
        })
        .collect();
    let reused = evals.iter().filter(|e| e["base_reused"] == true).count();
    assert_eq!(reused, 2, "{evals:?}");
    for e in &evals {
        assert_eq!(e["base"], evals[0]["base"]);
    }
    let metrics = json(&ws, "search/metrics.json");
    let best_rank = metrics["best_params"]["lora"]["rank"].as_i64().unwrap();
    // The downstream stage trained with the tuned rank, not the 16 in its own `with`.
    let config = json(&ws, "best/adapter_config.json");
    assert_eq!(config["lora_parameters"]["rank"].as_i64(), Some(best_rank));

    // The trials read the data, so editing it reruns the search with new trials instead
    // of reusing those trained on the old data.
    let mut task = json(&ws, "verbs.json");
    let examples = task["examples"].as_array_mut().unwrap();
    examples.truncate(examples.len() - 50);
    ws.file("verbs.json", &task.to_string());
    let rerun = ws.run_ok(&[]);
    assert!(rerun.ran().contains("search"), "{:?}", rerun.ran());
    let old_keys: Vec<&Value> = trials.iter().map(|t| &t["key"]).collect();
    for line in ws.read("search/trials.jsonl").lines() {
        let t: Value = serde_json::from_str(line).unwrap();
        assert!(
            !old_keys.contains(&&t["key"]),
            "a trial on the old data was reused: {t}"
        );
    }
}

#[test]
fn rank_auto_gives_larger_harder_data_a_higher_rank_and_says_why() {
    let ws = Ws::new();
    let easy: String = (0..16)
        .map(|_| "{\"prompt\": \"Say OK.\", \"completion\": \"OK\"}\n")
        .collect();
    ws.file("easy/train.jsonl", &easy);
    let model = model();
    let train = |name: &str, data: &str| {
        format!(
            r#"
  {name}:
    kind: train
    with:
      model: "{model}"
      train_data: {data}
      out_dir: {name}
      lora: {{rank: auto, num_layers: 1}}
      iters: 1
      batch_size: 2
      max_seq_len: 64
"#
        )
    };
    ws.pipeline(&format!(
        "stages:{FETCH}{}{}{}",
        ingest("raw/past_tense.json"),
        train("easy_run", "easy/train.jsonl"),
        train("hard_run", "data/train.jsonl")
    ));
    ws.run_ok(&[]);
    let easy = json(&ws, "easy_run/rank.json");
    let hard = json(&ws, "hard_run/rank.json");
    let rank = |v: &Value| v["rank"].as_u64().unwrap();
    assert!(rank(&hard) > rank(&easy), "easy {easy}\nhard {hard}");
    assert!(hard["tokens"].as_u64() > easy["tokens"].as_u64());
    assert!(easy["diversity"].as_f64() < hard["diversity"].as_f64());
    assert!(hard["reason"].as_str().unwrap().contains("nats to learn"));
    // The adapter was trained with the chosen rank, and the log says why.
    let config = json(&ws, "hard_run/adapter_config.json");
    assert_eq!(
        config["lora_parameters"]["rank"].as_u64(),
        Some(rank(&hard))
    );
    let log = ws.read("cache/logs/pipe/hard_run.log");
    assert!(
        log.contains(&format!("rank: auto -> {}", rank(&hard))),
        "{log}"
    );
}
