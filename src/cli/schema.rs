//! `pipe schema`: the JSON Schema of pipeline files, generated from the stage kinds'
//! configuration types (see `pipe_engine::spec::schema`).

use super::output::Printer;
use std::path::PathBuf;

/// Arguments of `pipe schema`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pipe schema > pipeline.schema.json\n  pipe schema --out .vscode/pipeline.schema.json\n\nIn VS Code (YAML extension), map it to your pipelines in settings.json:\n  \"yaml.schemas\": {\".vscode/pipeline.schema.json\": \"pipelines/**/*.yaml\"}\nor put `# yaml-language-server: $schema=<path>` on a pipeline's first line."
)]
pub struct Args {
    /// Write the schema to this file (atomically) instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// Prints or writes the schema.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let schema = pipe_engine::spec::schema::pipeline_schema();
    match args.out {
        Some(path) => {
            pipe_engine::atomic_write::write_json(&path, &schema)?;
            printer.status(&format!("wrote {}", path.display()));
            Ok(())
        }
        None => printer.json(&schema),
    }
}
