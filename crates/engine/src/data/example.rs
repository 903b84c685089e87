//! The example types every format is normalised into.

use serde::{Deserialize, Serialize};

pub use pipe_schema::ingest::Format;

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

    /// The role's name, as datasets and chat templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message. Chat templates render it as `{"role": "user", "content": "..."}`,
/// the shape Hugging Face templates expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// One training example, in the canonical form written by `ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Example {
    /// A conversation.
    Chat {
        /// The messages in order.
        messages: Vec<Message>,
        /// A label that groups examples for per-category scores (`category` in the data;
        /// BIG-bench's `comment`, e.g. `regular` or `irregular` verbs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
    },
    /// A prompt/completion pair.
    Completion {
        /// The input.
        prompt: String,
        /// The target output.
        completion: String,
        /// A label that groups examples for per-category scores (`category` in the data;
        /// BIG-bench's `comment`, e.g. `regular` or `irregular` verbs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        /// For multiple-choice scoring: the answers a model picks among by likelihood
        /// (`completion` is one of them; BIG-bench's `target_scores`). Empty for an
        /// open answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<String>,
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

    /// The example's category, if it has one.
    pub fn category(&self) -> Option<&str> {
        match self {
            Example::Chat { category, .. } | Example::Completion { category, .. } => {
                category.as_deref()
            }
            Example::Text { .. } => None,
        }
    }

    /// The answers a multiple-choice example picks among (empty for an open answer).
    pub fn choices(&self) -> &[String] {
        match self {
            Example::Completion { choices, .. } => choices,
            Example::Chat { .. } | Example::Text { .. } => &[],
        }
    }

    /// Total characters of content, for length limits and statistics.
    pub fn char_len(&self) -> usize {
        match self {
            Example::Chat { messages, .. } => {
                messages.iter().map(|m| m.content.chars().count()).sum()
            }
            Example::Completion {
                prompt, completion, ..
            } => prompt.chars().count() + completion.chars().count(),
            Example::Text { text } => text.chars().count(),
        }
    }

    /// What decides the example's split: its input (the prompt, or every non-assistant
    /// message), not its target. Editing an answer then keeps the example in its split, and
    /// the same question with two answers can never sit in both train and test.
    pub fn split_key(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        match self {
            Example::Chat { messages, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_match_the_serialized_form_and_parse_back() {
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn examples_deserialize_from_mlx_lm_rows_in_all_three_forms() {
        let e: Example = serde_json::from_str(r#"{"prompt":"a","completion":"b"}"#).unwrap();
        assert_eq!(e.format(), Format::Completions);
        let e: Example = serde_json::from_str(r#"{"text":"a"}"#).unwrap();
        assert_eq!(e.format(), Format::Text);
        let e: Example =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(
            e,
            Example::Chat {
                messages: vec![Message::new(Role::User, "x")],
                category: None,
            }
        );
    }
}
