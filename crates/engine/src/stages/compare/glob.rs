//! Compare `glob` variants: matched, when the pipeline loads, against the outs the other
//! stages declare, so a compare stage depends on exactly the stages that wrote them.

use super::{CompareConfig, VariantEntry};
use crate::spec::Stage;

/// Expands the `glob` variants of every compare stage against the outs of the other
/// stages: each match becomes a `{name, train, eval}` entry in the stage's `with` and its
/// paths become deps. Returns, per compare stage with globs, the number of deps added or
/// why the expansion failed.
pub fn expand_globs(stages: &mut [Stage]) -> Vec<(usize, Result<usize, String>)> {
    let outs: Vec<(usize, String, String)> = stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.all_outs().map(move |o| (i, s.name.clone(), o.clone())))
        .collect();
    let mut results = Vec::new();
    for (i, stage) in stages.iter_mut().enumerate() {
        if stage.kind != crate::stages::Kind::COMPARE {
            continue;
        }
        let Ok(config) = serde_json::from_value::<CompareConfig>(stage.config.clone()) else {
            continue; // check_with reported it
        };
        if config.variants.iter().all(|v| v.glob.is_none()) {
            continue;
        }
        let mut entries = Vec::new();
        let mut deps = Vec::new();
        let mut error = None;
        for v in config.variants {
            let Some(glob) = &v.glob else {
                entries.push(v);
                continue;
            };
            let matched: Vec<&(usize, String, String)> = outs
                .iter()
                .filter(|(j, _, out)| *j != i && glob_match(glob, out))
                .collect();
            if matched.is_empty() {
                error = Some(format!(
                    "the glob `{glob}` matches no stage's outs; it must match train out_dirs such as `{}`",
                    outs.first().map_or("runs/lora", |o| o.2.as_str())
                ));
                break;
            }
            for (j, stage, out) in matched {
                let per_stage = outs
                    .iter()
                    .filter(|(k, _, o)| k == j && glob_match(glob, o));
                let dir = out.rsplit('/').next().unwrap_or(out).to_owned();
                let name = if per_stage.count() > 1 {
                    format!("{stage}: {dir}")
                } else {
                    stage.clone()
                };
                let eval = match v.eval.as_ref().map(|e| e.replace("{dir}", &dir)) {
                    Some(e) => match crate::spec::normalize_path(&e) {
                        Ok(p) => Some(p),
                        Err(why) => {
                            error = Some(format!("bad eval path `{e}`: {why}"));
                            break;
                        }
                    },
                    None => None,
                };
                deps.push(out.clone());
                deps.extend(eval.clone());
                entries.push(VariantEntry {
                    name: Some(name),
                    train: Some(out.clone()),
                    glob: None,
                    eval,
                });
            }
        }
        if let Some(e) = error {
            results.push((i, Err(e)));
            continue;
        }
        if let Ok(list) = serde_json::to_value(&entries) {
            stage.config["variants"] = list;
        }
        let before = stage.deps.len();
        for d in deps {
            if !stage.deps.contains(&d) {
                stage.deps.push(d);
            }
        }
        results.push((i, Ok(stage.deps.len() - before)));
    }
    results
}

/// Whether `path` matches `pattern`: the same number of `/`-separated segments, each
/// matching with `*` (any run of characters) and `?` (one character).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn segment(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|k| segment(rest, &s[k..])),
            Some(('?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
        }
    }
    let (p, s): (Vec<&str>, Vec<&str>) = (
        pattern.trim_end_matches('/').split('/').collect(),
        path.trim_end_matches('/').split('/').collect(),
    );
    p.len() == s.len()
        && p.iter().zip(&s).all(|(p, s)| {
            segment(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        })
}
