//! `pipe generate --batch FILE --out FILE`: batch inference over an OpenAI Batch file
//! through the serving engine (`pipe_mlx_core::serve::batch_file`), with a progress bar.

use crate::generate::load_model;
use pipe::cli::UsageError;
use pipe::cli::generate::Args;
use pipe::cli::output::Printer;
use pipe_mlx_core::serve::{self, ServeOptions, batch_file};
use std::path::Path;

pub fn run(printer: &Printer, args: &Args, input: &Path, output: &Path) -> anyhow::Result<()> {
    // Check the whole file before loading the model: a bad line is a usage error.
    let rows = batch_file::read_input(input).map_err(|e| UsageError(e.to_string()))?;
    let loaded = load_model(printer, &args.model)?;
    let options = ServeOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        api_key: None,
        adapters: args.adapter.clone(),
        routes: Vec::new(),
        base_aliases: vec![args.model.model.clone()],
        max_batch: args.batch_size as usize,
        // Requests wait in the driver, not the engine's queue: a row is queued when one ends.
        max_queue: args.batch_size as usize,
        max_context: 8192,
        default_max_tokens: args.max_tokens,
        max_request_bytes: usize::MAX,
    };
    let started = serve::start(loaded, &options)?;
    // A bar on a terminal; elsewhere (logs, CI) a line every tenth of the requests.
    let bar = printer.is_interactive().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} requests  [{elapsed_precise} < {eta}]",
            )
            .expect("valid template"),
        );
        bar
    });
    let summary = batch_file::run(started.state, rows, output, |done, total| match &bar {
        Some(bar) => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        None if done == total || done.is_multiple_of((total / 10).max(1)) => {
            printer.status(&format!("{done}/{total} requests"));
        }
        None => {}
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let _ = started.engine.join();
    if args.json {
        return printer.json(&summary);
    }
    printer.status(&format!(
        "{} requests: {} answered now ({} failed), {} already in {}; {} tokens generated",
        summary.total,
        summary.succeeded + summary.failed,
        summary.failed,
        summary.skipped,
        output.display(),
        summary.completion_tokens
    ));
    Ok(())
}
