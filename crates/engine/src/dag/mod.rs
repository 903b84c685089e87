//! The stage graph: which stage must run before which, and in what order.
//!
//! An edge `a -> b` exists when `b` reads something `a` writes (a dep equal to an out, a
//! dep inside an out directory, or an out inside a dep directory) or when `b` lists `a` in
//! `needs`. The order is topological with ties broken by file order, so runs and listings
//! are deterministic. A cycle is a validation error that prints the whole cycle path.

mod render;

use crate::spec::{Diagnostic, Pipeline, path_within};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeSet, BinaryHeap};

pub use render::{dot, mermaid};

/// Why one stage comes after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// The downstream stage reads `path`, which the upstream stage writes.
    Data {
        /// The dep of the downstream stage.
        path: String,
    },
    /// The downstream stage lists the upstream one in `needs`.
    Needs,
}

/// The stage graph of a pipeline. Node weights are indices into `Pipeline::stages`.
#[derive(Debug, Clone)]
pub struct Dag {
    /// The graph; node `i` is stage `i`.
    pub graph: DiGraph<usize, Edge>,
    order: Vec<usize>,
}

/// Builds the graph of `pipeline`, or reports the first cycle found.
pub fn build(pipeline: &Pipeline) -> Result<Dag, Box<Diagnostic>> {
    let stages = &pipeline.stages;
    let mut graph = DiGraph::with_capacity(stages.len(), stages.len());
    for i in 0..stages.len() {
        graph.add_node(i);
    }
    for (b, down) in stages.iter().enumerate() {
        for (a, up) in stages.iter().enumerate() {
            let read = down.deps.iter().find(|d| {
                up.all_outs()
                    .any(|o| path_within(d, o) || path_within(o, d))
            });
            if let Some(path) = read {
                graph.add_edge(
                    NodeIndex::new(a),
                    NodeIndex::new(b),
                    Edge::Data { path: path.clone() },
                );
            } else if a != b && down.needs.contains(&up.name) {
                graph.add_edge(NodeIndex::new(a), NodeIndex::new(b), Edge::Needs);
            }
        }
    }
    let order = stable_toposort(&graph);
    if order.len() < stages.len() {
        return Err(Box::new(cycle_error(pipeline, &graph, &order)));
    }
    Ok(Dag { graph, order })
}

/// Kahn's algorithm, always taking the ready stage that comes first in the file.
fn stable_toposort(graph: &DiGraph<usize, Edge>) -> Vec<usize> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| std::cmp::Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for next in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(std::cmp::Reverse(next.index()));
            }
        }
    }
    order
}

/// Finds one cycle among the stages Kahn's algorithm could not order, and describes it.
fn cycle_error(pipeline: &Pipeline, graph: &DiGraph<usize, Edge>, ordered: &[usize]) -> Diagnostic {
    let done: BTreeSet<usize> = ordered.iter().copied().collect();
    let start = (0..graph.node_count())
        .find(|i| !done.contains(i))
        .expect("a stage is left");
    // Every unordered stage has an unordered predecessor: walk backwards until a repeat.
    let mut path = vec![start];
    let cycle = loop {
        let here = *path.last().expect("non-empty");
        let prev = graph
            .neighbors_directed(NodeIndex::new(here), Direction::Incoming)
            .map(|n| n.index())
            .filter(|p| !done.contains(p))
            .min()
            .expect("an unordered stage has an unordered predecessor");
        if let Some(at) = path.iter().position(|&p| p == prev) {
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.reverse();
            // Start at the stage that comes first in the file, for a stable message.
            let first = (0..cycle.len())
                .min_by_key(|&k| cycle[k])
                .expect("non-empty");
            cycle.rotate_left(first);
            break cycle;
        }
        path.push(prev);
    };
    let names: Vec<&str> = cycle
        .iter()
        .map(|&i| pipeline.stages[i].name.as_str())
        .collect();
    let mut text = names.join(" -> ");
    text.push_str(" -> ");
    text.push_str(names[0]);
    let mut diag = pipeline.diag_at_stage(names[0], format!("the pipeline has a cycle: {text}"));
    for (k, &from) in cycle.iter().enumerate() {
        let to = cycle[(k + 1) % cycle.len()];
        let edge = graph
            .find_edge(NodeIndex::new(from), NodeIndex::new(to))
            .map(|e| graph[e].clone());
        let (f, t) = (&pipeline.stages[from].name, &pipeline.stages[to].name);
        diag = diag.hint(match edge {
            Some(Edge::Data { path }) => format!("`{t}` reads `{path}`, which `{f}` writes"),
            _ => format!("`{t}` needs `{f}`"),
        });
    }
    diag
}

impl Dag {
    /// Stage indices in run order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Direct upstream stages of stage `i`, with the edge, in file order.
    pub fn upstream(&self, i: usize) -> impl Iterator<Item = (usize, &Edge)> + '_ {
        let mut ups: Vec<(usize, &Edge)> = self
            .graph
            .edges_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|e| (petgraph::visit::EdgeRef::source(&e).index(), e.weight()))
            .collect();
        ups.sort_by_key(|(u, _)| *u);
        ups.into_iter()
    }

    /// Direct downstream stages of stage `i`.
    pub fn downstream(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// `roots` and everything downstream of them.
    pub fn downstream_closure(&self, roots: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.downstream(i));
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests;
