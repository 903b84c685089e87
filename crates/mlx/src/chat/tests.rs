use super::*;
use pipe_engine::data::Role;

pub(super) const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

pub(super) const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// SmolLM2-Instruct's template as shipped (GGUF metadata): default system prompt,
/// Python-style `loop.first` and string concatenation.
pub(super) const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

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
        let rendered = ChatTemplate::new(&source, "", "").and_then(|t| t.render(&convo(), false));
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
