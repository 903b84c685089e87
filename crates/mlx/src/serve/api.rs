//! The OpenAI request bodies `pipe serve` accepts and their checks: the fields of
//! `/v1/chat/completions` and `/v1/completions` it implements, each range-checked with one
//! error naming the field. Fields it does not implement are refused when they would change
//! the answer (`n` > 1, `echo`, nonzero presence/frequency penalties) and ignored when they
//! would not (`user`, `metadata`).
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat/create>.

use super::errors::ApiError;
use super::sampling::SamplingParams;
use serde::Deserialize;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message's `content`: a string or a list of parts (`{"type": "text", "text": ...}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` is the only kind a text model reads.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool` (`developer` reads as `system`).
    pub role: String,
    /// The content (`null` for an assistant turn that only called tools).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// The fields both routes share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    /// `base`, the base model's name, or an adapter name.
    pub model: String,
    /// The most new tokens (`max_completion_tokens` is the chat route's newer name).
    pub max_tokens: Option<u64>,
    /// See [`Common::max_tokens`].
    pub max_completion_tokens: Option<u64>,
    /// 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (an extension, as in vLLM and mlx-lm).
    pub top_k: Option<i64>,
    /// Min-p filter (extension).
    pub min_p: Option<f32>,
    /// Repetition penalty (extension).
    pub repetition_penalty: Option<f32>,
    /// How many recent tokens the penalty considers (extension, default 20).
    pub repetition_context_size: Option<u64>,
    /// Refused unless 0.
    pub presence_penalty: Option<f32>,
    /// Refused unless 0.
    pub frequency_penalty: Option<f32>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is supported.
    pub n: Option<u64>,
    /// Keep generating past end-of-sequence tokens, up to `max_tokens` (an extension, as in
    /// vLLM: load tests need fixed lengths).
    #[serde(default)]
    pub ignore_eos: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Return log probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// How many alternatives per token (0–20, with `logprobs`).
    pub top_logprobs: Option<u64>,
    /// The shared fields.
    #[serde(flatten)]
    pub common: Common,
}

/// `prompt`: one string (a list of one is accepted too).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// A list (only one element is supported).
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt text.
    pub prompt: Prompt,
    /// Log probabilities of this many alternatives per token (0–20).
    pub logprobs: Option<u64>,
    /// Refused when true.
    #[serde(default)]
    pub echo: bool,
    /// The shared fields.
    #[serde(flatten)]
    pub common: Common,
}

/// The checked generation settings of a request.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requested `max_tokens`, if any.
    pub max_tokens: Option<usize>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Sampling (log probabilities filled in by the route).
    pub sampling: SamplingParams,
    /// Stream events.
    pub stream: bool,
    /// Send usage in the last streamed chunk.
    pub include_usage: bool,
    /// Generate past end-of-sequence tokens.
    pub ignore_eos: bool,
}

/// Most stop strings per request (OpenAI allows 4; a few more cost nothing).
const MAX_STOPS: usize = 16;

impl Common {
    /// Checks every shared field; one error names the first bad one.
    pub fn settings(&self) -> Result<Settings, ApiError> {
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be between 0 and 2, not {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], not {top_p}"),
            ));
        }
        let top_k = self.top_k.unwrap_or(0);
        if top_k < 0 {
            return Err(ApiError::invalid("top_k", "top_k must be 0 (off) or more"));
        }
        let min_p = self.min_p.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::invalid("min_p", "min_p must be between 0 and 1"));
        }
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                "repetition_penalty must be a positive number (1 is off)",
            ));
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} is not supported; use repetition_penalty"),
                ));
            }
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("n", "only n = 1 is supported"));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                format!("stop takes up to {MAX_STOPS} non-empty strings"),
            ));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options needs stream: true",
            ));
        }
        Ok(Settings {
            max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            stop,
            sampling: SamplingParams {
                temperature,
                top_p,
                top_k: usize::try_from(top_k).unwrap_or(usize::MAX),
                min_p,
                repetition_penalty,
                repetition_context: self
                    .repetition_context_size
                    .map_or(20, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                // Unseeded sampling draws a fresh seed, as OpenAI's does.
                seed: self.seed.unwrap_or_else(rand::random),
                logprobs: None,
            },
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            ignore_eos: self.ignore_eos,
        })
    }
}

/// Most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: u64 = 20;

impl ChatRequest {
    /// `Some(n)` when log probabilities are asked for.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs, self.top_logprobs) {
            (_, Some(n)) if n > MAX_TOP_LOGPROBS => Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            )),
            (false, Some(_)) => Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            )),
            (true, n) => Ok(Some(n.unwrap_or(0) as usize)),
            (false, None) => Ok(None),
        }
    }
}

impl CompletionRequest {
    /// The single prompt.
    pub fn prompt_text(&self) -> Result<&str, ApiError> {
        match &self.prompt {
            Prompt::One(s) => Ok(s),
            Prompt::Many(v) if v.len() == 1 => Ok(&v[0]),
            Prompt::Many(_) => Err(ApiError::invalid(
                "prompt",
                "send one prompt per request (concurrent requests are batched together)",
            )),
        }
    }

    /// `Some(n)` when log probabilities are asked for.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        if self.echo {
            return Err(ApiError::invalid("echo", "echo is not supported"));
        }
        match self.logprobs {
            Some(n) if n > MAX_TOP_LOGPROBS => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            )),
            n => Ok(n.map(|n| n as usize)),
        }
    }
}

/// A message's text: the string, or its text parts joined.
pub fn message_text(m: &ChatMessage) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            "messages",
                            format!(
                                "content parts of type `{kind}` are not supported by a text model"
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}
