//! `pipe dag`: the stage graph as text, Graphviz dot or Mermaid.

use super::output::Printer;
use super::workspace::WorkspaceArgs;
use pipe_engine::dag::Edge;

/// Arguments of `pipe dag`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe dag pipe.yaml\n  pipe dag pipe.yaml --dot | dot -Tsvg > dag.svg\n  pipe dag pipe.yaml --mermaid"
)]
pub struct Args {
    #[command(flatten)]
    ws: WorkspaceArgs,
    /// Print Graphviz dot.
    #[arg(long, conflicts_with = "mermaid")]
    dot: bool,
    /// Print a Mermaid flowchart.
    #[arg(long)]
    mermaid: bool,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let (pipeline, dag) = args.ws.load_with(true)?;
    if args.dot {
        printer.result(pipe_engine::dag::dot(&pipeline, &dag).trim_end());
        return Ok(());
    }
    if args.mermaid {
        printer.result(pipe_engine::dag::mermaid(&pipeline, &dag).trim_end());
        return Ok(());
    }
    for &i in dag.order() {
        let ups: Vec<String> = dag
            .upstream(i)
            .map(|(u, e)| match e {
                Edge::Data { path } => format!("{} ({path})", pipeline.stages[u].name),
                Edge::Needs => format!("{} (needs)", pipeline.stages[u].name),
            })
            .collect();
        let name = &pipeline.stages[i].name;
        if ups.is_empty() {
            printer.result(name);
        } else {
            printer.result(&format!("{name} <- {}", ups.join(", ")));
        }
    }
    Ok(())
}
