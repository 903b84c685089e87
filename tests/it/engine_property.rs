//! Property test: on random DAGs with random edits, the stages pipe reruns (runs or
//! restores) are exactly the ones a naive reference model predicts, and it runs exactly
//! those whose inputs were never seen before (the others come from the run cache).

use crate::support::Ws;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};

const SOURCES: usize = 3;
const CONTENTS: [&str; 4] = ["a\n", "b\n", "ab\n", "ba\n"];

#[derive(Debug, Clone)]
struct StageDef {
    sources: Vec<usize>,
    uppers: Vec<usize>,
    /// true: out = byte count of the deps (lossy: enables early cutoff); false: cat.
    len: bool,
}

fn stages_strategy() -> impl Strategy<Value = Vec<StageDef>> {
    (2usize..6).prop_flat_map(|n| {
        proptest::collection::vec((1u8..8, any::<u8>(), any::<bool>()), n).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (smask, umask, len))| StageDef {
                    sources: (0..SOURCES).filter(|b| smask & (1 << b) != 0).collect(),
                    uppers: (0..i).filter(|b| umask & (1 << b) != 0).collect(),
                    len,
                })
                .collect()
        })
    })
}

fn deps(s: &StageDef) -> Vec<String> {
    s.sources
        .iter()
        .map(|i| format!("src{i}.txt"))
        .chain(s.uppers.iter().map(|j| format!("o{j}.txt")))
        .collect()
}

fn yaml(stages: &[StageDef]) -> String {
    let mut y = String::from("stages:\n");
    for (i, s) in stages.iter().enumerate() {
        let d = deps(s).join(" ");
        let cmd = if s.len {
            format!("cat {d} | wc -c | tr -d ' ' > o{i}.txt")
        } else {
            format!("cat {d} > o{i}.txt")
        };
        y.push_str(&format!(
            "  s{i}:\n    cmd: \"{cmd}\"\n    deps: [{}]\n    outs: [o{i}.txt]\n",
            deps(s).join(", ")
        ));
    }
    y
}

/// The reference model: a stage is stale iff the tuple of its deps' contents differs
/// from its last run; it executes iff that tuple was never run before.
struct Model {
    last: Vec<Option<Vec<String>>>,
    seen: HashSet<(usize, Vec<String>)>,
}

impl Model {
    fn step(
        &mut self,
        stages: &[StageDef],
        src: &[String],
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut outs: Vec<String> = Vec::new();
        let (mut stale, mut executed) = (BTreeSet::new(), BTreeSet::new());
        for (i, s) in stages.iter().enumerate() {
            let inputs: Vec<String> = s
                .sources
                .iter()
                .map(|&k| src[k].clone())
                .chain(s.uppers.iter().map(|&j| outs[j].clone()))
                .collect();
            let joined: String = inputs.concat();
            outs.push(if s.len {
                format!("{}\n", joined.len())
            } else {
                joined
            });
            if self.last[i].as_ref() != Some(&inputs) {
                stale.insert(format!("s{i}"));
                if self.seen.insert((i, inputs.clone())) {
                    executed.insert(format!("s{i}"));
                }
                self.last[i] = Some(inputs);
            }
        }
        (stale, executed)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn reruns_match_the_reference_model(
        stages in stages_strategy(),
        edits in proptest::collection::vec((0..SOURCES, 0..CONTENTS.len()), 1..4),
    ) {
        let ws = Ws::new();
        let mut src: Vec<String> = (0..SOURCES).map(|_| CONTENTS[0].to_owned()).collect();
        for (i, c) in src.iter().enumerate() {
            ws.file(&format!("src{i}.txt"), c);
        }
        ws.pipeline(&yaml(&stages));
        let mut model = Model { last: vec![None; stages.len()], seen: HashSet::new() };
        let (_, executed) = model.step(&stages, &src);
        let r = ws.run_ok(&[]);
        prop_assert_eq!(r.ran(), executed);
        for (k, c) in edits {
            src[k] = CONTENTS[c].to_owned();
            ws.file(&format!("src{k}.txt"), &src[k]);
            let (stale, executed) = model.step(&stages, &src);
            let r = ws.run_ok(&[]);
            let got: BTreeSet<String> = r.ran().union(&r.restored()).cloned().collect();
            prop_assert_eq!(&got, &stale, "events: {:#?}", r.events);
            prop_assert_eq!(r.ran(), executed);
        }
    }
}
