//! From an OpenAI request body to a queued [`Job`], and from the engine's events back to
//! the response body: shared by the HTTP routes and by batch inference (`pipe generate
//! --batch`), so a batch file's row gets exactly what the same request over HTTP gets.

use super::api::{ChatRequest, CompletionRequest, Settings, message_text};
use super::engine::{Admission, Command, Event, Finish, Job, TokenLogprob};
use super::errors::ApiError;
use super::routes::failed;
use super::state::AppState;
use pipe_engine::data::{Message, Role};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Which route's response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// A checked, tokenized request.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// The adapter (`None`: the base).
    pub adapter: Option<String>,
    /// Generation settings.
    pub settings: Settings,
    /// The `model` the request named (echoed in the response), or for a route the
    /// adapter it resolved to.
    pub model: String,
    /// The response shape.
    pub kind: Kind,
}

impl AppState {
    /// Checks a chat request and renders its conversation through the chat template.
    pub fn prepare_chat(&self, req: ChatRequest) -> Result<Prepared, ApiError> {
        let mut settings = req.common.settings()?;
        settings.sampling.logprobs = req.logprobs()?;
        let adapter = self.resolve_model(&req.common.model)?;
        let template = self.template.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "messages",
                "this model has no chat template; use /v1/completions",
            )
        })?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            let role = match m.role.as_str() {
                "developer" => Role::System,
                r => Role::parse(r)
                    .ok_or_else(|| ApiError::invalid("messages", format!("unknown role `{r}`")))?,
            };
            messages.push(Message::new(role, message_text(m)?));
        }
        let text = template
            .render(&messages, true)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        // The template writes its own special tokens.
        let prompt = self
            .tokenizer
            .encode(&text, false)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // A route answers with the version it resolved to, as OpenAI's aliases do.
        let model = adapter.clone().unwrap_or(req.common.model);
        Ok(Prepared {
            prompt,
            adapter,
            settings,
            model,
            kind: Kind::Chat,
        })
    }

    /// Checks a completion request and tokenizes its prompt.
    pub fn prepare_completion(&self, req: CompletionRequest) -> Result<Prepared, ApiError> {
        let mut settings = req.common.settings()?;
        settings.sampling.logprobs = req.logprobs()?;
        let adapter = self.resolve_model(&req.common.model)?;
        let text = req.prompt_text()?;
        if text.is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        // Plain text gets the model's bos, as it was trained.
        let prompt = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // A route answers with the version it resolved to, as OpenAI's aliases do.
        let model = adapter.clone().unwrap_or(req.common.model);
        Ok(Prepared {
            prompt,
            adapter,
            settings,
            model,
            kind: Kind::Completion,
        })
    }

    /// Checks the context, takes a server slot (or answers 429) and queues the job.
    pub fn submit(&self, p: &Prepared) -> Result<UnboundedReceiver<Event>, ApiError> {
        let room = self.max_context.saturating_sub(p.prompt.len());
        let max_tokens = match p.settings.max_tokens {
            Some(m) if m > room => {
                return Err(ApiError::context_too_long(
                    p.prompt.len(),
                    m,
                    self.max_context,
                ));
            }
            Some(m) => m,
            None if room == 0 => {
                return Err(ApiError::context_too_long(
                    p.prompt.len(),
                    1,
                    self.max_context,
                ));
            }
            None => self.default_max_tokens.min(room),
        };
        let admission =
            Admission::try_new(&self.load, self.capacity).ok_or(ApiError::busy(self.capacity))?;
        let (tx, rx) = unbounded_channel();
        self.send(Command::Generate(Job {
            prompt: p.prompt.clone(),
            adapter: p.adapter.clone(),
            max_tokens,
            stop: p.settings.stop.clone(),
            sampling: p.settings.sampling.clone(),
            ignore_eos: p.settings.ignore_eos,
            events: tx,
            admission,
        }))?;
        Ok(rx)
    }
}

/// Everything a request produced, gathered for a non-streamed response.
#[derive(Debug, Default)]
pub struct Collected {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<Finish>,
    usage: Option<(usize, usize)>,
    failure: Option<ApiError>,
}

impl Collected {
    /// Adds an event; true when it was the last one.
    pub fn add(&mut self, event: Event) -> bool {
        match event {
            Event::Text { text, logprobs } => {
                self.text.push_str(&text);
                self.logprobs.extend(logprobs);
                false
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                self.finish = Some(finish);
                self.usage = Some((prompt_tokens, completion_tokens));
                true
            }
            Event::Failed { status, message } => {
                self.failure = Some(failed(status, &message));
                true
            }
        }
    }

    /// The response body (`chat.completion` or `text_completion`), or the failure.
    pub fn response(self, p: &Prepared, id: &str, created: u64) -> Result<Value, ApiError> {
        if let Some(e) = self.failure {
            return Err(e);
        }
        let Some((prompt_tokens, completion_tokens)) = self.usage else {
            return Err(ApiError::internal(
                "the engine stopped before the completion ended",
            ));
        };
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens});
        let lp = p
            .settings
            .sampling
            .logprobs
            .map(|_| logprobs_json(p.kind, &self.logprobs, 0));
        let (object, choice) = match p.kind {
            Kind::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": self.text},
                    "logprobs": lp, "finish_reason": self.finish}),
            ),
            Kind::Completion => (
                "text_completion",
                json!({"index": 0, "text": self.text, "logprobs": lp,
                    "finish_reason": self.finish}),
            ),
        };
        Ok(
            json!({"id": id, "object": object, "created": created, "model": p.model,
            "choices": [choice], "usage": usage}),
        )
    }
}

/// Log probabilities in the route's shape: chat's `{"content": [...]}`, or the legacy
/// completions' parallel lists (`text_offset` counts from `text_offset`).
pub fn logprobs_json(kind: Kind, lps: &[TokenLogprob], text_offset: usize) -> Value {
    match kind {
        Kind::Chat => {
            let content: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let top: Vec<Value> = t
                        .top
                        .iter()
                        .map(|(tok, lp)| {
                            json!({"token": tok, "logprob": lp, "bytes": tok.as_bytes()})
                        })
                        .collect();
                    json!({"token": t.token, "logprob": t.logprob, "bytes": t.token.as_bytes(),
                        "top_logprobs": top})
                })
                .collect();
            json!({"content": content})
        }
        Kind::Completion => {
            let mut at = text_offset;
            let mut offsets = Vec::new();
            for t in lps {
                offsets.push(at);
                at += t.token.len();
            }
            let top: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let m: serde_json::Map<String, Value> = t
                        .top
                        .iter()
                        .map(|(tok, lp)| (tok.clone(), json!(lp)))
                        .collect();
                    Value::Object(m)
                })
                .collect();
            json!({"tokens": lps.iter().map(|t| &t.token).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": top, "text_offset": offsets})
        }
    }
}
