//! Chat templates: the Jinja templates Hugging Face tokenizers ship
//! (`tokenizer_config.json` `chat_template`, GGUF `tokenizer.chat_template`), rendered
//! with minijinja the way `transformers`' `apply_chat_template` does.
//!
//! Conventions followed (transformers `utils/chat_template_utils.py`): variables
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`; a `raise_exception(msg)`
//! function; `trim_blocks` and `lstrip_blocks` on; `tools` left undefined. Templates call
//! Python string methods (`.strip()`, `.startswith()`), which minijinja-contrib's `pycompat`
//! supplies.
//!
//! Messages are the datasets' own [`Message`]s: a template sees each as
//! `{"role": ..., "content": ...}`, so training, evaluation and generation render the
//! rows the engine reads with no conversion.

use minijinja::{Environment, Error, ErrorKind, context};
use pipe_engine::data::Message;

/// A compiled chat template with the special tokens it refers to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    source: String,
}

/// ChatML, the template of SmolLM2 and Qwen2 (used in tests and as a reference).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The most template instructions one render may run. A model's template is untrusted
/// input: without a bound, `{% for a in range(100000) %}{% for b in range(100000) %}`
/// hangs the stage that renders it. Real templates on a thousand-message conversation
/// run well under a million; a render of this many takes a few seconds here.
pub const RENDER_FUEL: u64 = 50_000_000;

/// The most bytes one render may write, for the same reason: a loop that prints a
/// 100 MB string (minijinja's own cap on one string) would otherwise fill memory.
pub const RENDER_MAX_BYTES: usize = 64 << 20;

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0:#}")]
pub struct ChatError(#[from] Error);

impl ChatTemplate {
    /// Compiles a template.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_owned())?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            source: source.to_owned(),
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self.env.get_template("chat")?;
        let mut out = CappedOutput(Vec::new());
        template
            .render_captured_to(
                context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                },
                &mut out,
            )
            .map_err(|e| match e.kind() {
                ErrorKind::WriteFailure => Error::new(
                    ErrorKind::InvalidOperation,
                    format!("the rendered text passed {RENDER_MAX_BYTES} bytes"),
                ),
                _ => e,
            })?;
        String::from_utf8(out.0).map_err(|_| {
            ChatError(Error::new(
                ErrorKind::InvalidOperation,
                "the rendered text is not UTF-8",
            ))
        })
    }
}

/// A render target that refuses to grow past [`RENDER_MAX_BYTES`].
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > RENDER_MAX_BYTES {
            return Err(std::io::Error::other("render output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
