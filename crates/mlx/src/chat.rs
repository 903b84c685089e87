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
mod tests {
    use super::*;
    use pipe_engine::data::Role;

    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

    /// SmolLM2-Instruct's template as shipped (GGUF metadata): default system prompt,
    /// Python-style `loop.first` and string concatenation.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// docs/security.md: a model's template cannot read files or other templates. It
    /// renders in an environment with no loader, so `include`, `import` and `extends` find
    /// nothing, and no function reads files.
    #[test]
    fn a_template_cannot_reach_files() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "SECRET").unwrap();
        let path = secret.path().display().to_string();
        for source in [
            format!("{{% include '{path}' %}}"),
            format!("{{% import '{path}' as m %}}x"),
            format!("{{% extends '{path}' %}}"),
            format!("{{{{ open('{path}').read() }}}}"),
        ] {
            let rendered =
                ChatTemplate::new(&source, "", "").and_then(|t| t.render(&convo(), false));
            match rendered {
                Ok(text) => assert!(!text.contains("SECRET"), "{source} gave {text}"),
                Err(e) => assert!(!e.to_string().contains("SECRET"), "{e}"),
            }
        }
    }

    /// A model's template that would loop for hours, or print gigabytes, fails with a
    /// message instead, and a real template on a long conversation still renders.
    #[test]
    fn a_runaway_template_is_stopped() {
        let endless =
            "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}";
        let huge = "{% for a in range(100000) %}{{ 'x' * 10000000 }}{% endfor %}";
        for source in [endless, huge] {
            let started = std::time::Instant::now();
            let e = ChatTemplate::new(source, "", "")
                .unwrap()
                .render(&convo(), false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("out of fuel") || e.contains("passed 67108864 bytes"),
                "{source}: {e}"
            );
            eprintln!("{source}: stopped after {:?}: {e}", started.elapsed());
        }
        let long: Vec<Message> = (0..1000)
            .map(|i| Message::new(Role::User, format!("message {i}")))
            .collect();
        let text = ChatTemplate::new(SMOLLM2, "", "")
            .unwrap()
            .render(&long, true)
            .unwrap();
        assert!(text.contains("message 999"));
    }

    fn convo() -> Vec<Message> {
        vec![
            Message::new(Role::User, "Hi!"),
            Message::new(Role::Assistant, "Hello."),
            Message::new(Role::User, "What is 2+2?"),
        ]
    }

    #[test]
    fn chatml() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&convo(), true).unwrap(),
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&[Message::new(Role::User, "Hi")], false).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn llama3() {
        let t = ChatTemplate::new(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        assert_eq!(
            t.render(&convo()[..1], true).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn mistral_and_raise_exception() {
        let t = ChatTemplate::new(MISTRAL, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&convo(), false).unwrap(),
            "<s>[INST] Hi! [/INST]Hello.</s>[INST] What is 2+2? [/INST]"
        );
        let err = t
            .render(&[Message::new(Role::System, "x")], false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation roles must alternate")
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m['content'].strip().upper() }}{% if m['role'].startswith('us') %}!{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::new(Role::User, "  hi ")], false)
                .unwrap(),
            "HI!"
        );
    }
}
