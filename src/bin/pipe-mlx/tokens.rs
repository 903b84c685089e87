//! `pipe tokens`: a data file through a model's chat template and tokenizer.

use pipe::cli::output::Printer;
use pipe::cli::tokens::Args;
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::stages::tokenize::split_stats;
use pipe_mlx_core::train::batch::TokenizedExample;
use pipe_mlx_core::train::job::tokenize_file;
use pipe_schema::tokenize::SplitStats;
use serde::Serialize;

/// Buckets of the length histogram.
const BUCKETS: usize = 8;

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    model: &'a str,
    chat_template: bool,
    stats: SplitStats,
    /// `[lowest length, examples]`, equal widths from the shortest to the longest.
    histogram: Vec<(usize, usize)>,
    preview: Vec<Preview>,
}

#[derive(Serialize)]
struct Preview {
    /// The example's tokens decoded with special tokens: what the model reads.
    text: String,
    tokens: usize,
    loss_tokens: usize,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    if !args.file.is_file() {
        anyhow::bail!(
            "{} does not exist or is not a file\nhint: pass a JSONL, CSV or TSV data file",
            args.file.display()
        );
    }
    // Only the tokenizer and the template are used; quantized weights load fastest.
    let loaded = load::load(
        &args.model,
        LoadOptions {
            keep_quantized: true,
            ..LoadOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot load the model `{}`: {e}", args.model))?;
    let template = loaded.chat_template.as_ref();
    let examples = tokenize_file(&args.file, &loaded.tokenizer, template)?;
    let preview = examples
        .iter()
        .take(args.preview)
        .map(|e| {
            Ok(Preview {
                text: loaded.tokenizer.decode(&e.ids, false)?,
                tokens: e.len(),
                loss_tokens: e.loss_tokens(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report {
        file: args.file.display().to_string(),
        model: &args.model,
        chat_template: template.is_some(),
        stats: split_stats(&examples, args.max_seq_len),
        histogram: histogram(&examples),
        preview,
    };
    if args.json {
        return printer.json(&report);
    }
    let s = &report.stats;
    printer.result(&format!(
        "{}: {} examples, {} tokens ({} carry loss), with {}'s tokenizer{}",
        report.file,
        s.examples,
        s.tokens,
        s.loss_tokens,
        report.model,
        if report.chat_template {
            " and chat template"
        } else {
            ""
        }
    ));
    printer.result(&format!(
        "lengths: min {}, mean {:.1}, p95 {}, max {}; {} over max_seq_len {}",
        s.min_len, s.mean_len, s.p95_len, s.max_len, s.truncated, s.max_seq_len
    ));
    for (i, p) in report.preview.iter().enumerate() {
        printer.result(&format!(
            "--- example {} ({} tokens, {} carry loss)\n{}",
            i + 1,
            p.tokens,
            p.loss_tokens,
            p.text
        ));
    }
    Ok(())
}

/// Example lengths in [`BUCKETS`] equal-width buckets, `[lowest length, count]`.
fn histogram(examples: &[TokenizedExample]) -> Vec<(usize, usize)> {
    let (Some(min), Some(max)) = (
        examples.iter().map(TokenizedExample::len).min(),
        examples.iter().map(TokenizedExample::len).max(),
    ) else {
        return Vec::new();
    };
    let width = (max - min + 1).div_ceil(BUCKETS).max(1);
    let mut counts = vec![0usize; (max - min) / width + 1];
    for e in examples {
        counts[(e.len() - min) / width] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| (min + i * width, n))
        .collect()
}
