//! The `tokenize` kind on the real model and data: its `.tokens` files hold exactly what
//! training tokenizes inline, its statistics add up, and a train stage fed `tokens:`
//! trains exactly like one fed the JSONL files.

use crate::support::Ws;
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::train::job::tokenize_file;

const PIPELINE: &str = r#"
name: tok
stages:
  fetch:
    cmd: mkdir -p raw && cp "$(pipe data fetch agid-past-tense)" raw/past_tense.json
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
      max_seq_len: 20
      out: tokens
  train-tokens:
    kind: train
    with:
      model: smollm2-135m-instruct
      tokens: tokens
      out_dir: runs/from-tokens
      lora: {rank: 4, num_layers: 2}
      iters: 2
      batch_size: 4
      valid_every: 2
      valid_batches: 2
  train-inline:
    kind: train
    with:
      model: smollm2-135m-instruct
      train_data: data/train.jsonl
      valid_data: data/valid.jsonl
      out_dir: runs/inline
      lora: {rank: 4, num_layers: 2}
      iters: 2
      batch_size: 4
      valid_every: 2
      valid_batches: 2
"#;

#[test]
fn tokens_match_inline_tokenization_and_train_identically() {
    let ws = Ws::new();
    ws.pipeline(PIPELINE);
    let run = ws.run_ok(&[]);
    assert!(run.ran().contains("tokenize"), "{:?}", run.ran());

    let loaded = load::load(&model(), LoadOptions::default()).unwrap();
    let template = loaded.chat_template.as_ref();
    let manifest: serde_json::Value =
        serde_json::from_str(&ws.read("tokens/manifest.json")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("tokens/metrics.json")).unwrap();
    for split in ["train", "valid"] {
        let inline = tokenize_file(
            &ws.path(&format!("data/{split}.jsonl")),
            &loaded.tokenizer,
            template,
        )
        .unwrap();
        let stored =
            pipe_mlx_core::stages::tokens::read(&ws.path(&format!("tokens/{split}.tokens")))
                .unwrap();
        assert_eq!(
            stored, inline,
            "{split}: the .tokens file is inline tokenization"
        );
        let m = &metrics[split];
        let tokens: usize = inline.iter().map(|e| e.len()).sum();
        let loss: usize = inline.iter().map(|e| e.loss_tokens()).sum();
        assert_eq!(m["examples"], inline.len());
        assert_eq!(m["tokens"], tokens);
        assert_eq!(m["loss_tokens"], loss);
        assert!(
            loss > 0 && loss < tokens,
            "prompts are masked: {loss} of {tokens}"
        );
        let long = inline.iter().filter(|e| e.len() > 21).count();
        assert_eq!(m["truncated"], long);
        assert!(long > 0, "max_seq_len 20 truncates some of these prompts");
        assert_eq!(manifest["splits"][split]["file"], format!("{split}.tokens"));
    }
    assert!(!ws.exists("tokens/test.tokens"), "only the listed splits");

    let from_tokens = ws.read("runs/from-tokens/train_log.jsonl");
    let inline = ws.read("runs/inline/train_log.jsonl");
    let losses = |log: &str, key: &str| -> Vec<Option<f64>> {
        log.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].as_f64())
            .collect()
    };
    assert_eq!(losses(&from_tokens, "loss").len(), 2);
    assert_eq!(
        losses(&from_tokens, "loss"),
        losses(&inline, "loss"),
        "same tokens, same training steps, bit for bit"
    );
    // Two processes, the same adapter, byte for byte (tensor order included).
    assert_eq!(
        std::fs::read(ws.path("runs/from-tokens/adapters.safetensors")).unwrap(),
        std::fs::read(ws.path("runs/inline/adapters.safetensors")).unwrap(),
        "the adapter files are identical"
    );
    // Validation sums over batches in MLX's CPU kernels, whose thread split can change the
    // last bits between processes; anything past 1e-6 would be a different computation.
    for (a, b) in losses(&from_tokens, "valid_loss")
        .into_iter()
        .zip(losses(&inline, "valid_loss"))
    {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    // The data a training saw, counted: identical, not merely close.
    let metrics = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&ws.read(&format!("runs/{dir}/metrics.json"))).unwrap()
    };
    let (a, b) = (metrics("from-tokens"), metrics("inline"));
    for key in [
        "train_examples",
        "valid_examples",
        "truncated_examples",
        "train_tokens",
        "train_loss_tokens",
        "valid_tokens",
        "trained_tokens",
        "processed_tokens",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn tokens_and_data_files_together_are_refused_at_load() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  t:\n    kind: train\n    with: {model: m, tokens: tok, train_data: d.jsonl, out_dir: o}\n",
    );
    let out = ws.pipe().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipe.yaml:") && err.contains("not both"),
        "{err}"
    );
    ws.pipeline(
        "stages:\n  t:\n    kind: tokenize\n    with: {model: m, data: d, out: o, splits: [tarin]}\n",
    );
    let out = ws.pipe().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`tarin`"), "{err}");
}

fn model() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

/// `pipe tokens` counts what the tokenize stage counts, from JSONL or CSV, and shows the
/// examples through the chat template as the model reads them.
#[test]
fn pipe_tokens_reports_the_tokenize_stage_counts_and_the_templated_text() {
    let ws = Ws::new();
    let verbs = ["walk", "jump", "sing", "go", "write", "bring"];
    let past = ["walked", "jumped", "sang", "went", "wrote", "brought"];
    let mut jsonl = String::new();
    let mut csv = String::from("prompt,completion\n");
    for (v, p) in verbs.iter().zip(past) {
        let prompt = format!("What is the past tense of '{v}'?");
        jsonl.push_str(&format!(
            "{}\n",
            serde_json::json!({"prompt": prompt, "completion": p})
        ));
        csv.push_str(&format!("\"{prompt}\",{p}\n"));
    }
    ws.file("data/train.jsonl", &jsonl).file("upload.csv", &csv);
    ws.pipeline(
        "name: tok\nstages:\n  tokenize:\n    kind: tokenize\n    with:\n      model: smollm2-135m-instruct\n      data: data\n      splits: [train]\n      max_seq_len: 24\n      out: tokens\n",
    );
    ws.run_ok(&[]);
    let metrics: serde_json::Value = serde_json::from_str(&ws.read("tokens/metrics.json")).unwrap();
    let stage_stats = &metrics["train"];
    assert_eq!(stage_stats["examples"], 6, "{metrics}");

    let tokens = |file: &str| -> serde_json::Value {
        let out = ws
            .pipe()
            .args([
                "tokens",
                file,
                "--json",
                "--max-seq-len",
                "24",
                "--preview",
                "2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let from_jsonl = tokens("data/train.jsonl");
    assert_eq!(&from_jsonl["stats"], stage_stats);
    assert!(
        stage_stats["truncated"].as_u64().unwrap() > 0,
        "{stage_stats}"
    );
    let from_csv = tokens("upload.csv");
    assert_eq!(from_csv["stats"], from_jsonl["stats"]);
    assert_eq!(from_csv["preview"], from_jsonl["preview"]);
    let histogram_total: u64 = from_jsonl["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_total, 6);
    let first = &from_jsonl["preview"][0];
    assert_eq!(
        first["text"],
        // SmolLM2's template adds its default system message: what the preview is for.
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the past tense of 'walk'?<|im_end|>\n\
         <|im_start|>assistant\nwalked<|im_end|>\n"
    );
    assert_eq!(from_jsonl["preview"].as_array().unwrap().len(), 2);

    // A missing file: one line that says so.
    let out = ws.pipe().args(["tokens", "nope.jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.jsonl does not exist"), "{err}");
}
