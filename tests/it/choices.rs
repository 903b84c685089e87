//! Multiple-choice scoring (issue #20, item 5): pipe scores each choice of a row by the
//! summed log-probability of it as the reply; mlx-lm 0.32.2's Python API, with its own chat
//! template rendering, tokenizer and forward pass, computes the same numbers on the same
//! rows from the Hugging Face directory pipe saves; and `pipe run`'s evaluate stage answers
//! such rows with their most likely choice.
//!
//! The rows: BIG-bench's `boolean_expressions` (`bigbench-boolean-expressions`, built to
//! its task.py), read by the ingest kind's BIG-bench reader with BIG-bench's own prompt
//! (`"<expression> is "`), each with its two choices, `True` and `False`.

use crate::mlx_lm_compat::mlx_lm_python;
use crate::python::run;
use crate::support::Ws;
use pipe_engine::data::Example;
use pipe_mlx_core::eval::choices::{most_likely, score_choices};
use pipe_mlx_core::load::{self, LoadOptions};
use serde_json::{Value, json};
use std::process::Command;

const ROWS: usize = 10;

/// Per row, the log-likelihood and reply token count of each choice, from mlx-lm.
const PEER: &str = r#"
import json, sys
import mlx.core as mx
from mlx_lm import load
base, rows_file = sys.argv[1:3]
model, tokenizer = load(base)
out = []
for row in json.load(open(rows_file)):
    user = [{"role": "user", "content": row["prompt"]}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    p = tokenizer.encode(prompt, add_special_tokens=False)
    scores = []
    for choice in row["choices"]:
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": choice}], tokenize=False)
        ids = tokenizer.encode(full, add_special_tokens=False)
        assert ids[:len(p)] == p, (prompt, full)
        logits = model(mx.array([ids[:-1]])).astype(mx.float32)[0]
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        picked = mx.take_along_axis(logp, mx.array(ids[1:])[:, None], axis=-1)[:, 0]
        scores.append([picked[len(p) - 1:].sum().item(), len(ids) - len(p)])
    out.append(scores)
print(json.dumps(out))
"#;

/// Rows spread over the task's lengths, as `pipe run`'s ingest reads them.
fn multiple_choice_rows() -> Vec<Example> {
    let cache = pipe_engine::dirs::user_cache_dir().unwrap();
    let dataset = pipe_engine::fetch::find_dataset("bigbench-boolean-expressions").unwrap();
    let path = pipe_engine::fetch::fetch(&cache, dataset).expect("fetch boolean_expressions");
    let all = pipe_engine::data::read_bigbench_task(path.path(), "{{ input }}").unwrap();
    let rows: Vec<Example> = all
        .iter()
        .step_by(all.len() / ROWS)
        .take(ROWS)
        .cloned()
        .collect();
    assert_eq!(rows.len(), ROWS);
    for row in &rows {
        let mut choices = row.choices().to_vec();
        choices.sort();
        assert_eq!(choices, ["False", "True"], "{row:?}");
    }
    rows
}

#[test]
fn choice_log_likelihoods_match_mlx_lm_and_evaluate_answers_with_the_most_likely() {
    let python = mlx_lm_python();
    let rows = multiple_choice_rows();
    let ws = Ws::new();
    let base_dir = ws.path("base");
    let mut m = load::load(
        &std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into()),
        LoadOptions {
            keep_quantized: false,
            dtype: mlx_rs::Dtype::Float32,
        },
    )
    .expect("load SmolLM2");
    load::hf::save_dir(&m.model, &m.tokenizer, m.chat_template.as_ref(), &base_dir).unwrap();

    let ours: Vec<Vec<_>> = rows
        .iter()
        .enumerate()
        .map(|(i, e)| {
            score_choices(&mut m.model, &m.tokenizer, m.chat_template.as_ref(), e, i).unwrap()
        })
        .collect();

    let rows_json: Vec<Value> = rows
        .iter()
        .map(|e| match e {
            Example::Completion {
                prompt, choices, ..
            } => json!({"prompt": prompt, "choices": choices}),
            _ => unreachable!(),
        })
        .collect();
    let rows_file = ws.path("rows.json");
    std::fs::write(&rows_file, Value::from(rows_json).to_string()).unwrap();
    let script = ws.path("peer.py");
    std::fs::write(&script, PEER).unwrap();
    let out = run(
        Command::new(&python)
            .arg(&script)
            .arg(&base_dir)
            .arg(&rows_file),
        "mlx-lm per-choice log-likelihoods",
    );
    let theirs: Vec<Vec<(f64, usize)>> = serde_json::from_str(out.lines().last().unwrap()).unwrap();

    let mut worst: f64 = 0.0;
    let mut correct = 0;
    for ((row, ours), theirs) in rows.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours.len(), theirs.len());
        for (o, &(ll, tokens)) in ours.iter().zip(theirs) {
            assert_eq!(o.tokens, tokens, "{row:?}: reply tokens of {:?}", o.choice);
            assert!(o.log_likelihood < 0.0, "{o:?}");
            worst = worst.max((o.log_likelihood - ll).abs());
        }
        let peer_pick = theirs
            .iter()
            .enumerate()
            .fold(0, |b, (i, s)| if s.0 > theirs[b].0 { i } else { b });
        let pick = most_likely(ours).unwrap();
        assert_eq!(
            pick.choice,
            row.choices()[peer_pick],
            "{row:?}: {ours:?} vs {theirs:?}"
        );
        correct += usize::from(
            matches!(row, Example::Completion { completion, .. } if *completion == pick.choice),
        );
    }
    eprintln!(
        "{} rows, largest log-likelihood gap pipe vs mlx-lm {worst:.2e} nats; base model picks the right value in {correct}",
        rows.len()
    );
    assert!(
        worst < 1e-2,
        "log-likelihoods differ from mlx-lm's by up to {worst} nats"
    );

    // The evaluate stage answers each row with its most likely choice.
    let lines: Vec<String> = rows
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    ws.file("data/test.jsonl", &(lines.join("\n") + "\n"));
    ws.pipeline(
        r#"
name: choices
stages:
  evaluate:
    kind: evaluate
    with:
      model: smollm2-135m-instruct
      data: data/test.jsonl
      max_examples: 100
      out: eval.json
"#,
    );
    ws.run_ok(&[]);
    let eval: Value = serde_json::from_str(&ws.read("eval.json")).unwrap();
    let results = eval["results"].as_array().unwrap();
    assert_eq!(results.len(), rows.len());
    for ((r, ours), row) in results.iter().zip(&ours).zip(&rows) {
        assert_eq!(
            r["before"],
            most_likely(ours).unwrap().choice.as_str(),
            "{r}"
        );
        assert!(row.choices().iter().any(|c| r["before"] == c.as_str()));
    }
    assert_eq!(eval["base"]["exact_match_ci"]["successes"], correct);
}
