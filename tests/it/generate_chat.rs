//! `pipe generate` as a new user runs it (issue #15): the prompt goes through the model's
//! chat template by default, `--raw` sends it bare, and a generation with no text says so
//! on stderr and exits 1 instead of printing nothing with exit 0.

const QUESTION: &str = "What is the capital of France?";

fn smollm2_spec() -> String {
    std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into())
}

fn generate(args: &[&str]) -> assert_cmd::assert::Assert {
    assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .args([
            "generate",
            "--max-tokens",
            "16",
            "-m",
            &smollm2_spec(),
            "-p",
            QUESTION,
        ])
        .args(args)
        .assert()
}

#[test]
fn the_chat_template_is_applied_by_default() {
    let out = generate(&[]).success().get_output().clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Paris"), "{text}");
}

#[test]
fn raw_prompt_that_gets_no_text_is_an_error_with_a_hint() {
    // SmolLM2-Instruct given the bare question ends at once (greedy, so every time).
    let out = generate(&["--raw"]).code(1).get_output().clone();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the model generated no text (it ended with its end-of-sequence token)")
            && err.contains("drop --raw"),
        "{err}"
    );
    // With --json the record still comes out on stdout, for scripts, and the exit code says
    // that the text is empty.
    let out = generate(&["--raw", "--json"]).code(1).get_output().clone();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["text"], "");
    assert_eq!(report["stop_reason"], "eos");
    // --raw and --chat contradict each other.
    generate(&["--raw", "--chat"]).code(2);
}
