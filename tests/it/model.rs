//! The MLX model core on the real SmolLM2-135M-Instruct (Q4_1 GGUF): quality, not shapes.
//! The model is fetched through `pipe_engine::fetch` (cached), or taken from `PIPE_SMOLLM2_GGUF`.
//! Reference figures (measured outside this repository): perplexity 11.09 on the passage
//! below from an independent numpy forward pass; the greedy answer to the France
//! question is "The capital of France is Paris."

use pipe_engine::data::{Message, Role};
use pipe_mlx_core::eval;
use pipe_mlx_core::generate::{self, GenerateOptions};
use pipe_mlx_core::load::{self, LoadOptions, LoadedModel};
use std::path::PathBuf;

const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of Germany. Water boils at 100 degrees Celsius at sea level.";

fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PIPE_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let cache = pipe_engine::dirs::user_cache_dir().expect("user cache dir");
    let known = pipe_engine::fetch::find("smollm2").expect("smollm2 is a known model");
    pipe_engine::fetch::fetch(&cache, known)
        .expect("fetch SmolLM2")
        .path()
        .to_path_buf()
}

fn smollm2() -> LoadedModel {
    load::load(
        smollm2_path().to_str().expect("utf-8 path"),
        LoadOptions::default(),
    )
    .expect("load SmolLM2 GGUF")
}

#[test]
fn smollm2_gguf_perplexity_matches_reference() {
    let mut m = smollm2();
    let ids = m.tokenizer.encode(PASSAGE, true).unwrap();
    assert_eq!(ids.len(), 38, "token count of the reference passage");
    let stats = eval::text_loss(&mut m.model, &m.tokenizer, PASSAGE, 1024).unwrap();
    let ppl = stats.perplexity();
    eprintln!("SmolLM2 GGUF perplexity on the reference passage: {ppl:.3}");
    assert!((ppl - 11.1).abs() < 0.5, "perplexity {ppl}");
}

#[test]
fn smollm2_gguf_answers_paris_through_the_chat_template() {
    let mut m = smollm2();
    let template = m
        .chat_template
        .as_ref()
        .expect("GGUF ships a chat template");
    let prompt = template
        .render(
            &[Message::new(Role::User, "What is the capital of France?")],
            true,
        )
        .unwrap();
    let ids = m.tokenizer.encode(&prompt, false).unwrap();
    let options = GenerateOptions {
        max_tokens: 24,
        ..Default::default()
    };
    let (g, stats) =
        generate::generate(&mut m.model, &m.tokenizer, &ids, &options, &mut |_| {}).unwrap();
    eprintln!(
        "answer: {:?} ({:?}); prompt {:.1} tok/s, generation {:.1} tok/s",
        g.text, g.stop_reason, stats.prompt_tps, stats.generation_tps
    );
    assert!(g.text.contains("Paris"), "{:?}", g.text);
}

fn max_abs_diff(a: &mlx_rs::Array, b: &mlx_rs::Array) -> f32 {
    a.subtract(b)
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap()
        .item_exact::<f32>()
}

fn logits_of(m: &mut LoadedModel, ids: &[u32]) -> mlx_rs::Array {
    let ids: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let tokens = mlx_rs::Array::from_slice(&ids, &[1, ids.len() as i32]);
    let out = m.model.forward_tokens(&tokens, None, None).unwrap();
    out.eval().unwrap();
    out
}

/// The GGUF weights written as a Hugging Face directory (float32 safetensors) and as an
/// mlx-community quantized directory load back to the same logits.
#[test]
fn smollm2_as_hf_and_mlx_quantized_directories_gives_the_same_logits() {
    let path = smollm2_path();
    let spec = path.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ids = smollm2().tokenizer.encode(PASSAGE, true).unwrap();
    for keep_quantized in [false, true] {
        let options = LoadOptions {
            keep_quantized,
            ..LoadOptions::default()
        };
        let mut gguf = load::load(spec, options).unwrap();
        let dir = tmp
            .path()
            .join(if keep_quantized { "mlx-q" } else { "hf-f32" });
        load::hf::save_dir(
            &gguf.model,
            &gguf.tokenizer,
            gguf.chat_template.as_ref(),
            &dir,
        )
        .unwrap();
        let mut hf = load::load(dir.to_str().unwrap(), options).unwrap();
        assert_eq!(hf.tokenizer.encode(PASSAGE, true).unwrap(), ids);
        let d = max_abs_diff(&logits_of(&mut gguf, &ids), &logits_of(&mut hf, &ids));
        eprintln!("keep_quantized={keep_quantized}: max |logit difference| {d}");
        assert!(d < 1e-3, "keep_quantized={keep_quantized}: {d}");
        let q = hf.model.model.layers[0].self_attn.q_proj.is_quantized();
        assert_eq!(q, keep_quantized);
        let rendered = hf
            .chat_template
            .as_ref()
            .unwrap()
            .render(&[Message::new(Role::User, "Hi")], true)
            .unwrap();
        assert!(rendered.ends_with("<|im_start|>assistant\n"));
    }
}

/// A strict loader names every problem: drop a tensor, add one, reshape one.
#[test]
fn broken_directory_is_reported_by_tensor_name() {
    let plain = LoadOptions {
        keep_quantized: false,
        ..LoadOptions::default()
    };
    let mut m = load::load(smollm2_path().to_str().unwrap(), plain).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    m.model.model.layers.truncate(29);
    load::hf::save_dir(&m.model, &m.tokenizer, None, &dir).unwrap();
    // Claim 30 layers and a wider MLP than the file has.
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 30.into();
    cfg["intermediate_size"] = 1600.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load::load(dir.to_str().unwrap(), plain)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    assert!(err.contains("model.layers.29.mlp.up_proj.weight"), "{err}");
    assert!(
        err.contains(
            "model.layers.0.mlp.gate_proj.weight: expected [1600, 576], found [1536, 576]"
        ),
        "{err}"
    );
}

/// The `smollm` pre-tokenizer splits digits one by one (figures from the notes).
#[test]
fn smollm2_gguf_tokenizer_splits_digits() {
    let m = smollm2();
    assert_eq!(
        m.tokenizer.encode("In 2024, 12345 apples.", false).unwrap(),
        [
            788, 216, 34, 32, 34, 36, 28, 216, 33, 34, 35, 36, 37, 13855, 30
        ]
    );
    assert_eq!(m.tokenizer.eos_ids, [2]);
    assert_eq!(m.tokenizer.token_to_id("<|im_start|>"), Some(1));
}

/// The CLI end to end on the real model: `pipe generate --json` and `pipe eval --text`,
/// and a model argument that names nothing exits 2.
#[test]
fn cli_generate_and_eval_on_smollm2() {
    let model = smollm2_path();
    let out = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .args(["generate", "--chat", "--json", "--max-tokens", "16", "-p"])
        .arg("What is the capital of France?")
        .arg("-m")
        .arg(&model)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        report["text"].as_str().unwrap().contains("Paris"),
        "{report}"
    );
    assert!(report["generation_tps"].as_f64().unwrap() > 0.0);

    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("passage.txt");
    std::fs::write(&text, PASSAGE).unwrap();
    let out = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .args(["eval", "--json", "--text"])
        .arg(&text)
        .arg("-m")
        .arg(&model)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let ppl = report["perplexity"].as_f64().unwrap();
    assert!((ppl - 11.1).abs() < 0.5, "{report}");

    // A repo id resolves offline in the Hugging Face hub cache (an mlx-community style
    // quantized snapshot written from the GGUF weights).
    let hub = tmp.path().join("hub");
    let repo = hub.join("models--HuggingFaceTB--SmolLM2-135M-Instruct");
    let m = smollm2();
    load::hf::save_dir(
        &m.model,
        &m.tokenizer,
        m.chat_template.as_ref(),
        &repo.join("snapshots/0123abcd"),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let out = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .env("HF_HUB_CACHE", &hub)
        .args(["eval", "--json", "--weights", "quantized", "--text"])
        .arg(&text)
        .args(["-m", "HuggingFaceTB/SmolLM2-135M-Instruct"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        report["model"]
            .as_str()
            .unwrap()
            .ends_with("snapshots/0123abcd"),
        "{report}"
    );
    let ppl = report["perplexity"].as_f64().unwrap();
    assert!((ppl - 11.1).abs() < 0.5, "{report}");

    assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .env("HF_HUB_CACHE", &hub)
        .args(["generate", "-m", "no/such-model-anywhere", "-p", "hi"])
        .assert()
        .code(2);
}

/// llama.cpp, a second implementation, reads the same Q4_1 file to the same numbers: the
/// same tokens for the passage, and at every position the same next-token distribution
/// over llama.cpp's top five (logits compared up to the position's common shift, which
/// softmax ignores), so the same greedy choice wherever llama.cpp's is not a near tie.
#[test]
fn smollm2_gguf_logits_match_llama_cpp() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("llama_cpp/smollm2_q4_1_passage.json")).unwrap();
    assert_eq!(
        reference["text"], PASSAGE,
        "the reference was made on PASSAGE"
    );
    let expected_ids: Vec<u32> = reference["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let mut m = smollm2();
    let ids = m.tokenizer.encode(PASSAGE, true).unwrap();
    assert_eq!(
        ids, expected_ids,
        "pipe and llama.cpp tokenize the passage alike"
    );

    let logits = logits_of(&mut m, &ids)
        .as_dtype(mlx_rs::Dtype::Float32)
        .unwrap();
    let vocab = logits.shape()[2] as usize;
    let all: &[f32] = logits.as_slice();
    let mut worst = 0f32;
    for (pos, top) in reference["top"].as_array().unwrap().iter().enumerate() {
        let row = &all[pos * vocab..(pos + 1) * vocab];
        let theirs: Vec<(usize, f32)> = top
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_u64().unwrap() as usize,
                    p[1].as_f64().unwrap() as f32,
                )
            })
            .collect();
        let ours: Vec<f32> = theirs.iter().map(|&(id, _)| row[id]).collect();
        let their_mean = theirs.iter().map(|t| t.1).sum::<f32>() / theirs.len() as f32;
        let our_mean = ours.iter().sum::<f32>() / ours.len() as f32;
        for (&(id, their_logit), our_logit) in theirs.iter().zip(&ours) {
            let diff = ((our_logit - our_mean) - (their_logit - their_mean)).abs();
            worst = worst.max(diff);
            assert!(
                diff < LLAMA_CPP_TOLERANCE,
                "position {pos}, token {id}: pipe {our_logit} (mean {our_mean}) vs llama.cpp \
                 {their_logit} (mean {their_mean})"
            );
        }
        let greedy = (0..vocab)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        if theirs[0].1 - theirs[1].1 > 2.0 * LLAMA_CPP_TOLERANCE {
            assert_eq!(greedy, theirs[0].0, "greedy choice at position {pos}");
        }
    }
    eprintln!("largest difference from llama.cpp's shifted logits: {worst:.3}");
}

/// llama.cpp multiplies Q4_1 weights by activations it first rounds to 8 bits (Q8_1);
/// pipe multiplies by float activations. Measured: the rounding moves a position's logits
/// together by up to 0.9 and apart by up to 0.47.
const LLAMA_CPP_TOLERANCE: f32 = 0.75;

/// The real GGUF with its header damaged as a bad download or disk would: a tensor count,
/// a metadata count or a key length that lies made MLX's parser read past its buffer and
/// die of SIGSEGV; a file cut short was MLX's message with C++ source paths. Each is now
/// one message naming the field, and exit 1.
#[test]
fn a_damaged_smollm2_gguf_is_one_message_not_a_crash() {
    let good = std::fs::read(smollm2_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lie = |at: usize, value: u64| {
        let mut bytes = good.clone();
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        bytes
    };
    let cases = [
        (
            "tensors",
            lie(8, 1 << 40),
            "1099511627776 tensors, more than its",
        ),
        (
            "metadata",
            lie(16, 1 << 40),
            "1099511627776 metadata entries",
        ),
        (
            "key",
            lie(24, 1 << 50),
            "metadata key 0 needs 1125899906842624 bytes",
        ),
        (
            "cut",
            good[..good.len() / 2].to_vec(),
            "extends past the end of the file",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"))
            .args(["generate", "--max-tokens", "1", "-p", "hi", "-m"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains("corrupt file"), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
    }
}

/// An adapter whose safetensors header lies about a shape: MLX multiplied it in 64 bits,
/// overflowed to 0 bytes and accepted it (the tensor came back with a negative shape). It
/// is now refused by name before MLX reads the file, as are a cut file and a wrong length.
#[test]
fn an_adapter_with_a_lying_safetensors_header_is_refused_by_tensor_name() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora");
    std::fs::create_dir_all(&adapter).unwrap();
    let config = serde_json::json!({"fine_tune_type": "lora", "num_layers": 1,
        "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0, "keys": ["self_attn.q_proj"]}});
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).unwrap();
    let file = |header: serde_json::Value, data: usize| {
        let h = header.to_string();
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h.as_bytes());
        bytes.extend(vec![0u8; data]);
        bytes
    };
    let name = "model.layers.29.self_attn.q_proj.lora_a";
    let overflow = serde_json::json!({"__metadata__": null,
        name: {"dtype": "F32", "shape": [2147483648u64, 2147483648u64], "data_offsets": [0, 0]}});
    let honest = serde_json::json!({"__metadata__": null,
        name: {"dtype": "F32", "shape": [576, 8], "data_offsets": [0, 18432]}});
    let cut = file(honest.clone(), 18432)[..100].to_vec();
    let cases = [
        (file(overflow, 0), "has dimension 2147483648"),
        (file(honest, 1000), "claims bytes 0..18432 of 1000"),
        (cut, "the header length says"),
    ];
    let batch = dir.path().join("in.jsonl");
    let request = serde_json::json!({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "a", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}});
    std::fs::write(&batch, format!("{request}\n")).unwrap();
    for (bytes, says) in cases {
        std::fs::write(adapter.join("adapters.safetensors"), bytes).unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"))
            .args(["generate", "--batch"])
            .arg(&batch)
            .arg("--out")
            .arg(dir.path().join("out.jsonl"))
            .arg("--adapter")
            .arg(format!("a={}", adapter.display()))
            .arg("-m")
            .arg(smollm2_path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{says}: {err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(
            err.contains(name) || says.contains("header length"),
            "{err}"
        );
    }
}
