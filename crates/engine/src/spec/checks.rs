//! Checks across stages, run after every stage is resolved: duplicate names, `needs`
//! that name no stage, outs written twice or nested in another out, and deps that neither
//! exist nor are produced by any stage.

use super::resolve::{Resolver, Spots};
use super::{Pos, Stage, path_within};
use std::collections::BTreeSet;

impl Resolver<'_> {
    /// Checks across stages: duplicate names, `needs`, overlapping outs, missing deps.
    pub(super) fn cross_checks(&mut self, stages: &mut [Stage], spots: &[Spots]) {
        let mut names = BTreeSet::new();
        for s in stages.iter() {
            if !names.insert(s.name.clone()) {
                self.error(s.pos, format!("two stages are named `{}`", s.name));
            }
        }
        let all: Vec<(String, String)> = stages
            .iter()
            .map(|s| (s.name.clone(), s.base.clone()))
            .collect();
        for (stage, spot) in stages.iter_mut().zip(spots) {
            for (need, pos) in &spot.needs {
                let matched: Vec<String> = all
                    .iter()
                    .filter(|(n, b)| n == need || b == need)
                    .map(|(n, _)| n.clone())
                    .collect();
                if matched.is_empty() {
                    let d = self.error(
                        *pos,
                        format!(
                            "stage `{}` needs `{need}`, which is not a stage",
                            stage.base
                        ),
                    );
                    *d = d.clone().suggest(need, all.iter().map(|(n, _)| n.as_str()));
                } else if matched.contains(&stage.name) {
                    self.error(*pos, format!("stage `{}` needs itself", stage.base));
                } else {
                    stage.needs.extend(matched);
                }
            }
        }
        // Every out, with its owner, sorted so nested paths follow their parent.
        let mut outs: Vec<(&str, usize, Pos)> = Vec::new();
        for (i, (stage, spot)) in stages.iter().zip(spots).enumerate() {
            for (out, pos) in stage.all_outs().zip(&spot.outs) {
                outs.push((out, i, *pos));
            }
        }
        outs.sort();
        for i in 0..outs.len() {
            for j in i + 1..outs.len() {
                let (pa, sa, _) = outs[i];
                let (pb, sb, pos) = outs[j];
                if !path_within(pb, pa) {
                    continue;
                }
                let (na, nb) = (&stages[sa].name, &stages[sb].name);
                let msg = if pa == pb {
                    format!("two stages write `{pa}`: `{na}` and `{nb}`")
                } else {
                    format!("out `{pb}` of stage `{nb}` is inside out `{pa}` of stage `{na}`")
                };
                self.error(pos, msg)
                    .hints
                    .push("each path may be written by one stage only; outs cannot nest".into());
            }
        }
        for (stage, spot) in stages.iter().zip(spots) {
            for (dep, pos) in stage.deps.iter().zip(&spot.deps) {
                let produced = outs
                    .iter()
                    .any(|(o, _, _)| path_within(dep, o) || path_within(o, dep));
                if self.check_deps && !produced && !self.root.join(dep).exists() {
                    let root = self.root.display().to_string();
                    let d = self.error(
                        *pos,
                        format!(
                            "dep `{dep}` of stage `{}` does not exist and no stage produces it",
                            stage.name
                        ),
                    );
                    *d = d.clone().suggest(dep, outs.iter().map(|(o, _, _)| *o));
                    d.hints
                        .push(format!("paths are relative to the workspace root ({root})"));
                }
            }
        }
    }
}
