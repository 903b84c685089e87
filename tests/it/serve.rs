//! `pipe serve` with the official `openai` Python client (PyPI) against the real SmolLM2
//! and a past-tense LoRA adapter trained here: chat, completions, streaming, two models
//! answering differently, stop strings, log probabilities, errors, concurrent clients
//! getting the greedy text one client gets alone, disconnects freeing capacity, adapters
//! added and removed under load, and the API key. The checks live in `serve_openai.py`;
//! the client comes from PyPI into a venv in the user cache (see `crate::python`).

use pipe_engine::data::{Example, Split, SplitSpec, assign_split, read_bigbench_task};
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::train::batch::TokenizedExample;
use pipe_mlx_core::train::lora::{LoraConfig, Method};
use pipe_mlx_core::train::tokenize::tokenize_example;
use pipe_mlx_core::train::trainer::{self, TrainConfig, TrainData};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

const OPENAI_VERSION: &str = "3.60.0";

pub(crate) fn openai_python() -> PathBuf {
    crate::python::venv(
        &format!("openai-{OPENAI_VERSION}"),
        &[("openai", OPENAI_VERSION)],
        &[],
    )
}

fn train_rows() -> Vec<Example> {
    let cache = pipe_engine::dirs::user_cache_dir().unwrap();
    let dataset = pipe_engine::fetch::find_dataset("agid-past-tense").unwrap();
    let path = pipe_engine::fetch::fetch(&cache, dataset).expect("fetch the past-tense task");
    let examples = read_bigbench_task(
        path.path(),
        "What is the past tense of the verb '{{ input }}'? Answer with one word.",
    )
    .unwrap();
    let split = SplitSpec::default();
    examples
        .into_iter()
        .filter(|e| assign_split(e, &split) == Split::Train)
        .take(256)
        .collect()
}

/// A past-tense LoRA adapter on SmolLM2, trained once per test run (shared by the tests).
fn adapter() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pipe-serve-adapter-")
            .tempdir()
            .unwrap()
            .keep();
        let mut m = load::load(
            "smollm2-135m-instruct",
            LoadOptions {
                keep_quantized: false,
                dtype: mlx_rs::Dtype::Float32,
            },
        )
        .expect("load SmolLM2");
        let template = m.chat_template.as_ref();
        let train_set: Vec<TokenizedExample> = train_rows()
            .iter()
            .map(|e| tokenize_example(e, &m.tokenizer, template).unwrap())
            .collect();
        let config = TrainConfig {
            method: Method::Lora,
            lora: LoraConfig {
                rank: 8,
                num_layers: Some(16),
                ..LoraConfig::default()
            },
            iters: 30,
            batch_size: 8,
            learning_rate: 1e-3,
            ..TrainConfig::default()
        };
        let spec = trainer::prepare(&mut m.model, &config).unwrap();
        let data = TrainData {
            train: &train_set,
            valid: &[],
            pad_id: m.tokenizer.pad_id(),
        };
        trainer::train(
            &mut m.model,
            spec.as_ref(),
            data,
            &config,
            &dir,
            false,
            &mut |_| {},
        )
        .unwrap();
        dir
    })
}

/// A running `pipe serve`, stopped on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
        command
            .args(["serve", "--port", "0", "--adapter"])
            .arg(format!("past={}", adapter().display()))
            .args(extra);
        Self::spawn(command)
    }

    /// Starts `command` (a `pipe serve` on port 0) and waits until it prints its address.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("pipe serve exited before listening:\n{}", seen.join("\n"));
            };
            if let Some(at) = line.find("http://") {
                break line[at..].split_whitespace().next().unwrap().to_owned();
            }
            seen.push(line);
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    fn check(&self, name: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/serve_openai.py");
        let out = Command::new(openai_python())
            .arg(script)
            .args([&self.url, adapter().to_str().unwrap(), name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "check {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_openai_clients_with_base_and_adapters() {
    let server = Server::start(&[]);
    for check in ["basics", "errors", "concurrency", "hot_swap"] {
        server.check(check);
    }
}

#[test]
fn serve_frees_the_slot_of_a_client_that_disconnects() {
    let server = Server::start(&["--max-batch", "1", "--max-queue", "1"]);
    server.check("disconnect");
}

#[test]
fn serve_requires_an_api_key_when_set_and_off_loopback() {
    let server = Server::start(&["--api-key", "sesame"]);
    server.check("api_key");
    let out = Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("PIPE_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-key"), "{stderr}");
}
