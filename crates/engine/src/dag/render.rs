//! Rendering the stage graph for humans and tools: Graphviz `dot` and Mermaid.
//!
//! Edges carry the path that links two stages (or `needs`), since "why does this run
//! after that" is the question a graph is usually drawn to answer.

use super::{Dag, Edge};
use crate::spec::Pipeline;
use petgraph::visit::EdgeRef;
use std::fmt::Write;

/// The graph in Graphviz `dot` syntax.
pub fn dot(pipeline: &Pipeline, dag: &Dag) -> String {
    let mut s = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(&pipeline.name)
    );
    for &i in dag.order() {
        let _ = writeln!(s, "  {};", quote(&pipeline.stages[i].name));
    }
    for e in dag.graph.edge_references() {
        let (a, b) = (
            &pipeline.stages[e.source().index()].name,
            &pipeline.stages[e.target().index()].name,
        );
        let label = match e.weight() {
            Edge::Data { path } => path.clone(),
            Edge::Needs => "needs".into(),
        };
        let _ = writeln!(
            s,
            "  {} -> {} [label={}];",
            quote(a),
            quote(b),
            quote(&label)
        );
    }
    s.push_str("}\n");
    s
}

/// The graph as a Mermaid flowchart.
pub fn mermaid(pipeline: &Pipeline, dag: &Dag) -> String {
    let mut s = String::from("flowchart LR\n");
    for &i in dag.order() {
        let _ = writeln!(
            s,
            "  s{i}[\"{}\"]",
            pipeline.stages[i].name.replace('"', "#quot;")
        );
    }
    for e in dag.graph.edge_references() {
        let label = match e.weight() {
            Edge::Data { path } => path.replace('"', "#quot;").replace('|', "#124;"),
            Edge::Needs => "needs".into(),
        };
        let _ = writeln!(
            s,
            "  s{} -->|{}| s{}",
            e.source().index(),
            label,
            e.target().index()
        );
    }
    s
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
