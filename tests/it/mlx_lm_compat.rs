//! mlx-lm compatibility: an adapter pipe trains on SmolLM2 loads unchanged in mlx-lm 0.32.2
//! (`mlx_lm.load(..., adapter_path=...)` and `python -m mlx_lm generate --adapter-path`),
//! on the base model pipe saves as a Hugging Face directory, and mlx-lm computes the same
//! logits and the same greedy answer as pipe.
//!
//! mlx-lm comes from PyPI (see `crate::python`): the first run creates a virtual environment in the user cache
//! (`<cache>/python/mlx-lm-0.32.2`) and pip-installs MLX 0.32.2 and mlx-lm 0.32.2 into it
//! (a few minutes); later runs reuse it after checking the versions. Python 3 with `venv`
//! is required (`PIPE_PYTHON` picks the interpreter); without it the test fails and says
//! what to install. It is never skipped.

use mlx_rs::Array;
use pipe_engine::data::{
    Example, Message, Role, Split, SplitSpec, assign_split, read_bigbench_task,
};
use pipe_mlx_core::generate::{GenerateOptions, generate};
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::train::batch::TokenizedExample;
use pipe_mlx_core::train::lora::{LoraConfig, Method};
use pipe_mlx_core::train::tokenize::tokenize_example;
use pipe_mlx_core::train::trainer::{self, TrainConfig, TrainData};
use std::path::PathBuf;
use std::process::Command;

const MLX_VERSION: &str = "0.32.2";
const QUESTION: &str = "What is the past tense of the verb 'swim'? Answer with one word.";
const MAX_TOKENS: usize = 12;

fn smollm2_spec() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

use crate::python::run;

/// The interpreter of a virtual environment with mlx and mlx-lm 0.32.2.
pub fn mlx_lm_python() -> PathBuf {
    // mlx-cpu is MLX's Linux CPU backend; on macOS the `mlx` wheel carries Metal.
    let cpu = format!("mlx-cpu=={MLX_VERSION}");
    let extra: &[&str] = if cfg!(target_os = "linux") {
        &[&cpu]
    } else {
        &[]
    };
    crate::python::venv(
        &format!("mlx-lm-{MLX_VERSION}"),
        &[("mlx", MLX_VERSION), ("mlx-lm", MLX_VERSION)],
        extra,
    )
}

/// Loads base + adapter with mlx-lm's own loader, writes the logits of `ids` and the greedy
/// continuation of `chat_ids`.
const PEER: &str = r#"
import json, sys
import mlx.core as mx
from mlx_lm import load, generate
base, adapters, ids_file, out = sys.argv[1:5]
ids = json.load(open(ids_file))
model, tokenizer = load(base, adapter_path=adapters)
logits = model(mx.array([ids["probe"]])).astype(mx.float32)
mx.save_safetensors(out, {"logits": logits})
text = generate(model, tokenizer, prompt=ids["chat"], max_tokens=ids["max_tokens"])
print(json.dumps({"text": text}))
"#;

fn past_tense_rows() -> Vec<Example> {
    let cache = pipe_engine::dirs::user_cache_dir().unwrap();
    let dataset = pipe_engine::fetch::find_dataset("agid-past-tense").unwrap();
    let path = pipe_engine::fetch::fetch(&cache, dataset).expect("fetch the past-tense task");
    let examples = read_bigbench_task(
        path.path(),
        "What is the past tense of the verb '{{ input }}'? Answer with one word.",
    )
    .unwrap();
    let split = SplitSpec::default();
    examples
        .into_iter()
        .filter(|e| assign_split(e, &split) == Split::Train)
        .take(64)
        .collect()
}

fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    a.subtract(b)
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap()
        .item_exact::<f32>()
}

#[test]
fn mlx_lm_loads_pipes_adapter_and_agrees_with_pipe() {
    let python = mlx_lm_python();
    let dir = tempfile::tempdir().unwrap();
    let (base_dir, adapter_dir) = (dir.path().join("base"), dir.path().join("adapter"));
    let mut m = load::load(
        &smollm2_spec(),
        LoadOptions {
            keep_quantized: false,
            dtype: mlx_rs::Dtype::Float32,
        },
    )
    .expect("load SmolLM2");
    load::hf::save_dir(&m.model, &m.tokenizer, m.chat_template.as_ref(), &base_dir).unwrap();

    // A real, briefly trained adapter: a high learning rate so a few steps move it.
    let template = m.chat_template.as_ref();
    let train_set: Vec<TokenizedExample> = past_tense_rows()
        .iter()
        .map(|e| tokenize_example(e, &m.tokenizer, template).unwrap())
        .collect();
    let config = TrainConfig {
        method: Method::Lora,
        lora: LoraConfig {
            rank: 4,
            alpha: Some(16.0),
            num_layers: Some(8),
            ..LoraConfig::default()
        },
        iters: 6,
        batch_size: 4,
        learning_rate: 2e-3,
        ..TrainConfig::default()
    };
    let spec = trainer::prepare(&mut m.model, &config).unwrap();
    trainer::train(
        &mut m.model,
        spec.as_ref(),
        TrainData {
            train: &train_set,
            valid: &[],
            pad_id: m.tokenizer.pad_id(),
        },
        &config,
        &adapter_dir,
        false,
        &mut |_| {},
    )
    .unwrap();
    assert!(adapter_dir.join("adapters.safetensors").is_file());
    assert!(adapter_dir.join("adapter_config.json").is_file());

    let probe: Vec<u32> = m
        .tokenizer
        .encode("The past tense of swim is swam, and of run is ran.", false)
        .unwrap();
    let chat_text = template
        .unwrap()
        .render(&[Message::new(Role::User, QUESTION)], true)
        .unwrap();
    let chat: Vec<u32> = m.tokenizer.encode(&chat_text, false).unwrap();
    let as_array = |ids: &[u32]| {
        let v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        Array::from_slice(&v, &[1, v.len() as i32])
    };
    let ours = m
        .model
        .forward_tokens(&as_array(&probe), None, None)
        .unwrap();
    let (ours_text, _) = generate(
        &mut m.model,
        &m.tokenizer,
        &chat,
        &GenerateOptions {
            max_tokens: MAX_TOKENS,
            ..GenerateOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let mut base = load::load(
        base_dir.to_str().unwrap(),
        LoadOptions {
            keep_quantized: false,
            dtype: mlx_rs::Dtype::Float32,
        },
    )
    .unwrap();
    let base_logits = base
        .model
        .forward_tokens(&as_array(&probe), None, None)
        .unwrap();
    let adapter_effect = max_abs_diff(&ours, &base_logits);

    // mlx-lm's side, from its Python API.
    let ids_file = dir.path().join("ids.json");
    std::fs::write(
        &ids_file,
        serde_json::json!({"probe": probe, "chat": chat, "max_tokens": MAX_TOKENS}).to_string(),
    )
    .unwrap();
    let script = dir.path().join("peer.py");
    std::fs::write(&script, PEER).unwrap();
    let logits_file = dir.path().join("peer_logits.safetensors");
    let out = run(
        Command::new(&python)
            .arg(&script)
            .args([&base_dir, &adapter_dir, &ids_file, &logits_file]),
        "mlx-lm load with adapter_path",
    );
    let peer: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let theirs = Array::load_safetensors(&logits_file).unwrap()["logits"].clone();
    assert_eq!(theirs.shape(), ours.shape());
    let gap = max_abs_diff(&ours, &theirs);
    eprintln!(
        "adapter effect on logits {adapter_effect:.4}, pipe vs mlx-lm {gap:.2e}; pipe: {:?}, mlx-lm: {:?}",
        ours_text.text, peer["text"]
    );
    assert!(
        adapter_effect > 0.05,
        "the adapter barely changes the logits ({adapter_effect}); the comparison would prove nothing"
    );
    assert!(
        gap < 2e-3 && gap < adapter_effect / 50.0,
        "mlx-lm's logits differ from pipe's by {gap} (the adapter itself moves them by {adapter_effect})"
    );
    assert_eq!(peer["text"].as_str().unwrap(), ours_text.text);

    // And the command line users run, unchanged.
    let cli = run(
        Command::new(&python)
            .args(["-m", "mlx_lm", "generate", "--model"])
            .arg(&base_dir)
            .arg("--adapter-path")
            .arg(&adapter_dir)
            .args([
                "--prompt",
                QUESTION,
                "--max-tokens",
                &MAX_TOKENS.to_string(),
                "--temp",
                "0",
            ]),
        "python -m mlx_lm generate --adapter-path",
    );
    let text = cli
        .split("==========")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected mlx_lm generate output:\n{cli}"))
        .trim();
    assert_eq!(
        text,
        ours_text.text.trim(),
        "mlx_lm generate printed:\n{cli}"
    );
}
