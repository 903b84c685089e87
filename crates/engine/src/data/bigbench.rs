//! BIG-bench JSON tasks (`task.json` with an `examples` list of `{input, target}`) read as
//! completions, with the prompt built from a template around each input.

use super::Example;
use std::path::Path;

/// Reads a BIG-bench JSON task. `prompt_template` is a minijinja template that sees
/// `input` (e.g. `What is the past tense of the verb '{{ input }}'? Answer with one word.`).
/// A `target` given as a list uses its first entry. A row's `comment` (BIG-bench's free
/// label, e.g. `regular`/`irregular` in the past-tense task) becomes its category.
pub fn read_bigbench_task(path: &Path, prompt_template: &str) -> anyhow::Result<Vec<Example>> {
    #[derive(serde::Deserialize)]
    struct Task {
        examples: Vec<Row>,
    }
    #[derive(serde::Deserialize)]
    struct Row {
        input: String,
        target: Target,
        #[serde(default)]
        comment: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Target {
        One(String),
        Many(Vec<String>),
    }
    let text = fs_err::read_to_string(path)?;
    let task: Task = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not a BIG-bench JSON task: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("prompt", prompt_template)?;
    let template = env.get_template("prompt")?;
    task.examples
        .into_iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let completion = match row.target {
                Target::One(t) => t,
                Target::Many(ts) => ts.into_iter().next()?,
            };
            let category = row.comment.filter(|c| !c.trim().is_empty());
            Some((i, row.input, completion, category))
        })
        .map(|(i, input, completion, category)| {
            let prompt = template
                .render(minijinja::context! { input => input })
                .map_err(|e| anyhow::anyhow!("{}: example {i}: {e}", path.display()))?;
            Ok(Example::Completion {
                prompt,
                completion,
                category,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inputs_through_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.json");
        std::fs::write(
            &path,
            r#"{"name": "t", "examples": [{"input": "go", "target": "went", "comment": "irregular"}, {"input": "be", "target": ["was", "were"]}]}"#,
        )
        .unwrap();
        let rows = read_bigbench_task(&path, "Past tense of {{ input }}?").unwrap();
        assert_eq!(
            rows,
            vec![
                Example::Completion {
                    prompt: "Past tense of go?".into(),
                    completion: "went".into(),
                    category: Some("irregular".into()),
                },
                Example::Completion {
                    prompt: "Past tense of be?".into(),
                    completion: "was".into(),
                    category: None,
                },
            ]
        );
        let err = read_bigbench_task(&path, "{{ nope }}").unwrap_err();
        assert!(err.to_string().contains("example 0"), "{err:#}");
        std::fs::write(&path, "{\"examples\": [1]}").unwrap();
        let err = read_bigbench_task(&path, "x").unwrap_err();
        assert!(
            err.to_string().contains("not a BIG-bench JSON task"),
            "{err:#}"
        );
    }
}
