//! Datasets built from a package's file rather than shipped as one.
//!
//! The build is a pure function of the (sha256-pinned) package, and its output is pinned
//! too, so a derived dataset is as reproducible as a shipped one.

mod boolean_expressions;
mod python_random;
mod web_of_lies;

pub use boolean_expressions::boolean_expressions;
pub use web_of_lies::web_of_lies;

use super::Pick;
use anyhow::bail;
use serde::Serialize;
use std::collections::BTreeMap;

/// A BIG-bench-style task: what the ingest kind's `task.json` reader takes.
#[derive(Serialize)]
struct Task {
    name: &'static str,
    description: &'static str,
    examples: Vec<Example>,
}

#[derive(Serialize)]
struct Example {
    input: String,
    target: String,
    /// A multiple-choice row's answers with their scores (1 for the right one).
    #[serde(skip_serializing_if = "Option::is_none")]
    target_scores: Option<BTreeMap<&'static str, u8>>,
    /// BIG-bench's free-text category (`regular`, `irregular`), where the task has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

impl Example {
    /// A two-way multiple choice: `choices` is (the answer when `truth`, the other one).
    fn two_way(
        input: String,
        truth: bool,
        choices: (&'static str, &'static str),
        comment: String,
    ) -> Self {
        let (right, wrong) = if truth {
            choices
        } else {
            (choices.1, choices.0)
        };
        Example {
            input,
            target: right.to_owned(),
            target_scores: Some(BTreeMap::from([(right, 1), (wrong, 0)])),
            comment: Some(comment),
        }
    }
}

/// `count` nouns and their plurals from an AGID inflection table, as task.json bytes.
///
/// The table's noun rows read `lemma,N,plural` (alternatives `a/b`). Only plain lowercase
/// words with a single plural that differs from the word are kept, so every example has one
/// right answer. They are picked by the blake3 of the word (spread over the alphabet, the
/// same on every machine) and listed alphabetically.
pub fn noun_plurals(table: &str, pick: Pick) -> anyhow::Result<Vec<u8>> {
    let plain = |w: &str| (3..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase());
    let nouns: Vec<(&str, &str)> = table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let (lemma, tag, plural) = (fields.next()?, fields.next()?, fields.next()?);
            (tag == "N" && fields.next().is_none() && plain(lemma) && plain(plural))
                .then_some((lemma, plural))
        })
        .filter(|(lemma, plural)| lemma != plural)
        .collect();
    let nouns = spread_pick(nouns, pick, "nouns")?;
    let task = Task {
        name: "agid_plural",
        description: "English nouns and their plurals, from the AGID inflection table",
        examples: nouns
            .into_iter()
            .map(|(input, target)| Example {
                input: input.to_owned(),
                target: target.to_owned(),
                target_scores: None,
                comment: None,
            })
            .collect(),
    };
    Ok(serde_json::to_vec_pretty(&task)?)
}

/// `count` verbs and their past tense from an AGID inflection table, as task.json bytes,
/// each with BIG-bench's `regular` / `irregular` comment.
///
/// The table's verb rows read `lemma,V,past,participle,ing,third` (alternatives `a/b`).
/// Kept, as for [`noun_plurals`] (but from two letters: `go`, `be`): plain lowercase words
/// with a single past form, so every
/// example has one right answer (`dream` → `dreamed/dreamt` is left out); picked by the
/// blake3 of the word and listed alphabetically.
pub fn verb_past_tense(table: &str, pick: Pick) -> anyhow::Result<Vec<u8>> {
    let plain = |w: &str| (2..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase());
    let verbs: Vec<(&str, &str)> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let [lemma, "V", past, _, _, _] = fields[..] else {
                return None;
            };
            (plain(lemma) && plain(past)).then_some((lemma, past))
        })
        .collect();
    let verbs = spread_pick(verbs, pick, "verbs")?;
    let task = Task {
        name: "agid_past_tense",
        description: "English verbs and their past tense, from the AGID inflection table",
        examples: verbs
            .into_iter()
            .map(|(input, target)| Example {
                input: input.to_owned(),
                target: target.to_owned(),
                target_scores: None,
                comment: Some(
                    if is_regular_past(input, target) {
                        "regular"
                    } else {
                        "irregular"
                    }
                    .to_owned(),
                ),
            })
            .collect(),
    };
    Ok(serde_json::to_vec_pretty(&task)?)
}

/// The `(word, answer)` pairs that `pick` names, in the blake3 order of the word (spread
/// over the alphabet, the same on every machine), listed alphabetically; `what` names the
/// words in the error when the table has too few.
fn spread_pick<'a>(
    mut pairs: Vec<(&'a str, &'a str)>,
    pick: Pick,
    what: &str,
) -> anyhow::Result<Vec<(&'a str, &'a str)>> {
    let (Pick::First(count) | Pick::AfterFirst(count)) = pick;
    if pairs.len() < count {
        bail!(
            "the inflection table has {} plain {what}, fewer than the {count} asked for",
            pairs.len()
        );
    }
    pairs.sort_by_cached_key(|(word, _)| *blake3::hash(word.as_bytes()).as_bytes());
    let rest = pairs.split_off(count);
    let mut picked = match pick {
        Pick::First(_) => pairs,
        Pick::AfterFirst(_) => rest,
    };
    picked.sort_unstable();
    Ok(picked)
}

/// Whether `past` follows the spelling rules of the regular past: `-ed`, `-d` after `e`,
/// `-ied` for a consonant and `y`, a doubled final consonant (`stop` → `stopped`), or `-ked`
/// after `c` (`panic` → `panicked`).
fn is_regular_past(verb: &str, past: &str) -> bool {
    let Some(stem) = past.strip_suffix("ed") else {
        return false;
    };
    let last = verb.chars().last();
    stem == verb
        || past.strip_suffix('d') == Some(verb) && last == Some('e')
        || verb.strip_suffix('y').is_some_and(|v| {
            stem.strip_suffix('i') == Some(v) && !v.ends_with(['a', 'e', 'o', 'u'])
        })
        || last.is_some_and(|c| stem.strip_prefix(verb) == Some(&c.to_string()))
        || last == Some('c') && stem.strip_prefix(verb) == Some("k")
}

/// Countries and their capitals from one JSON file per country (`(file name, text)`), as
/// task.json bytes.
///
/// Kept: a `name` and a single string `capital`, both plain ASCII (letters, spaces, `.`,
/// `-`, `'`), so each answer is typed one way; a country listed twice keeps its first file
/// (by file name). Listed by country name.
pub fn country_capitals(files: &[(String, String)]) -> anyhow::Result<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Country {
        name: Option<String>,
        capital: Option<serde_json::Value>,
    }
    let plain = |w: &str| {
        !w.trim().is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphabetic() || " .-'".contains(c))
    };
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut pairs = BTreeMap::new();
    for (file, text) in sorted {
        let country: Country = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{file} is not a country file: {e}"))?;
        let (Some(name), Some(serde_json::Value::String(capital))) =
            (country.name, country.capital)
        else {
            continue;
        };
        if plain(&name) && plain(&capital) {
            pairs.entry(name).or_insert(capital);
        }
    }
    if pairs.is_empty() {
        bail!("no country file names a capital in plain letters");
    }
    let task = Task {
        name: "country_capitals",
        description: "Countries and their capitals, from the countryinfo package",
        examples: pairs
            .into_iter()
            .map(|(input, target)| Example {
                input,
                target,
                target_scores: None,
                comment: None,
            })
            .collect(),
    };
    Ok(serde_json::to_vec_pretty(&task)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
aardwolf,N,aardwolves
abacus,N,abacuses/abaci
abandon,V,abandoned,<>,abandoning,abandons
sheep,N,sheep
mouse,N,mice
Paris,N,Parises
child,N,children
walk,N,walks
";

    #[test]
    fn keeps_plain_nouns_with_one_plural_that_differs() {
        let bytes = noun_plurals(TABLE, Pick::First(4)).unwrap();
        let task: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let pairs: Vec<(String, String)> = task["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["input"].to_string(), e["target"].to_string()))
            .collect();
        let inputs: Vec<&str> = pairs.iter().map(|(i, _)| i.trim_matches('"')).collect();
        assert_eq!(inputs, ["aardwolf", "child", "mouse", "walk"]);
    }

    #[test]
    fn capitals_keep_one_plain_answer_per_country() {
        let file =
            |name: &str, body: &str| (format!("countryinfo/data/{name}.json"), body.to_owned());
        let files = [
            file("peru", r#"{"name": "Peru", "capital": "Lima", "area": 1}"#),
            file("brazil", r#"{"name": "Brazil", "capital": "Brasília"}"#),
            file(
                "vatican",
                r#"{"name": "Vatican City", "capital": ["Vatican City"]}"#,
            ),
            file("antarctica", r#"{"name": "Antarctica", "capital": null}"#),
            file(
                "usa",
                r#"{"name": "United States", "capital": "Washington D.C."}"#,
            ),
            file("peru2", r#"{"name": "Peru", "capital": "Cusco"}"#),
        ];
        let task: serde_json::Value =
            serde_json::from_slice(&country_capitals(&files).unwrap()).unwrap();
        assert_eq!(
            task["examples"],
            serde_json::json!([
                {"input": "Peru", "target": "Lima"},
                {"input": "United States", "target": "Washington D.C."},
            ])
        );
        let bad = [file("x", "not json")];
        let err = country_capitals(&bad).unwrap_err().to_string();
        assert!(err.contains("x.json is not a country file"), "{err}");
    }

    #[test]
    fn past_tense_keeps_one_plain_form_and_names_it_regular_or_irregular() {
        let table = "\
walk,V,walked,<>,walking,walks
go,V,went,gone,going,goes
dream,V,dreamed/dreamt,<>,dreaming,dreams
stop,V,stopped,<>,stopping,stops
bake,V,baked,<>,baking,bakes
carry,V,carried,<>,carrying,carries
panic,V,panicked,<>,panicking,panics
Oust,V,ousted,<>,ousting,ousts
cut,V,cut,<>,cutting,cuts
table,N,tables
";
        let task: serde_json::Value =
            serde_json::from_slice(&verb_past_tense(table, Pick::First(7)).unwrap()).unwrap();
        let got: Vec<String> = task["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e["input"], e["target"], e["comment"]).replace('"', ""))
            .collect();
        assert_eq!(
            got,
            [
                "bake baked regular",
                "carry carried regular",
                "cut cut irregular",
                "go went irregular",
                "panic panicked regular",
                "stop stopped regular",
                "walk walked regular",
            ]
        );
        let err = verb_past_tense(table, Pick::First(8)).unwrap_err();
        assert!(
            err.to_string().contains("7 plain verbs, fewer than the 8"),
            "{err}"
        );
    }

    #[test]
    fn the_pick_is_a_fixed_subset_and_too_few_nouns_is_an_error() {
        let three = noun_plurals(TABLE, Pick::First(3)).unwrap();
        assert_eq!(three, noun_plurals(TABLE, Pick::First(3)).unwrap());
        let err = noun_plurals(TABLE, Pick::First(5)).unwrap_err();
        assert!(err.to_string().contains("fewer than the 5"), "{err}");
    }

    #[test]
    fn the_words_after_a_pick_are_the_rest_of_the_table_and_none_of_the_pick() {
        let inputs = |pick| -> Vec<String> {
            let task: serde_json::Value =
                serde_json::from_slice(&noun_plurals(TABLE, pick).unwrap()).unwrap();
            task["examples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["input"].as_str().unwrap().to_owned())
                .collect()
        };
        let all = inputs(Pick::First(4));
        for n in 0..=4 {
            let (first, rest) = (inputs(Pick::First(n)), inputs(Pick::AfterFirst(n)));
            assert_eq!(first.len() + rest.len(), 4, "n = {n}");
            assert!(first.iter().all(|w| !rest.contains(w)), "n = {n}");
            let mut both = [first, rest].concat();
            both.sort();
            assert_eq!(both, all, "n = {n}");
        }
        let err = noun_plurals(TABLE, Pick::AfterFirst(5)).unwrap_err();
        assert!(err.to_string().contains("fewer than the 5"), "{err}");
    }
}
