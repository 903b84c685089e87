//! Turning dataset examples into token ids with a loss mask, through the model's chat
//! template when it has one (so fine-tuning sees exactly what inference will render).
//!
//! Only what the model should learn carries loss: completions and assistant turns, never
//! prompts, system text or template scaffolding. Each rendered piece is tokenized on its
//! own and the pieces concatenated, so a mask boundary can never fall inside a token.

use crate::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::train::batch::TokenizedExample;
use pipe_engine::data::{Example, Message, Role};

/// Why an example could not be tokenized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] crate::chat::ChatError),
    /// Rendering a conversation one turn longer changed the text before it, so the turns
    /// cannot be masked separately.
    #[error(
        "the chat template does not render conversations incrementally (turn {turn} rewrote earlier text); use completions or text data with this model"
    )]
    NotIncremental {
        /// The turn index.
        turn: usize,
    },
}

/// Tokenizes `example`; `template` is the model's chat template, if any.
pub fn tokenize_example(
    example: &Example,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<TokenizedExample, TokenizeError> {
    let mut out = Pieces::default();
    match (example, template) {
        (Example::Text { text }, _) => {
            out.push(tokenizer, text, true, true)?;
            out.push_eos(tokenizer);
        }
        (
            Example::Completion {
                prompt, completion, ..
            },
            Some(t),
        ) => {
            let messages = vec![
                Message::new(Role::User, prompt),
                Message::new(Role::Assistant, completion),
            ];
            chat(&mut out, &messages, tokenizer, t)?;
        }
        (
            Example::Completion {
                prompt, completion, ..
            },
            None,
        ) => {
            out.push(tokenizer, prompt, false, true)?;
            out.push(tokenizer, completion, true, false)?;
            out.push_eos(tokenizer);
        }
        (Example::Chat { messages, .. }, Some(t)) => chat(&mut out, messages, tokenizer, t)?,
        (Example::Chat { messages, .. }, None) => {
            // No template: plain "role: content" lines, learning the assistant's lines.
            for (i, m) in messages.iter().enumerate() {
                let line = format!("{}: {}\n", m.role, m.content);
                out.push(tokenizer, &line, m.role == Role::Assistant, i == 0)?;
            }
            out.push_eos(tokenizer);
        }
    }
    Ok(TokenizedExample {
        ids: out.ids,
        loss_mask: out.mask,
    })
}

/// Renders the conversation turn by turn: the text each assistant turn adds is learned,
/// everything else (prompts, headers, the generation prompt) is not.
fn chat(
    out: &mut Pieces,
    messages: &[Message],
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
) -> Result<(), TokenizeError> {
    let mut done = String::new();
    for (i, message) in messages.iter().enumerate() {
        let learn = message.role == Role::Assistant;
        if learn {
            let prompt = template.render(&messages[..i], true)?;
            let header = prompt
                .strip_prefix(done.as_str())
                .ok_or(TokenizeError::NotIncremental { turn: i })?;
            out.push(tokenizer, header, false, false)?;
            done = prompt;
        }
        let upto = template.render(&messages[..=i], false)?;
        let added = upto
            .strip_prefix(done.as_str())
            .ok_or(TokenizeError::NotIncremental { turn: i })?;
        out.push(tokenizer, added, learn, false)?;
        done = upto;
    }
    Ok(())
}

#[derive(Default)]
struct Pieces {
    ids: Vec<u32>,
    mask: Vec<bool>,
}

impl Pieces {
    fn push(
        &mut self,
        tokenizer: &Tokenizer,
        text: &str,
        learn: bool,
        add_special: bool,
    ) -> Result<(), TokenizeError> {
        if text.is_empty() {
            return Ok(());
        }
        let ids = tokenizer.encode(text, add_special)?;
        self.mask.extend(std::iter::repeat_n(learn, ids.len()));
        self.ids.extend(ids);
        Ok(())
    }

    fn push_eos(&mut self, tokenizer: &Tokenizer) {
        if let Some(&eos) = tokenizer.eos_ids.first() {
            self.ids.push(eos);
            self.mask.push(true);
        }
    }
}
