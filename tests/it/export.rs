//! `pipe export gguf` on the real SmolLM2: the fused model as f16 and q8_0 GGUF and a LoRA
//! adapter GGUF. pipe loads its own files back (f16: the logits of the source model with
//! its matrices rounded to float16; q8_0: within a stated tolerance), generates from them,
//! and PyPI `gguf`'s reader (llama.cpp's own Python package, in a venv, see
//! `crate::python`) lists the metadata llama.cpp reads, with llama.cpp's value types, and
//! the tensors with their names, shapes and types.

use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use pipe_mlx_core::eval;
use pipe_mlx_core::load::{self, LoadOptions, LoadedModel};
use pipe_mlx_core::train::adapters;
use pipe_mlx_core::train::lora::{Adapter, AdapterSpec, Method, attach};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of Germany. Water boils at 100 degrees Celsius at sea level.";

fn smollm2_spec() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

fn float32(spec: &str) -> LoadedModel {
    let options = LoadOptions {
        keep_quantized: false,
        ..LoadOptions::default()
    };
    load::load(spec, options).unwrap_or_else(|e| panic!("load {spec}: {e}"))
}

fn logits(m: &mut LoadedModel) -> Array {
    let ids: Vec<i32> = m
        .tokenizer
        .encode(PASSAGE, true)
        .unwrap()
        .into_iter()
        .map(|i| i as i32)
        .collect();
    let tokens = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let out = m.model.forward_tokens(&tokens, None, None).unwrap();
    out.eval().unwrap();
    out
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

fn pipe_export(args: &[&str], out: &Path) -> Value {
    let stdout = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .args(["export", "gguf", "--json", "-m", &smollm2_spec()])
        .args(args)
        .arg("--out")
        .arg(out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&stdout).unwrap()
}

/// Every file's metadata (`{key: {type: [...], value}}`, arrays as `{len, head}`) and
/// tensors (`{name, shape (ggml order), type}`) as gguf-py's `GGUFReader` sees them.
const READER: &str = r#"
import json, sys
from gguf import GGUFReader
out = {}
for path in sys.argv[1:]:
    r = GGUFReader(path)
    meta = {}
    for name, f in r.fields.items():
        v = f.contents()
        if isinstance(v, list):
            v = {"len": len(v), "head": v[:3]}
        meta[name] = {"type": [t.name for t in f.types], "value": v}
    tensors = [{"name": t.name, "shape": [int(x) for x in t.shape], "type": t.tensor_type.name}
               for t in r.tensors]
    out[path] = {"metadata": meta, "tensors": tensors}
json.dump(out, sys.stdout)
"#;

fn read_with_gguf_py(files: &[&Path]) -> Value {
    let python = crate::python::venv("gguf-0.19.0", &[("gguf", "0.19.0")], &[]);
    let out = crate::python::run(
        Command::new(python).args(["-c", READER]).args(files),
        "gguf-py GGUFReader",
    );
    serde_json::from_str(&out).unwrap()
}

fn meta<'a>(file: &'a Value, key: &str) -> &'a Value {
    let m = &file["metadata"][key];
    assert!(!m.is_null(), "metadata `{key}` is missing");
    m
}

/// The value and gguf-py's type name of a scalar key.
fn scalar(file: &Value, key: &str) -> (Value, String) {
    let m = meta(file, key);
    (
        m["value"].clone(),
        m["type"][0].as_str().unwrap().to_owned(),
    )
}

fn tensor<'a>(file: &'a Value, name: &str) -> &'a Value {
    file["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("tensor `{name}` is missing"))
}

#[test]
fn smollm2_exports_to_gguf_that_pipe_and_gguf_py_read() {
    let tmp = tempfile::tempdir().unwrap();
    let f16 = tmp.path().join("out/smollm2.f16.gguf");
    let q8 = tmp.path().join("smollm2.q8_0.gguf");
    let summary = pipe_export(&[], &f16);
    assert_eq!(summary["tensor_types"]["f16"], 211, "{summary}");
    assert_eq!(summary["tensor_types"]["f32"], 61, "norms stay float32");
    let summary = pipe_export(&["--type", "q8_0"], &q8);
    assert_eq!(summary["tensor_types"]["q8_0"], 211, "{summary}");
    assert_eq!(summary["f16_fallbacks"], serde_json::json!([]));

    // f16: the same logits as the source with its matrices rounded to float16 (the norms
    // stay float32 in the file, as llama.cpp's converter writes them).
    let mut source = float32(&smollm2_spec());
    let reference = logits(&mut source);
    for (_, p) in source.model.parameters_mut().flatten() {
        if p.ndim() >= 2 {
            *p = p
                .as_dtype(mlx_rs::Dtype::Float16)
                .unwrap()
                .as_dtype(mlx_rs::Dtype::Float32)
                .unwrap();
        }
    }
    let rounded = logits(&mut source);
    let mut back = float32(f16.to_str().unwrap());
    let d = max_abs_diff(&logits(&mut back), &rounded);
    eprintln!("f16 export: max |logit - source rounded to f16| {d}");
    assert!(d < 1e-3, "{d}");
    // q8_0 is lossy (8 bits per weight): the perplexity on the passage stays within 3% of
    // the float32 source's (measured: 10.90 against 11.10; MLX's own 8-bit affine
    // quantization, group 32, moves the logits by as much), and the greedy choice agrees at
    // 95% of the positions (37 of 38 measured: one near-tie flips). Kept quantized, MLX
    // dequantizes the blocks exactly in float32.
    let mut back = load::load(q8.to_str().unwrap(), LoadOptions::default()).unwrap();
    let q8_logits = logits(&mut back);
    let d = max_abs_diff(&q8_logits, &reference);
    let mean = q8_logits
        .subtract(&reference)
        .unwrap()
        .abs()
        .unwrap()
        .mean(None)
        .unwrap()
        .item_exact::<f32>();
    let ppl = |m: &mut LoadedModel| {
        eval::text_loss(&mut m.model, &m.tokenizer, PASSAGE, 1024)
            .unwrap()
            .perplexity()
    };
    let (ppl_source, ppl_q8) = (ppl(&mut float32(&smollm2_spec())), ppl(&mut back));
    eprintln!(
        "q8_0 export: max |logit - source| {d}, mean {mean}; perplexity {ppl_q8:.3} (source {ppl_source:.3})"
    );
    assert!(
        (ppl_q8 / ppl_source - 1.0).abs() < 0.03,
        "{ppl_q8} vs {ppl_source}"
    );
    let argmax = |a: &Array| {
        mlx_rs::ops::indexing::argmax_axis(a, -1, None)
            .unwrap()
            .as_slice::<u32>()
            .to_vec()
    };
    let (a, b) = (argmax(&q8_logits), argmax(&reference));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    eprintln!(
        "q8_0 export: greedy choice agrees at {agree} of {} positions",
        a.len()
    );
    assert!(agree * 100 >= a.len() * 95, "{agree} of {}", a.len());
    // The exported file answers through pipe generate like the original does.
    let out = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .args(["generate", "--max-tokens", "16", "-p"])
        .arg("What is the capital of France?")
        .arg("-m")
        .arg(&q8)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Paris"), "{text}");

    let files = read_with_gguf_py(&[&f16, &q8]);
    let (f16_file, q8_file) = (&files[f16.to_str().unwrap()], &files[q8.to_str().unwrap()]);
    for (file, ftype) in [(f16_file, 1), (q8_file, 7)] {
        assert_eq!(scalar(file, "GGUF.version").0, 3);
        let expect = |key: &str, value: Value, ty: &str| {
            assert_eq!(scalar(file, key), (value, ty.to_owned()), "{key}");
        };
        expect("general.architecture", "llama".into(), "STRING");
        expect("general.type", "model".into(), "STRING");
        expect("general.file_type", ftype.into(), "UINT32");
        expect("general.quantization_version", 2.into(), "UINT32");
        expect("llama.context_length", 8192.into(), "UINT32");
        expect("llama.embedding_length", 576.into(), "UINT32");
        expect("llama.block_count", 30.into(), "UINT32");
        expect("llama.feed_forward_length", 1536.into(), "UINT32");
        expect("llama.attention.head_count", 9.into(), "UINT32");
        expect("llama.attention.head_count_kv", 3.into(), "UINT32");
        expect("llama.rope.dimension_count", 64.into(), "UINT32");
        expect("llama.vocab_size", 49152.into(), "UINT32");
        expect("llama.rope.freq_base", 100000.0.into(), "FLOAT32");
        expect("tokenizer.ggml.model", "gpt2".into(), "STRING");
        expect("tokenizer.ggml.pre", "smollm".into(), "STRING");
        expect("tokenizer.ggml.bos_token_id", 1.into(), "UINT32");
        expect("tokenizer.ggml.eos_token_id", 2.into(), "UINT32");
        expect("tokenizer.ggml.add_bos_token", false.into(), "BOOL");
        let eps = scalar(file, "llama.attention.layer_norm_rms_epsilon");
        assert!((eps.0.as_f64().unwrap() - 1e-5).abs() < 1e-9 && eps.1 == "FLOAT32");
        let tokens = meta(file, "tokenizer.ggml.tokens");
        assert_eq!(tokens["type"], serde_json::json!(["ARRAY", "STRING"]));
        assert_eq!(tokens["value"]["len"], 49152);
        assert_eq!(
            tokens["value"]["head"],
            serde_json::json!(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        );
        let types = meta(file, "tokenizer.ggml.token_type");
        assert_eq!(types["type"], serde_json::json!(["ARRAY", "INT32"]));
        assert_eq!(types["value"]["head"], serde_json::json!([3, 3, 3]));
        assert_eq!(meta(file, "tokenizer.ggml.merges")["value"]["len"], 48900);
        let template = scalar(file, "tokenizer.chat_template").0;
        assert!(template.as_str().unwrap().contains("<|im_start|>"));

        let tensors = file["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), 272, "30 blocks × 9 + embedding + final norm");
        assert!(
            tensors.iter().all(|t| t["name"] != "output.weight"),
            "tied head"
        );
        let matrix = if ftype == 1 { "F16" } else { "Q8_0" };
        // gguf-py lists shapes in ggml order: [row length, rows].
        for (name, shape, ty) in [
            ("token_embd.weight", [576, 49152], matrix),
            ("blk.0.attn_q.weight", [576, 576], matrix),
            ("blk.0.attn_k.weight", [576, 192], matrix),
            ("blk.29.ffn_down.weight", [1536, 576], matrix),
            ("blk.29.ffn_gate.weight", [576, 1536], matrix),
        ] {
            let t = tensor(file, name);
            assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
            assert_eq!(t["type"], ty, "{name}");
        }
        for name in [
            "blk.7.attn_norm.weight",
            "blk.7.ffn_norm.weight",
            "output_norm.weight",
        ] {
            let t = tensor(file, name);
            assert_eq!(t["shape"], serde_json::json!([576]), "{name}");
            assert_eq!(t["type"], "F32", "{name}");
        }
    }
}

/// An adapter with non-zero B on q, k and down in the last two blocks, saved as mlx-lm
/// writes it.
fn adapter_dir(dir: &Path) -> AdapterSpec {
    let mut m = float32(&smollm2_spec());
    let spec = AdapterSpec {
        rank: 4,
        scale: 2.5,
        dropout: 0.0,
        num_layers: Some(2),
        targets: vec!["q_proj".into(), "k_proj".into(), "down_proj".into()],
        dora: false,
    };
    attach(&mut m.model, &spec, 7).unwrap();
    let key = mlx_rs::random::key(3).unwrap();
    for layer in &mut m.model.model.layers[28..] {
        for linear in [
            &mut layer.self_attn.q_proj,
            &mut layer.self_attn.k_proj,
            &mut layer.mlp.down_proj,
        ] {
            let a = Adapter::of_mut(linear).unwrap();
            let shape = a.lora_b.shape().to_vec();
            *a.lora_b = mlx_rs::random::normal::<f32>(&shape, None, 0.02, &key).unwrap();
        }
    }
    adapters::save_mlx_lm(&m.model, &spec, Method::Lora, dir).unwrap();
    spec
}

#[test]
fn adapter_exports_fused_and_as_a_gguf_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    let spec = adapter_dir(&dir);
    let dir_arg = dir.to_str().unwrap();

    // Fused: pipe reads back the adapted model's logits (f16 rounding aside).
    let fused = tmp.path().join("fused.f16.gguf");
    pipe_export(&["--adapter", dir_arg], &fused);
    let mut adapted = float32(&smollm2_spec());
    let base = logits(&mut adapted);
    adapters::load_mlx_lm(&mut adapted.model, &dir).unwrap();
    let expected = logits(&mut adapted);
    let effect = max_abs_diff(&expected, &base);
    let mut back = float32(fused.to_str().unwrap());
    let d = max_abs_diff(&logits(&mut back), &expected);
    eprintln!("fused f16 export: max |logit - adapted| {d}; the adapter moves logits by {effect}");
    assert!(
        effect > 0.1,
        "the test adapter must change the model: {effect}"
    );
    assert!(d < 0.1 * effect, "{d} vs adapter effect {effect}");

    // LoRA only: llama.cpp's adapter layout.
    let lora = tmp.path().join("lora.gguf");
    let summary = pipe_export(&["--adapter", dir_arg, "--lora-only"], &lora);
    assert_eq!(summary["kind"], "adapter");
    assert_eq!(summary["tensors"], 2 * 3 * 2);
    let files = read_with_gguf_py(&[&lora]);
    let file = &files[lora.to_str().unwrap()];
    assert_eq!(scalar(file, "general.type").0, "adapter");
    assert_eq!(scalar(file, "general.architecture").0, "llama");
    assert_eq!(scalar(file, "adapter.type").0, "lora");
    let alpha = scalar(file, "adapter.lora.alpha");
    assert_eq!(alpha.1, "FLOAT32");
    assert_eq!(
        alpha.0.as_f64().unwrap() as f32,
        spec.scale * spec.rank as f32
    );
    // ggml order: lora_a is [in, rank], lora_b is [rank, out].
    for (name, shape) in [
        ("blk.28.attn_q.weight.lora_a", [576, 4]),
        ("blk.28.attn_q.weight.lora_b", [4, 576]),
        ("blk.29.attn_k.weight.lora_b", [4, 192]),
        ("blk.29.ffn_down.weight.lora_a", [1536, 4]),
        ("blk.29.ffn_down.weight.lora_b", [4, 576]),
    ] {
        let t = tensor(file, name);
        assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
        assert_eq!(t["type"], "F16", "{name}");
    }
}

#[test]
fn bad_export_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("pipe")
            .unwrap()
            .args(["export", "gguf"])
            .args(args)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone()
    };
    let err = String::from_utf8_lossy(&run(&["--lora-only"])).into_owned();
    assert!(err.contains("--adapter"), "{err}");
    let missing = tmp.path().join("no-adapter");
    let err = String::from_utf8_lossy(&run(&["--adapter", missing.to_str().unwrap()])).into_owned();
    assert!(err.contains("no adapter_config.json"), "{err}");
    let err = String::from_utf8_lossy(&run(&["--type", "q4_k"])).into_owned();
    assert!(err.contains("q8_0"), "{err}");
    assert!(!out.exists());
}
