//! Tokenizers: a Hugging Face `tokenizer.json` as is, or a byte-level BPE rebuilt from GGUF
//! metadata (llama.cpp's `tokenizer.ggml.*` keys), both run by the `tokenizers` crate.
//!
//! From GGUF we write the equivalent `tokenizer.json` and let `tokenizers` parse it: vocab
//! and merges go into a BPE model; control and user-defined tokens become added tokens (so
//! `<|im_start|>` in a prompt is one token); the pre-tokenizer is chosen by
//! `tokenizer.ggml.pre`, mirroring llama.cpp's `llama-vocab.cpp`:
//! - `smollm`: digits split one by one, then the GPT-2 byte-level regex;
//! - `llama-bpe` (Llama 3) and `qwen2`: their split regexes, then byte-level mapping;
//! - `default` / `gpt2`: the GPT-2 byte-level regex.
//!
//! Anything else (including SentencePiece `llama` vocabularies) is rejected by name.

use serde_json::{Value, json};
use std::collections::HashSet;

/// Llama 3's pre-tokenizer split (Hugging Face `tokenizer.json` of Meta-Llama-3).
pub(crate) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: like Llama 3's but one digit at a time.
pub(crate) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special tokens generation and chat templates need.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The beginning-of-sequence token, if any.
    pub bos_token: Option<String>,
    /// The end-of-sequence token, if any.
    pub eos_token: Option<String>,
    /// Every id that ends generation (eos plus e.g. `<|eot_id|>`).
    pub eos_ids: Vec<u32>,
    /// Whether plain-text encoding starts with the bos token (GGUF `add_bos_token`; a
    /// `tokenizer.json` handles this in its own post-processor).
    add_bos: Option<u32>,
}

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model` (must be `gpt2`: byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    /// Tokens by id.
    pub tokens: Vec<String>,
    /// Token types by id (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Vec<i32>,
    /// Merges, `"a b"`.
    pub merges: Vec<String>,
    /// Special ids.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (Llama 3's `<|eot_id|>`), also a stop token.
    pub eot: Option<u32>,
    /// Whether to prepend bos.
    pub add_bos: bool,
}

/// Why a tokenizer could not be built (the loader adds the path).
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The pre-tokenizer name is unknown.
    #[error("unsupported pre-tokenizer `{0}`")]
    UnsupportedPre(String),
    /// The vocabulary type is unknown.
    #[error(
        "unsupported tokenizer model `{0}` (only byte-level BPE, `gpt2`, is supported from GGUF)"
    )]
    UnsupportedModel(String),
    /// The tokenizers crate rejected it.
    #[error("{0}")]
    Build(String),
}

impl Tokenizer {
    /// Builds a byte-level BPE tokenizer from GGUF metadata.
    pub fn from_gguf(v: &GgufVocab) -> Result<Self, TokenizerError> {
        if v.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(v.model.clone()));
        }
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
        let pre = match v.pre.as_str() {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
                split(LLAMA3_SPLIT), byte_level(false)]}),
            "qwen2" => json!({"type": "Sequence", "pretokenizers": [
                split(QWEN2_SPLIT), byte_level(false)]}),
            "default" | "gpt2" | "" => byte_level(true),
            other => return Err(TokenizerError::UnsupportedPre(other.to_owned())),
        };
        let vocab: serde_json::Map<String, Value> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = v
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = v.token_types.get(i).copied().unwrap_or(1);
                (ty == 3 || ty == 4).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": ty == 3})
                })
            })
            .collect();
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": null, "pre_tokenizer": pre,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": v.merges},
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| TokenizerError::Build(format!("{e}")))?;
        let name = |id: Option<u32>| id.and_then(|i| v.tokens.get(i as usize).cloned());
        let eos_ids: Vec<u32> = [v.eos, v.eot].into_iter().flatten().collect();
        Ok(Self {
            inner,
            bos_token: name(v.bos),
            eos_token: name(v.eos),
            eos_ids: dedup(eos_ids),
            add_bos: if v.add_bos { v.bos } else { None },
        })
    }

    /// Wraps a `tokenizer.json` with its special tokens named by `tokenizer_config.json`.
    pub fn from_hf(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        extra_eos_ids: &[u32],
    ) -> Self {
        let mut eos_ids: Vec<u32> = extra_eos_ids.to_vec();
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_ids.push(id);
        }
        Self {
            inner,
            bos_token,
            eos_token,
            eos_ids: dedup(eos_ids),
            add_bos: None,
        }
    }

    /// Encodes text. With `add_special`, plain text gets the model's bos (as the model was
    /// trained); chat-templated text already contains its special tokens, so pass false.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| TokenizerError::Build(format!("encoding failed: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special
            && let Some(bos) = self.add_bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens when asked.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Build(format!("decoding failed: {e}")))
    }

    /// The tokenizer as `tokenizer.json` text (what a Hugging Face directory holds).
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Build(format!("cannot serialise: {e}")))
    }

    /// Whether plain-text encoding prepends bos outside `tokenizer.json` (GGUF
    /// `add_bos_token`), so a saved directory can say so.
    pub fn adds_bos(&self) -> bool {
        self.add_bos.is_some()
    }

    /// Makes plain-text encoding prepend the bos token (when one is known).
    pub fn set_add_bos(&mut self, on: bool) {
        self.add_bos = if on {
            self.bos_token
                .as_deref()
                .and_then(|t| self.inner.token_to_id(t))
        } else {
            None
        };
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// An id to pad batches with (never attended to): eos, else 0.
    pub fn pad_id(&self) -> u32 {
        self.eos_ids.first().copied().unwrap_or(0)
    }
}

fn dedup(ids: Vec<u32>) -> Vec<u32> {
    let mut seen = HashSet::new();
    ids.into_iter().filter(|i| seen.insert(*i)).collect()
}

/// A byte-level toy vocabulary (262 tokens: two control tokens, the 256 byte symbols and
/// four merges of "hello") for tests of code that needs a real tokenizer.
#[cfg(test)]
pub(crate) fn toy(pre: &str) -> GgufVocab {
    let bytes = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
    let mut alphabet: Vec<String> = bytes.into_iter().map(|c| c.to_string()).collect();
    alphabet.sort();
    tokens.extend(alphabet);
    tokens.extend(["he".into(), "ll".into(), "hell".into(), "hello".into()]);
    let mut types = vec![3, 3];
    types.resize(tokens.len(), 1);
    GgufVocab {
        model: "gpt2".into(),
        pre: pre.into(),
        tokens,
        token_types: types,
        merges: vec!["h e".into(), "l l".into(), "he ll".into(), "hell o".into()],
        bos: Some(1),
        eos: Some(0),
        eot: None,
        add_bos: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_bpe_round_trips_and_keeps_special_tokens_whole() {
        let tok = Tokenizer::from_gguf(&toy("smollm")).unwrap();
        let ids = tok.encode("<|im_start|>hello 42", false).unwrap();
        assert_eq!(ids[0], 1, "control token is one id");
        assert_eq!(ids[1], tok.token_to_id("hello").unwrap());
        // smollm splits digits one by one: "Ġ", "4", "2".
        assert_eq!(ids.len(), 5);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hello 42");
        assert_eq!(tok.eos_ids, vec![0]);
        assert_eq!(tok.bos_token.as_deref(), Some("<|im_start|>"));
    }

    #[test]
    fn every_named_pre_tokenizer_builds_and_others_are_rejected() {
        for pre in ["smollm", "llama-bpe", "qwen2", "default", "gpt2"] {
            let tok = Tokenizer::from_gguf(&toy(pre)).unwrap();
            let text = "hello world 2024!\n";
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre}");
        }
        let err = Tokenizer::from_gguf(&toy("deepseek-coder")).unwrap_err();
        assert!(err.to_string().contains("deepseek-coder"));
        let mut spm = toy("default");
        spm.model = "llama".into();
        assert!(
            Tokenizer::from_gguf(&spm)
                .unwrap_err()
                .to_string()
                .contains("`llama`")
        );
    }
}
