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
    cmd: mkdir -p raw && cp "$(pipe data fetch bigbench-past-tense)" raw/past_tense.json
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
