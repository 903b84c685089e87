//! `pipe serve`: load the base model, then hand it to the server
//! (`pipe_mlx_core::serve`), which runs until Ctrl-C or SIGTERM.

use crate::generate::load_model;
use pipe::cli::UsageError;
use pipe::cli::generate::DEFAULT_MODEL;
use pipe::cli::output::Printer;
use pipe::cli::serve::{Args, read_serving_file};
use pipe_mlx_core::serve::{ServeOptions, serve};

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let api_key = args.api_key.filter(|k| !k.is_empty());
    if !args.host.is_loopback() && api_key.is_none() {
        return Err(UsageError(format!(
            "--host {} exposes the server beyond this machine: set an API key with --api-key \
             or PIPE_API_KEY (or bind 127.0.0.1)",
            args.host
        ))
        .into());
    }
    let mut model = args.model;
    let mut adapters = Vec::new();
    let mut routes = Vec::new();
    if let Some(path) = &args.config {
        let file = read_serving_file(path)?;
        // The file's base, unless --model names one (clap fills in its default otherwise).
        if let Some(base) = file.model
            && model.model == DEFAULT_MODEL
        {
            model.model = base;
        }
        adapters.extend(file.adapters);
        routes.extend(file.routes);
    }
    adapters.extend(args.adapter);
    let loaded = load_model(printer, &model)?;
    let options = ServeOptions {
        host: args.host,
        port: args.port,
        api_key,
        adapters,
        routes,
        base_aliases: vec![model.model.clone()],
        max_batch: args.max_batch as usize,
        max_queue: args.max_queue as usize,
        max_context: args.max_context as usize,
        default_max_tokens: args.default_max_tokens as usize,
        max_request_bytes: args.max_request_bytes as usize,
    };
    serve(loaded, options, |addr, models| {
        printer.status(&format!(
            "serving {} on http://{addr} (Ctrl-C to stop)",
            models.join(", ")
        ));
    })
}
