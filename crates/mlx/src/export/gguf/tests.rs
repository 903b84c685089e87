//! Round trips through pipe's own GGUF loader on tiny random models: F16 gives the same
//! logits as the model with its weights rounded to float16; Q8_0 gives exactly the weights
//! the Q8_0 encoding stands for, and logits within a stated tolerance.

use super::*;
use crate::chat::{CHATML, ChatTemplate};
use crate::linear::Linear;
use crate::load::{self, LoadOptions};
use crate::models::llama::tiny_random;
use crate::test_support::max_abs_diff;
use crate::tokenizer::toy;
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

fn tokens() -> Array {
    Array::from_slice(&[1i32, 60, 7, 200, 3, 2, 80, 261, 9, 100], &[1, 10])
}

fn logits(model: &mut Llama) -> Array {
    let out = model.forward_tokens(&tokens(), None, None).unwrap();
    out.eval().unwrap();
    out
}

/// Rounds every parameter to float16 and back, as an F16 file stores it.
fn round_to_f16(model: &mut Llama) {
    for (_, p) in model.parameters_mut().flatten() {
        *p = p
            .as_dtype(mlx_rs::Dtype::Float16)
            .unwrap()
            .as_dtype(mlx_rs::Dtype::Float32)
            .unwrap();
    }
}

fn info() -> ModelInfo {
    ModelInfo {
        name: "tiny".into(),
        context_length: 512,
    }
}

fn export(model: &Llama, file_type: FileType, dir: &Path) -> (PathBuf, Summary) {
    let tok = Tokenizer::from_gguf(&toy("smollm")).unwrap();
    let chat = ChatTemplate::new(CHATML, "<|im_start|>", "<|endoftext|>").unwrap();
    let out = dir.join(format!("tiny-{}.gguf", file_type.name()));
    let summary = write_model(model, &tok, Some(&chat), &info(), file_type, &out).unwrap();
    (out, summary)
}

#[test]
fn f16_export_loads_back_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for qwen2 in [false, true] {
        let mut model = tiny_random(11, 262, 2, qwen2).unwrap();
        round_to_f16(&mut model);
        let expected = logits(&mut model);
        let (path, summary) = export(&model, FileType::F16, tmp.path());
        assert_eq!(summary.bytes, fs_err::metadata(&path).unwrap().len());
        let mut loaded = load::load(path.to_str().unwrap(), LoadOptions::default()).unwrap();
        assert_eq!(loaded.model.config.family, model.config.family);
        assert_eq!(loaded.model.config.num_kv_heads, 2);
        let d = max_abs_diff(&logits(&mut loaded.model), &expected);
        assert!(d < 1e-5, "qwen2={qwen2}: max |logit difference| {d}");
        let text = "<|im_start|>hello 42";
        let toy_tok = Tokenizer::from_gguf(&toy("smollm")).unwrap();
        assert_eq!(
            loaded.tokenizer.encode(text, false).unwrap(),
            toy_tok.encode(text, false).unwrap()
        );
        assert_eq!(loaded.chat_template.unwrap().source(), CHATML);
    }
}

#[test]
fn an_untied_head_is_written_as_output_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny_random(12, 262, 1, false).unwrap();
    let head = mlx_rs::random::normal::<f32>(&[262, 64], None, 0.1, None).unwrap();
    model.lm_head = Some(Linear::plain(head, None));
    model.config.tie_word_embeddings = false;
    round_to_f16(&mut model);
    let expected = logits(&mut model);
    let (path, summary) = export(&model, FileType::F16, tmp.path());
    assert_eq!(summary.tensors, 1 + 9 + 1 + 1);
    let mut loaded = load::load(path.to_str().unwrap(), LoadOptions::default()).unwrap();
    assert!(!loaded.model.config.tie_word_embeddings);
    let d = max_abs_diff(&logits(&mut loaded.model), &expected);
    assert!(d < 1e-5, "{d}");
}

/// Q8_0: MLX's reader must see exactly the values the blocks encode (this checks the block
/// layout and the permutation), and the logits stay close to the float32 model's.
#[test]
fn q8_0_export_loads_back_to_the_encoded_weights_and_close_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny_random(13, 262, 2, false).unwrap();
    let expected = logits(&mut model);
    let (path, summary) = export(&model, FileType::Q8_0, tmp.path());
    assert!(
        summary.f16_fallbacks.is_empty(),
        "{:?}",
        summary.f16_fallbacks
    );
    assert_eq!(summary.tensor_types["f32"], 2 * 2 + 1, "norms stay float32");
    // Kept quantized, MLX's float32 dequantization of the blocks is exact (a float16 scale
    // times an 8-bit integer); dequantized at load it would round through float16.
    let mut loaded = load::load(path.to_str().unwrap(), LoadOptions::default()).unwrap();
    assert!(loaded.model.model.layers[1].self_attn.q_proj.is_quantized());
    let source = load::gguf::permute(
        &model.model.layers[1]
            .self_attn
            .q_proj
            .dense_weight()
            .unwrap(),
        model.config.num_heads,
    )
    .unwrap();
    let encoded = quant::dequantize_q8_0(&quant::quantize_q8_0(source.as_slice::<f32>()));
    let read = load::gguf::permute(
        &loaded.model.model.layers[1]
            .self_attn
            .q_proj
            .dense_weight()
            .unwrap(),
        model.config.num_heads,
    )
    .unwrap();
    let d = max_abs_diff(&read, &Array::from_slice(&encoded, source.shape()));
    assert!(d < 1e-6, "Q8_0 values as MLX reads them differ by {d}");
    let d = max_abs_diff(&logits(&mut loaded.model), &expected);
    let scale = expected
        .abs()
        .unwrap()
        .max(None)
        .unwrap()
        .item_exact::<f32>();
    eprintln!("q8_0 max |logit difference| {d} (largest logit {scale})");
    // Random tiny weights are harsher than trained ones; the real model is checked in
    // tests/it/export.rs.
    assert!(d < 0.05 * scale, "{d} vs {scale}");
}

#[test]
fn llama3_rope_scaling_and_unfused_adapters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = Tokenizer::from_gguf(&toy("smollm")).unwrap();
    let out = tmp.path().join("x.gguf");
    let mut model = tiny_random(14, 262, 1, false).unwrap();
    model.config.rope_freqs = Some(vec![1.0; 8]);
    let err = write_model(&model, &tok, None, &info(), FileType::F16, &out).unwrap_err();
    assert!(err.to_string().contains("rope_freqs"), "{err}");
    let mut model = tiny_random(14, 262, 1, false).unwrap();
    let spec = crate::train::lora::AdapterSpec {
        rank: 2,
        scale: 1.0,
        dropout: 0.0,
        num_layers: None,
        targets: vec!["v_proj".into()],
        dora: false,
    };
    crate::train::lora::attach(&mut model, &spec, 0).unwrap();
    let err = write_model(&model, &tok, None, &info(), FileType::F16, &out).unwrap_err();
    assert!(err.to_string().contains("unfused adapter"), "{err}");
    assert!(!out.exists(), "nothing is written on failure");
}

#[test]
fn lora_file_has_adapter_metadata_and_f16_fallback_for_rank_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny_random(15, 262, 2, false).unwrap();
    let spec = crate::train::lora::AdapterSpec {
        rank: 8,
        scale: 2.0,
        dropout: 0.0,
        num_layers: Some(1),
        targets: vec!["q_proj".into(), "v_proj".into()],
        dora: false,
    };
    crate::train::lora::attach(&mut model, &spec, 0).unwrap();
    let out = tmp.path().join("lora.gguf");
    let summary = write_lora(&model, "tiny-lora", FileType::Q8_0, &out).unwrap();
    assert_eq!(summary.kind, "adapter");
    assert_eq!(summary.tensors, 4);
    // lora_a rows are 64 wide (whole blocks); lora_b rows are rank 8 wide: F16.
    assert_eq!(summary.tensor_types["q8_0"], 2);
    assert_eq!(summary.f16_fallbacks.len(), 2);
    let gguf = mlx_rs::io::GgufFile::load(&out).unwrap();
    assert_eq!(
        gguf.get_metadata_string("general.type").unwrap().as_deref(),
        Some("adapter")
    );
    let alpha = gguf
        .get_metadata_array("adapter.lora.alpha")
        .unwrap()
        .unwrap();
    assert_eq!(alpha.as_slice::<f32>(), [16.0]);
    let arrays = gguf.arrays().unwrap();
    assert_eq!(arrays["blk.1.attn_v.weight.lora_b"].shape(), &[32, 8]);
}
