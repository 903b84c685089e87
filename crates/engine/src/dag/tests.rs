//! Unit and property tests of graph construction, ordering and cycle reports.

use super::*;
use crate::spec::{Pipeline, Stage};
use proptest::prelude::*;

fn stage(name: &str, deps: &[&str], outs: &[&str]) -> Stage {
    Stage {
        deps: deps.iter().map(|s| s.to_string()).collect(),
        outs: outs.iter().map(|s| s.to_string()).collect(),
        ..Stage::bare(name)
    }
}

fn pipeline(stages: Vec<Stage>) -> Pipeline {
    Pipeline {
        name: "t".into(),
        file: "t.yaml".into(),
        root: ".".into(),
        params: serde_json::json!({}),
        stages,
        source: String::new(),
        tracking: None,
        notify: None,
        remote: None,
    }
}

#[test]
fn edges_from_paths_and_containment() {
    let p = pipeline(vec![
        stage("eval", &["data/model/w.bin"], &["m.json"]),
        stage("train", &["data/clean"], &["data/model"]),
        stage("prep", &["raw.csv"], &["data/clean/a.csv"]),
    ]);
    let dag = build(&p).unwrap();
    let names: Vec<_> = dag
        .order()
        .iter()
        .map(|&i| p.stages[i].name.as_str())
        .collect();
    assert_eq!(names, ["prep", "train", "eval"]);
}

#[test]
fn cycle_message_lists_the_path() {
    let p = pipeline(vec![
        stage("a", &["c.txt"], &["a.txt"]),
        stage("b", &["a.txt"], &["b.txt"]),
        stage("c", &["b.txt"], &["c.txt"]),
    ]);
    let err = build(&p).unwrap_err().to_string();
    assert!(err.contains("cycle: a -> b -> c -> a"), "{err}");
    assert!(err.contains("`b` reads `a.txt`, which `a` writes"), "{err}");
}

proptest! {
    /// On random acyclic graphs the order respects every edge; closing a loop is reported.
    #[test]
    fn order_respects_edges(n in 2usize..9, edges in proptest::collection::vec((0usize..9, 0usize..9), 0..20)) {
        let edges: Vec<(usize, usize)> = edges.into_iter()
            .map(|(a, b)| (a % n, b % n))
            .filter(|(a, b)| a < b)
            .collect();
        let stages = (0..n).map(|i| {
            let deps: Vec<String> = edges.iter().filter(|e| e.1 == i).map(|e| format!("o{}", e.0)).collect();
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            stage(&format!("s{i}"), &deps, &[&format!("o{i}")])
        }).collect();
        let p = pipeline(stages);
        let dag = build(&p).unwrap();
        let pos: Vec<usize> = (0..n).map(|i| dag.order().iter().position(|&x| x == i).unwrap()).collect();
        for (a, b) in &edges {
            prop_assert!(pos[*a] < pos[*b]);
        }
        if let Some(&(a, b)) = edges.first() {
            let mut p = p;
            p.stages[a].deps.push(format!("o{b}"));
            let err = build(&p).unwrap_err().to_string();
            prop_assert!(err.contains("cycle"), "{}", err);
        }
    }
}
