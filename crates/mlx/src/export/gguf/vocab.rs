//! The tokenizer as llama.cpp's `tokenizer.*` metadata, read off the model's
//! `tokenizer.json` (whether it came from a Hugging Face directory or was rebuilt from a
//! GGUF file by [`crate::tokenizer`]).
//!
//! What `convert_hf_to_gguf.py` writes for a byte-level BPE (`_set_vocab_gpt2`,
//! `get_vocab_base`, `gguf.SpecialVocab`), and so what this writes:
//! - `tokenizer.ggml.model = "gpt2"`, and `tokenizer.ggml.pre`, the name llama.cpp picks
//!   its pre-tokenizer regexes by. The converter finds it by hashing the tokenizer's output
//!   on a test text; here the `tokenizer.json` pre-tokenizer is matched against the four
//!   layouts pipe's GGUF loader builds (`smollm`, `llama-bpe`, `qwen2`, `gpt2`), so loading
//!   the export gives back the same tokenizer. Anything else is refused by name.
//! - `tokens` by id, padded to the model's vocabulary size with `[PAD<id>]`;
//!   `token_type` 1 (normal), 3 (control: a special added token), 4 (user-defined: a
//!   non-special added token) or 5 (unused: padding); `merges` as `"a b"` strings.
//! - `bos_token_id`, `eos_token_id` (uint32), `eot_token_id` for a further end-of-turn id
//!   (Llama 3's `<|eot_id|>`), `add_bos_token` (bool) and `tokenizer.chat_template`.

use super::writer::Value;
use crate::chat::ChatTemplate;
use crate::tokenizer::{LLAMA3_SPLIT, QWEN2_SPLIT, Tokenizer};
use serde_json::Value as Json;

/// Why the tokenizer cannot be written as GGUF metadata.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the tokenizer as GGUF metadata: {0}")]
pub struct VocabError(pub String);

/// `tokenizer.*` metadata for `tokenizer`, its tokens padded to `vocab_size`.
pub fn metadata(
    tokenizer: &Tokenizer,
    chat_template: Option<&ChatTemplate>,
    vocab_size: usize,
) -> Result<Vec<(String, Value)>, VocabError> {
    let json = tokenizer.to_json().map_err(|e| VocabError(e.to_string()))?;
    let spec: Json = serde_json::from_str(&json).map_err(|e| VocabError(e.to_string()))?;
    let model = &spec["model"];
    if model["type"] != "BPE" {
        return Err(VocabError(format!(
            "only byte-level BPE tokenizers can be exported, this one is {}",
            model["type"]
        )));
    }
    let pre = pre_name(&spec["pre_tokenizer"])?;
    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, text: &str, ty: i32| -> Result<(), VocabError> {
        let id = usize::try_from(id).map_err(|_| VocabError(format!("token id {id}")))?;
        if id >= vocab_size {
            return Err(VocabError(format!(
                "token `{text}` has id {id}, beyond the model's {vocab_size} embeddings"
            )));
        }
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((text.to_owned(), ty));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        put(id.as_u64().unwrap_or(u64::MAX), text, 1)?;
    }
    for added in spec["added_tokens"].as_array().into_iter().flatten() {
        let ty = if added["special"] == true { 3 } else { 4 };
        let text = added["content"].as_str().unwrap_or_default();
        put(added["id"].as_u64().unwrap_or(u64::MAX), text, ty)?;
    }
    tokens.resize(vocab_size, None);
    let (texts, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), 5)))
        .unzip();
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) if pair.len() == 2 => Ok(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            other => Err(VocabError(format!("unreadable merge {other}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let id_of = |name: Option<&str>| name.and_then(|n| tokenizer.token_to_id(n));
    let bos = id_of(tokenizer.bos_token.as_deref());
    let eos = id_of(tokenizer.eos_token.as_deref()).or(tokenizer.eos_ids.first().copied());
    let eot = tokenizer.eos_ids.iter().copied().find(|&i| Some(i) != eos);
    let add_bos =
        tokenizer.adds_bos() || post_processor_adds(&spec, tokenizer.bos_token.as_deref());
    let key = |k: &str| format!("tokenizer.{k}");
    let mut out = vec![
        (key("ggml.model"), Value::Str("gpt2".into())),
        (key("ggml.pre"), Value::Str(pre.into())),
        (key("ggml.tokens"), Value::StrArray(texts)),
        (key("ggml.token_type"), Value::I32Array(types)),
        (key("ggml.merges"), Value::StrArray(merges)),
    ];
    for (k, id) in [("bos", bos), ("eos", eos), ("eot", eot)] {
        if let Some(id) = id {
            out.push((key(&format!("ggml.{k}_token_id")), Value::U32(id)));
        }
    }
    out.push((key("ggml.add_bos_token"), Value::Bool(add_bos)));
    if let Some(t) = chat_template {
        out.push((key("chat_template"), Value::Str(t.source().to_owned())));
    }
    Ok(out)
}

/// The `tokenizer.ggml.pre` name of a `tokenizer.json` pre-tokenizer.
fn pre_name(pre: &Json) -> Result<&'static str, VocabError> {
    let byte_level = |p: &Json| p["type"] == "ByteLevel";
    let split = |p: &Json, pattern: &str| p["type"] == "Split" && p["pattern"]["Regex"] == pattern;
    if byte_level(pre) && pre["use_regex"] != false {
        return Ok("gpt2");
    }
    let steps: &[Json] = pre["pretokenizers"].as_array().map_or(&[], Vec::as_slice);
    if pre["type"] == "Sequence"
        && let [first, second] = steps
        && byte_level(second)
    {
        if first["type"] == "Digits" && first["individual_digits"] == true {
            return Ok("smollm");
        }
        if split(first, LLAMA3_SPLIT) {
            return Ok("llama-bpe");
        }
        if split(first, QWEN2_SPLIT) {
            return Ok("qwen2");
        }
    }
    Err(VocabError(format!(
        "its pre-tokenizer is none of those pipe can name for llama.cpp (smollm, llama-bpe, qwen2, gpt2): {pre}"
    )))
}

/// Whether `tokenizer.json`'s post-processor puts the bos token first (Llama 3's
/// `TemplateProcessing`), which GGUF says with `add_bos_token`.
fn post_processor_adds(spec: &Json, bos: Option<&str>) -> bool {
    let Some(bos) = bos else {
        return false;
    };
    let single = &spec["post_processor"]["single"];
    single[0]["SpecialToken"]["id"] == bos
        || spec["post_processor"]["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["single"][0]["SpecialToken"]["id"] == bos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::toy;

    fn get<'a>(meta: &'a [(String, Value)], key: &str) -> &'a Value {
        &meta
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key}"))
            .1
    }

    #[test]
    fn toy_vocabulary_round_trips_through_metadata() {
        for pre in ["smollm", "llama-bpe", "qwen2", "gpt2"] {
            let vocab = toy(pre);
            let tok = Tokenizer::from_gguf(&vocab).unwrap();
            let meta = metadata(&tok, None, vocab.tokens.len() + 2).unwrap();
            assert_eq!(get(&meta, "tokenizer.ggml.pre"), &Value::Str(pre.into()));
            let Value::StrArray(tokens) = get(&meta, "tokenizer.ggml.tokens") else {
                panic!()
            };
            assert_eq!(&tokens[..vocab.tokens.len()], &vocab.tokens[..]);
            assert_eq!(
                tokens.last().unwrap(),
                &format!("[PAD{}]", vocab.tokens.len() + 1)
            );
            let Value::I32Array(types) = get(&meta, "tokenizer.ggml.token_type") else {
                panic!()
            };
            assert_eq!(&types[..vocab.tokens.len()], &vocab.token_types[..]);
            assert_eq!(types.last(), Some(&5));
            assert_eq!(
                get(&meta, "tokenizer.ggml.merges"),
                &Value::StrArray(vocab.merges.clone())
            );
            assert_eq!(get(&meta, "tokenizer.ggml.bos_token_id"), &Value::U32(1));
            assert_eq!(get(&meta, "tokenizer.ggml.eos_token_id"), &Value::U32(0));
            assert_eq!(
                get(&meta, "tokenizer.ggml.add_bos_token"),
                &Value::Bool(false)
            );
        }
    }

    #[test]
    fn a_vocabulary_larger_than_the_model_is_refused() {
        let vocab = toy("smollm");
        let tok = Tokenizer::from_gguf(&vocab).unwrap();
        let err = metadata(&tok, None, 10).unwrap_err().to_string();
        assert!(err.contains("beyond the model's 10 embeddings"), "{err}");
    }
}
