//! BIG-bench's `web_of_lies` task, drawn as its `task.py` draws it.
//!
//! The task (bigbench 0.0.1 on PyPI) ships no examples: its `task.py` seeds Python's
//! `random` with 42 and, for 1, 2, 4 and 8 sentences, draws 400 chains such as "Fidel lies.
//! Ka says Fidel tells the truth. Does Ka tell the truth?", asking whether `"Question:
//! <chain>\nAnswer: "` continues with `Yes` or `No` (a two-way multiple choice). This module
//! replays that draw with the same generator ([`super::python_random`]), so the examples
//! are the ones BIG-bench evaluates, each once: a repeated chain (there are only 100 of one
//! sentence) is kept at its first draw. [`check_definition`] refuses a `task.py` whose draw
//! differs.

use super::python_random::PythonRandom;
use super::{Example, Task};
use anyhow::{Context, bail};
use std::collections::HashSet;

/// The parts of `task.py` this module reproduces: its defaults, its draw, its prompt and
/// its scoring.
const DEFINITION: [&str; 12] = [
    "seed: int = 42",
    "num_sentences: tuple = (1, 2, 4, 8)",
    "num_trials: int = 400",
    "shuffle_sentences: bool = False",
    "random.shuffle(names)",
    "truth = random.choice((True, False))",
    r#"statement = "tells the truth" if truth else "lies""#,
    r#"question += [f"{subject} {statement}."]"#,
    r#"question += [f"{subject} says {names[i - 1]} {statement}."]"#,
    r#"question += f" Does {names[length - 1]} tell the truth?""#,
    r#"return f"Question: {question}\nAnswer: ""#,
    r#"targets=[["Yes", "No"]]"#,
];

const SEED: u32 = 42;
const SENTENCES: [usize; 4] = [1, 2, 4, 8];
const TRIALS: usize = 400;

/// Refuses a `task.py` that no longer draws the task this module builds, and reads its
/// list of names (the order matters: the draw shuffles it).
fn check_definition(task_py: &str) -> anyhow::Result<Vec<&str>> {
    if let Some(part) = DEFINITION.iter().find(|part| !task_py.contains(*part)) {
        bail!(
            "BIG-bench's web_of_lies/task.py no longer reads `{part}`; the task built from it \
             would not be BIG-bench's"
        );
    }
    let list = task_py
        .split_once("_names = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .context("BIG-bench's web_of_lies/task.py no longer has its `_names = [...]` list")?;
    let names: Vec<&str> = list
        .split(',')
        .map(|n| n.trim().trim_matches('"'))
        .filter(|n| !n.is_empty())
        .collect();
    if names.len() < SENTENCES[SENTENCES.len() - 1] {
        bail!(
            "BIG-bench's web_of_lies/task.py lists {} names; its chains need {}",
            names.len(),
            SENTENCES[SENTENCES.len() - 1]
        );
    }
    Ok(names)
}

/// One draw of `_get_expression(length)`: the chain and whether its last person tells the
/// truth (each liar in the chain flips the answer).
fn draw(random: &mut PythonRandom, names: &[&str], length: usize) -> (String, bool) {
    let mut names = names.to_vec();
    random.shuffle(&mut names);
    let mut answer = true;
    let mut sentences = Vec::with_capacity(length + 1);
    for i in 0..length {
        let truth = random.choice(&[true, false]);
        answer ^= !truth;
        let statement = if truth { "tells the truth" } else { "lies" };
        sentences.push(match i {
            0 => format!("{} {statement}.", names[0]),
            _ => format!("{} says {} {statement}.", names[i], names[i - 1]),
        });
    }
    sentences.push(format!("Does {} tell the truth?", names[length - 1]));
    (sentences.join(" "), answer)
}

/// The task as task.json bytes: BIG-bench's seed-42 draw of 400 chains of each length, each
/// distinct chain once, in the order drawn. Each is a two-way multiple choice
/// (`target_scores`) with BIG-bench's `"Question: …\nAnswer: "` input, and its number of
/// sentences as the category (BIG-bench scores each length as a subtask).
pub fn web_of_lies(task_py: &str) -> anyhow::Result<Vec<u8>> {
    let names = check_definition(task_py)?;
    let mut random = PythonRandom::new(SEED);
    let mut seen = HashSet::new();
    let mut examples = Vec::new();
    for length in SENTENCES {
        for _ in 0..TRIALS {
            let (question, answer) = draw(&mut random, &names, length);
            if !seen.insert(question.clone()) {
                continue;
            }
            examples.push(Example::two_way(
                format!("Question: {question}\nAnswer: "),
                answer,
                ("Yes", "No"),
                format!("{length} sentences"),
            ));
        }
    }
    let task = Task {
        name: "web_of_lies",
        description: "BIG-bench web_of_lies: whether the last person of a chain of truth-tellers \
                      and liars tells the truth",
        examples,
    };
    Ok(serde_json::to_vec_pretty(&task)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &str = r#"_names = [
        "Crista", "Lorine", "Alejandro", "Millie", "Leda", "Amberly", "Audrie", "Andree",
        "Antwan", "Michaela", "Willian", "Delfina", "Maybelle", "Jaymie", "Helene", "Shaunda",
        "Ka", "Bernita", "Conception", "Gwenn", "Alexis", "Christie", "Fidel", "Raymond",
        "Fletcher", "Kandi", "Vina", "Elanor", "Jerry", "Sherrie", "Sima", "Phoebe",
        "Teressa", "Delbert", "Inga", "Shenna", "Sal", "Michael", "Tamika", "Millicent",
        "Vernell", "Kristian", "Jim", "Rashida", "Yoland", "Jamey", "Ryan", "Dallas",
        "Osvaldo", "Shalonda",
    ]"#;

    fn task_py() -> String {
        format!("{NAMES}\n{}", DEFINITION.join("\n"))
    }

    fn examples(task_py: &str) -> Vec<serde_json::Value> {
        let task: serde_json::Value =
            serde_json::from_slice(&web_of_lies(task_py).unwrap()).unwrap();
        task["examples"].as_array().unwrap().clone()
    }

    /// What running bigbench 0.0.1's `WebOfLiesTask()` draw gives under CPython 3.11: the
    /// first chain of each length, and per length the distinct chains and how many of
    /// them are answered `Yes`.
    #[test]
    fn the_draw_is_bigbench_s() {
        let all = examples(&task_py());
        let first = |length: usize| {
            all.iter()
                .find(|e| e["comment"] == format!("{length} sentences"))
                .unwrap()
                .clone()
        };
        assert_eq!(
            first(1)["input"],
            "Question: Kandi tells the truth. Does Kandi tell the truth?\nAnswer: "
        );
        assert_eq!(first(1)["target"], "Yes");
        assert_eq!(
            first(2)["input"],
            "Question: Shalonda lies. Fidel says Shalonda lies. Does Fidel tell the truth?\nAnswer: "
        );
        assert_eq!(first(2)["target"], "Yes");
        assert_eq!(
            first(8)["input"],
            "Question: Shaunda tells the truth. Phoebe says Shaunda lies. Millie says Phoebe \
             lies. Bernita says Millie tells the truth. Yoland says Bernita tells the truth. \
             Dallas says Yoland lies. Vernell says Dallas lies. Crista says Vernell lies. \
             Does Crista tell the truth?\nAnswer: "
        );
        assert_eq!(first(8)["target"], "No");
        for (length, count, yes) in [(1, 99, 50), (2, 392, 190), (4, 400, 193), (8, 400, 187)] {
            let of: Vec<_> = all
                .iter()
                .filter(|e| e["comment"] == format!("{length} sentences"))
                .collect();
            assert_eq!(of.len(), count, "{length} sentences");
            assert_eq!(of.iter().filter(|e| e["target"] == "Yes").count(), yes);
            assert!(
                of.iter()
                    .all(|e| e["target_scores"][e["target"].as_str().unwrap()] == 1)
            );
        }
    }

    #[test]
    fn a_changed_definition_is_refused() {
        let changed = task_py().replace("seed: int = 42", "seed: int = 7");
        let err = web_of_lies(&changed).unwrap_err().to_string();
        assert!(err.contains("seed: int = 42"), "{err}");
        let err = web_of_lies(&DEFINITION.join("\n")).unwrap_err().to_string();
        assert!(err.contains("_names"), "{err}");
    }
}
