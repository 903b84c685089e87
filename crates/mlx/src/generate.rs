//! Text generation: prefill the prompt once, then decode one token at a time against a KV
//! cache; greedy, temperature and nucleus (top-p, Holtzman et al. 2019,
//! <https://arxiv.org/abs/1904.09751>) sampling with an explicit seed; stop on an eos id
//! or a stop string; streaming text deltas; batched prompts.
//!
//! Batches are left-padded so that every row's next token sits in the last column, and a
//! key mask hides the padding (see `models::llama` on why positions need no shifting).
//! Streaming holds back text that may still change: an incomplete UTF-8 sequence (the
//! decoder shows it as U+FFFD) or a tail that could be the start of a stop string.
//!
//! Reference: mlx-lm `generate.py` (`generate_step`, `stream_generate`).

use crate::models::llama::{KvCache, Llama};
use crate::tokenizer::{Tokenizer, TokenizerError};
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::{IndexOp, argmax_axis};
use mlx_rs::{Array, random};
use serde::Serialize;
use std::time::Instant;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass; 1 disables top-p.
    pub top_p: f32,
    /// Seed of the sampling key (reproducible runs).
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The most new tokens.
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: Sampling,
    /// Generation stops when the text contains one of these (which is not returned).
    pub stop_strings: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: Sampling::default(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token.
    Eos,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` reached.
    MaxTokens,
}

/// Timing of one generation call.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GenerationStats {
    /// Prompt tokens (per row, summed over the batch).
    pub prompt_tokens: usize,
    /// Tokens generated (summed over the batch).
    pub generated_tokens: usize,
    /// Seconds to process the prompt and produce the first token's logits.
    pub prompt_seconds: f64,
    /// Seconds from then to the last token.
    pub generation_seconds: f64,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Generated tokens per second (after the first).
    pub generation_tps: f64,
}

/// One finished completion.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The text (without eos or stop string).
    pub text: String,
    /// Generated ids (including a final eos, if any).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
}

/// A generation failure.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// MLX failed.
    #[error("generation failed in MLX: {0}")]
    Mlx(#[from] Exception),
    /// Tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Empty prompt.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
}

/// Prompt tokens processed per forward pass during prefill.
const PREFILL_CHUNK: i32 = 512;

/// Picks one token per row from `[B, vocab]` logits.
pub fn sample(logits: &Array, s: &Sampling, key: &Array) -> Result<Array, Exception> {
    if s.temperature <= 0.0 {
        return argmax_axis(logits, -1, None);
    }
    let logits = logits.as_dtype(mlx_rs::Dtype::Float32)?;
    let scaled = logits.multiply(Array::from_f32(1.0 / s.temperature))?;
    if s.top_p >= 1.0 {
        return random::categorical(&scaled, -1, None, key);
    }
    let probs = mlx_rs::ops::softmax_axis(&scaled, -1, None)?;
    let order = mlx_rs::ops::argsort_axis(probs.negative()?, -1)?;
    let sorted = probs.take_along_axis(&order, -1)?;
    let before = sorted.cumsum(-1, None, false)?;
    // Keep the smallest prefix whose mass reaches top_p (the top token always stays).
    let keep = before.lt(Array::from_f32(s.top_p))?;
    let filtered = mlx_rs::ops::select(&keep, sorted.log()?, Array::from_f32(f32::NEG_INFINITY))?;
    let pick = random::categorical(&filtered, -1, None, key)?;
    order
        .take_along_axis(pick.expand_dims(-1)?, -1)?
        .squeeze_axes(&[-1])
}

/// Incremental detokenisation with held-back text; see the module documentation.
pub(crate) struct TextStream {
    pub(crate) ids: Vec<u32>,
    pub(crate) text: String,
    emitted: usize,
}

impl TextStream {
    pub(crate) fn new() -> Self {
        Self {
            ids: Vec::new(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds a token; returns the stop position in the text if a stop string appeared.
    pub(crate) fn push(
        &mut self,
        tok: &Tokenizer,
        id: u32,
        stops: &[String],
    ) -> Result<Option<usize>, TokenizerError> {
        self.ids.push(id);
        self.text = tok.decode(&self.ids, true)?;
        Ok(stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min())
    }

    /// Text safe to show now (or all of it at the end).
    pub(crate) fn delta(&mut self, stops: &[String], done: bool) -> String {
        let mut end = self.text.len();
        if !done {
            if self.text.ends_with('\u{FFFD}') {
                end = self.text.trim_end_matches('\u{FFFD}').len();
            }
            // Hold back a tail that could begin a stop string.
            for s in stops {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && self.text[..end].ends_with(&s[..k]) {
                        end = end.min(self.text[..end].len() - k);
                        break;
                    }
                }
            }
        }
        if end <= self.emitted || !self.text.is_char_boundary(end) {
            return String::new();
        }
        let out = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        out
    }
}

/// Generates from one prompt, calling `on_text` with each new piece of text.
pub fn generate(
    model: &mut Llama,
    tok: &Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<(Generation, GenerationStats), GenerateError> {
    let (mut gens, stats) =
        generate_batch_inner(model, tok, &[prompt.to_vec()], options, Some(on_text))?;
    let g = gens.pop().ok_or(GenerateError::EmptyPrompt)?;
    Ok((g, stats))
}

/// Generates from several prompts at once (left-padded).
pub fn generate_batch(
    model: &mut Llama,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> Result<(Vec<Generation>, GenerationStats), GenerateError> {
    generate_batch_inner(model, tok, prompts, options, None)
}

fn generate_batch_inner(
    model: &mut Llama,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
    mut on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<(Vec<Generation>, GenerationStats), GenerateError> {
    let b = prompts.len();
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if b == 0 || prompts.iter().any(Vec::is_empty) {
        return Err(GenerateError::EmptyPrompt);
    }
    let padded = prompts.iter().any(|p| p.len() != max_len);
    let pad = tok.pad_id();
    let mut ids = Vec::with_capacity(b * max_len);
    let mut mask_cols: Vec<Vec<i32>> = Vec::with_capacity(b);
    for p in prompts {
        let n_pad = max_len - p.len();
        ids.extend(std::iter::repeat_n(pad, n_pad));
        ids.extend(p);
        let mut m = vec![0; n_pad];
        m.resize(max_len, 1);
        mask_cols.push(m);
    }
    let tokens =
        Array::from_slice(&ids, &[b as i32, max_len as i32]).as_dtype(mlx_rs::Dtype::Int32)?;
    let mask_of = |cols: &[Vec<i32>]| -> Array {
        let flat: Vec<i32> = cols.iter().flatten().copied().collect();
        Array::from_slice(&flat, &[b as i32, cols[0].len() as i32])
    };
    let mut cache: KvCache = model.new_cache();
    let mut key = random::key(options.sampling.seed)?;
    let start = Instant::now();
    // The prompt goes through in chunks (as mlx-lm's `prefill_step_size`), so attention
    // scores stay [chunk × context] instead of [prompt × prompt]; each chunk is evaluated
    // before the next is queued, which bounds the memory of a long prompt.
    let mut hidden = None;
    let mut at = 0;
    while at < max_len as i32 {
        let end = (at + PREFILL_CHUNK).min(max_len as i32);
        let chunk = tokens.index((.., at..end));
        let mask = padded.then(|| {
            let cols: Vec<Vec<i32>> = mask_cols
                .iter()
                .map(|m| m[..end as usize].to_vec())
                .collect();
            mask_of(&cols)
        });
        let h = model.hidden_states(&chunk, Some(&mut cache), mask.as_ref())?;
        if end < max_len as i32 {
            h.eval()?;
        }
        hidden = Some(h);
        at = end;
    }
    let hidden = hidden.ok_or(GenerateError::EmptyPrompt)?;
    // Only the last position's logits matter: run the LM head on it alone.
    let mut last = model
        .logits(&hidden.index((.., -1.., ..)))?
        .index((.., -1, ..));
    let (k, rest) = random::split(&key, 2)?;
    key = rest;
    let mut next = sample(&last, &options.sampling, &k)?;
    next.eval()?;
    let prompt_seconds = start.elapsed().as_secs_f64();
    let gen_start = Instant::now();

    let mut streams: Vec<TextStream> = (0..b).map(|_| TextStream::new()).collect();
    let mut done: Vec<Option<StopReason>> = vec![None; b];
    let mut cut: Vec<Option<usize>> = vec![None; b];
    let mut steps = 0usize;
    while steps < options.max_tokens {
        steps += 1;
        // Queue the next forward pass (built lazily on `next`) before reading `next`, so
        // MLX always has work while this thread waits, builds graphs and detokenises; the
        // same pipelining as mlx-lm's `generate_step` with `async_eval`.
        let more = steps < options.max_tokens;
        let pending = if more {
            let step_tokens = next
                .reshape(&[b as i32, 1])?
                .as_dtype(mlx_rs::Dtype::Int32)?;
            if padded {
                for m in &mut mask_cols {
                    m.push(1);
                }
            }
            let mask = padded.then(|| mask_of(&mask_cols));
            let logits = model.forward_tokens(&step_tokens, Some(&mut cache), mask.as_ref())?;
            last = logits.index((.., -1, ..));
            let (k, rest) = random::split(&key, 2)?;
            key = rest;
            let n = sample(&last, &options.sampling, &k)?;
            mlx_rs::transforms::async_eval([&n])?;
            Some(n)
        } else {
            None
        };
        // Sampling yields uint32 ids; reading them adds no op behind the queued step.
        let chosen: Vec<u32> = if next.dtype() == mlx_rs::Dtype::Uint32 {
            next.as_slice::<u32>().to_vec()
        } else {
            next.as_dtype(mlx_rs::Dtype::Uint32)?
                .as_slice::<u32>()
                .to_vec()
        };
        for (row, &id) in chosen.iter().enumerate() {
            if done[row].is_some() {
                continue;
            }
            if tok.eos_ids.contains(&id) {
                streams[row].ids.push(id);
                done[row] = Some(StopReason::Eos);
                continue;
            }
            if let Some(at) = streams[row].push(tok, id, &options.stop_strings)? {
                cut[row] = Some(at);
                done[row] = Some(StopReason::StopString);
            }
        }
        if let Some(cb) = on_text.as_mut() {
            let s = &mut streams[0];
            if let Some(at) = cut[0] {
                s.text.truncate(at);
            }
            let piece = s.delta(&options.stop_strings, done[0].is_some());
            if !piece.is_empty() {
                cb(&piece);
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        match pending {
            Some(n) => next = n,
            None => break,
        }
    }
    let generation_seconds = gen_start.elapsed().as_secs_f64();
    let mut generated = 0;
    let gens = streams
        .into_iter()
        .enumerate()
        .map(|(row, mut s)| {
            if let Some(at) = cut[row] {
                s.text.truncate(at);
            }
            if let Some(cb) = on_text.as_mut().filter(|_| row == 0) {
                let piece = s.delta(&options.stop_strings, true);
                if !piece.is_empty() {
                    cb(&piece);
                }
            }
            generated += s.ids.len();
            Generation {
                text: s.text,
                tokens: s.ids,
                stop_reason: done[row].unwrap_or(StopReason::MaxTokens),
            }
        })
        .collect();
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let decoded = generated.saturating_sub(b);
    Ok((
        gens,
        GenerationStats {
            prompt_tokens,
            generated_tokens: generated,
            prompt_seconds,
            generation_seconds,
            prompt_tps: prompt_tokens as f64 / prompt_seconds.max(1e-9),
            generation_tps: decoded as f64 / generation_seconds.max(1e-9),
        },
    ))
}

#[cfg(test)]
mod tests;
