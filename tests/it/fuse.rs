//! `pipe fuse` on the real SmolLM2: the fused Hugging Face directory reproduces base plus
//! adapter, and re-quantizing reports its drift.

use assert_cmd::Command;
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::train::adapters::save_mlx_lm;
use pipe_mlx_core::train::fuse::PROBE;
use pipe_mlx_core::train::lora::{LoraConfig, Method, attach};

fn model_spec() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

#[test]
fn fused_directory_equals_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        keep_quantized: false,
        ..LoadOptions::default()
    };
    let mut m = load::load(&model_spec(), options).unwrap();
    let spec = pipe_mlx_core::train::lora::adapter_spec(
        &LoraConfig {
            rank: 4,
            num_layers: Some(2),
            ..LoraConfig::default()
        },
        Method::Lora,
    );
    attach(&mut m.model, &spec, 3).unwrap();
    // A trained-looking adapter: B = 0 would make fusing trivially exact.
    let key = mlx_rs::random::key(5).unwrap();
    for (name, p) in m.model.parameters_mut().flatten() {
        if name.ends_with("lora_b") {
            *p = mlx_rs::random::normal::<f32>(p.shape(), None, 0.01, &key).unwrap();
        }
    }
    save_mlx_lm(&m.model, &spec, Method::Lora, &dir.path().join("adapter")).unwrap();
    let ids: Vec<i32> = m
        .tokenizer
        .encode(PROBE, true)
        .unwrap()
        .into_iter()
        .map(|i| i as i32)
        .collect();
    let probe = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let expected = m.model.forward_tokens(&probe, None, None).unwrap();

    let out = Command::cargo_bin("pipe")
        .unwrap()
        .args(["fuse", "--model", &model_spec(), "--json", "--adapter"])
        .arg(dir.path().join("adapter"))
        .arg("--out")
        .arg(dir.path().join("fused"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["drift"]["adapter_effect"].as_f64().unwrap() > 1e-3,
        "{report}"
    );
    assert!(
        report["drift"]["fuse_drift"].as_f64().unwrap() < 1e-4,
        "{report}"
    );

    let mut fused = load::load(dir.path().join("fused").to_str().unwrap(), options).unwrap();
    let got = fused.model.forward_tokens(&probe, None, None).unwrap();
    let diff = got
        .subtract(&expected)
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap()
        .item_exact::<f32>();
    assert!(
        diff < 1e-3,
        "fused directory differs from base + adapter by {diff}"
    );

    let out = Command::cargo_bin("pipe")
        .unwrap()
        .args([
            "fuse",
            "--model",
            &model_spec(),
            "--quantize-bits",
            "4",
            "--adapter",
        ])
        .arg(dir.path().join("adapter"))
        .arg("--out")
        .arg(dir.path().join("fused-q4"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("re-quantized to 4 bits: drift"), "{text}");
}
