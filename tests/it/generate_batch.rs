//! `pipe generate --batch requests.jsonl --out results.jsonl` on the real SmolLM2: OpenAI
//! Batch input and output lines, errors per row, bad input files, and resuming (answered
//! rows are skipped; a half-written last line is cut and redone).

use crate::support::Ws;
use serde_json::Value;

const REQUESTS: &str = r#"{"custom_id": "france", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "base", "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 20}}
{"custom_id": "story", "method": "POST", "url": "/v1/completions", "body": {"model": "base", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 8}}
{"custom_id": "stop", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "base", "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 20, "stop": ["of"]}}
{"custom_id": "missing", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}}
"#;

fn lines(ws: &Ws) -> Vec<Value> {
    ws.read("out/results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn by_id<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter().find(|r| r["custom_id"] == id).unwrap()
}

fn batch(ws: &Ws) -> Value {
    let out = ws
        .pipe()
        .args([
            "generate",
            "--batch",
            "requests.jsonl",
            "--out",
            "out/results.jsonl",
        ])
        .args(["--batch-size", "3", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn generate_batch_answers_a_batch_file_and_resumes() {
    let ws = Ws::new();
    ws.file("requests.jsonl", REQUESTS);
    let summary = batch(&ws);
    assert_eq!(
        (&summary["total"], &summary["succeeded"], &summary["failed"]),
        (&4.into(), &3.into(), &1.into())
    );
    let rows = lines(&ws);
    assert_eq!(rows.len(), 4);
    let france = by_id(&rows, "france");
    assert_eq!(france["response"]["status_code"], 200);
    let body = &france["response"]["body"];
    assert_eq!(body["object"], "chat.completion");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    let stopped = by_id(&rows, "stop")["response"]["body"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        answer.starts_with(&stopped) && !stopped.contains("of") && stopped.len() < answer.len(),
        "{stopped:?} vs {answer:?}"
    );
    let story = &by_id(&rows, "story")["response"]["body"];
    assert_eq!(story["object"], "text_completion");
    assert_eq!(story["usage"]["completion_tokens"], 8);
    let missing = &by_id(&rows, "missing")["response"];
    assert_eq!(missing["status_code"], 404);
    assert_eq!(missing["body"]["error"]["code"], "model_not_found");

    // A rerun answers nothing again.
    let summary = batch(&ws);
    assert_eq!(
        (&summary["skipped"], &summary["succeeded"]),
        (&4.into(), &0.into())
    );
    assert_eq!(lines(&ws).len(), 4);

    // A crash left the last line half-written: it is cut and that row answered again.
    let text = ws.read("out/results.jsonl");
    let mut kept: Vec<&str> = text.lines().collect();
    let last = kept.pop().unwrap();
    let redo: Value = serde_json::from_str(last).unwrap();
    ws.file(
        "out/results.jsonl",
        &format!("{}\n{}", kept.join("\n"), &last[..last.len() / 2]),
    );
    let summary = batch(&ws);
    assert_eq!(
        (&summary["skipped"], &summary["total"]),
        (&3.into(), &4.into())
    );
    let rows = lines(&ws);
    assert_eq!(rows.len(), 4);
    assert_eq!(
        by_id(&rows, redo["custom_id"].as_str().unwrap())["response"]["status_code"],
        redo["response"]["status_code"]
    );
}

#[test]
fn generate_batch_names_the_bad_line_of_an_input_file() {
    let ws = Ws::new();
    ws.file(
        "requests.jsonl",
        "{\"custom_id\": \"a\", \"url\": \"/v1/completions\", \"body\": {}}\n{\"custom_id\": \"a\", \"url\": \"/v1/completions\", \"body\": {}}\n",
    );
    let out = ws
        .pipe()
        .args(["generate", "--batch", "requests.jsonl", "--out", "r.jsonl"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("requests.jsonl:2") && stderr.contains("appears twice"),
        "{stderr}"
    );
}

#[test]
fn predict_stage_answers_a_batch_file_inside_a_pipeline_and_caches() {
    let ws = Ws::new();
    ws.file(
        "requests.jsonl",
        &REQUESTS.lines().take(2).collect::<Vec<_>>().join("\n"),
    );
    ws.pipeline(
        "stages:\n  predict:\n    kind: predict\n    with:\n      model: smollm2-135m-instruct\n      input: requests.jsonl\n      batch_size: 2\n      out: out/predictions.jsonl\n",
    );
    let first = ws.run_ok(&[]);
    assert!(first.ran().contains("predict"), "{:?}", first.events);
    let text = ws.read("out/predictions.jsonl");
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let france = by_id(&rows, "france");
    assert_eq!(france["response"]["status_code"], 200);
    assert!(
        france["response"]["body"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris")
    );
    assert!(!ws.exists("out/predictions.jsonl.partial"));
    let second = ws.run_ok(&[]);
    assert!(second.ran().is_empty(), "{:?}", second.events);
}
