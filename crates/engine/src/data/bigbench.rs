//! BIG-bench JSON tasks (`task.json` with an `examples` list of `{input, target}`, or
//! `{input, target_scores}` for multiple choice) read as completions, with the prompt built
//! from a template around each input.

use super::Example;
use std::path::Path;

/// Reads a BIG-bench JSON task. `prompt_template` is a minijinja template that sees
/// `input` (e.g. `What is the past tense of the verb '{{ input }}'? Answer with one word.`).
/// A `target` given as a list uses its first entry. A multiple-choice row's
/// `target_scores` (each answer with its score) become its `choices`, and the best-scored
/// answer its completion. A row's `comment` (BIG-bench's free label, e.g.
/// `regular`/`irregular` in the past-tense task) becomes its category.
pub fn read_bigbench_task(path: &Path, prompt_template: &str) -> anyhow::Result<Vec<Example>> {
    #[derive(serde::Deserialize)]
    struct Task {
        examples: Vec<Row>,
    }
    #[derive(serde::Deserialize)]
    struct Row {
        input: String,
        #[serde(default)]
        target: Option<Target>,
        #[serde(default)]
        target_scores: Option<serde_json::Map<String, serde_json::Value>>,
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
            let answer = match (row.target, row.target_scores) {
                (_, Some(scores)) => multiple_choice(scores)
                    .map_err(|e| anyhow::anyhow!("{}: example {i}: {e}", path.display())),
                (Some(Target::One(t)), None) => Ok((t, Vec::new())),
                (Some(Target::Many(ts)), None) => Ok((ts.into_iter().next()?, Vec::new())),
                (None, None) => Err(anyhow::anyhow!(
                    "{}: example {i}: neither `target` nor `target_scores`",
                    path.display()
                )),
            };
            let category = row.comment.filter(|c| !c.trim().is_empty());
            Some(answer.map(|answer| (i, row.input, answer, category)))
        })
        .map(|row| {
            let (i, input, (completion, choices), category) = row?;
            let prompt = template
                .render(minijinja::context! { input => input })
                .map_err(|e| anyhow::anyhow!("{}: example {i}: {e}", path.display()))?;
            Ok(Example::Completion {
                prompt,
                completion,
                category,
                choices,
            })
        })
        .collect()
}

/// A multiple-choice row's answer (the first best-scored choice) and its choices.
fn multiple_choice(
    scores: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut best: Option<(f64, &str)> = None;
    for (choice, score) in &scores {
        let score = score
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("`target_scores` for {choice:?} is not a number"))?;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, choice));
        }
    }
    match best {
        Some((_, answer)) if scores.len() >= 2 => {
            Ok((answer.to_owned(), scores.keys().cloned().collect()))
        }
        _ => anyhow::bail!("`target_scores` needs at least two choices"),
    }
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
                    choices: Vec::new(),
                },
                Example::Completion {
                    prompt: "Past tense of be?".into(),
                    completion: "was".into(),
                    category: None,
                    choices: Vec::new(),
                },
            ]
        );
        let err = read_bigbench_task(&path, "{{ nope }}").unwrap_err();
        assert!(err.to_string().contains("example 0"), "{err:#}");
        std::fs::write(
            &path,
            r#"{"examples": [{"input": "go", "target_scores": {"goed": 0, "went": 1, "gone": 0}}, {"input": "be", "target_scores": {"was": 1}}]}"#,
        )
        .unwrap();
        let err = read_bigbench_task(&path, "Past tense of {{ input }}?").unwrap_err();
        assert!(err.to_string().contains("example 1"), "{err:#}");
        std::fs::write(
            &path,
            r#"{"examples": [{"input": "go", "target_scores": {"goed": 0, "went": 1, "gone": 0}}]}"#,
        )
        .unwrap();
        let rows = read_bigbench_task(&path, "Past tense of {{ input }}?").unwrap();
        let mut choices = rows[0].choices().to_vec();
        choices.sort();
        assert_eq!(choices, ["goed", "gone", "went"]);
        assert!(matches!(&rows[0], Example::Completion { completion, .. } if completion == "went"));
        std::fs::write(&path, "{\"examples\": [1]}").unwrap();
        let err = read_bigbench_task(&path, "x").unwrap_err();
        assert!(
            err.to_string().contains("not a BIG-bench JSON task"),
            "{err:#}"
        );
    }
}
