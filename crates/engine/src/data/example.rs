//! The example types every format is normalised into.

use serde::{Deserialize, Serialize};

/// The shape of the examples in a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Conversations: a list of role/content messages.
    Chat,
    /// A prompt and the completion the model should learn to produce.
    Completions,
    /// Plain text, all of which is learned.
    Text,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Chat => "chat",
            Format::Completions => "completions",
            Format::Text => "text",
        })
    }
}

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person.
    User,
    /// The model: the tokens a chat fine-tune learns.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// Parses a role name; `None` for anything unknown.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// One training example, in the canonical form written by `ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Example {
    /// A conversation.
    Chat {
        /// The messages in order.
        messages: Vec<Message>,
    },
    /// A prompt/completion pair.
    Completion {
        /// The input.
        prompt: String,
        /// The target output.
        completion: String,
    },
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
}

impl Example {
    /// The format this example belongs to.
    pub fn format(&self) -> Format {
        match self {
            Example::Chat { .. } => Format::Chat,
            Example::Completion { .. } => Format::Completions,
            Example::Text { .. } => Format::Text,
        }
    }

    /// Total characters of content, for length limits and statistics.
    pub fn char_len(&self) -> usize {
        match self {
            Example::Chat { messages } => messages.iter().map(|m| m.content.chars().count()).sum(),
            Example::Completion { prompt, completion } => {
                prompt.chars().count() + completion.chars().count()
            }
            Example::Text { text } => text.chars().count(),
        }
    }

    /// What decides the example's split: its input (the prompt, or every non-assistant
    /// message), not its target. Editing an answer then keeps the example in its split, and
    /// the same question with two answers can never sit in both train and test.
    pub fn split_key(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        match self {
            Example::Chat { messages } => {
                for m in messages.iter().filter(|m| m.role != Role::Assistant) {
                    hasher.update(m.content.as_bytes());
                    hasher.update(&[0]);
                }
            }
            Example::Completion { prompt, .. } => {
                hasher.update(prompt.as_bytes());
            }
            Example::Text { text } => {
                hasher.update(text.as_bytes());
            }
        }
        hasher.finalize()
    }

    /// A content hash used for deduplication: two examples with equal canonical JSON are
    /// duplicates, whatever their source formatting was.
    pub fn content_hash(&self) -> blake3::Hash {
        let json = serde_json::to_vec(self).expect("examples always serialise");
        blake3::hash(&json)
    }
}
