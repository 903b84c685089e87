//! The MLX model core on the real SmolLM2-135M-Instruct (Q4_1 GGUF): quality, not shapes.
//! The model is fetched through `pipe::fetch` (cached), or taken from `PIPE_SMOLLM2_GGUF`.
//! Reference figures (`/work/shared/notes/models-and-data.md`): perplexity 11.09 on the
//! passage below from an independent numpy forward pass; the greedy answer to the France
//! question is "The capital of France is Paris."

use pipe::mlx::chat::Message;
use pipe::mlx::eval;
use pipe::mlx::generate::{self, GenerateOptions};
use pipe::mlx::load::{self, LoadOptions, LoadedModel};
use std::path::PathBuf;

const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of Germany. Water boils at 100 degrees Celsius at sea level.";

fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PIPE_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let cache = pipe::dirs::user_cache_dir().expect("user cache dir");
    let known = pipe::fetch::find("smollm2").expect("smollm2 is a known model");
    pipe::fetch::fetch(&cache, known)
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
            &[Message::new("user", "What is the capital of France?")],
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
