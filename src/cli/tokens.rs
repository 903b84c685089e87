//! `pipe tokens`: a data file as a model sees it: its examples through the model's chat
//! template and tokenizer, their lengths against `max_seq_len`, and the first few as text.
//! The same code as the `tokenize` stage, so the counts are the ones training will see.

use std::path::PathBuf;

/// Arguments of `pipe tokens`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Data: JSONL, CSV or TSV in the formats the ingest stage reads (prompt/completion, chat messages or text). Prompt/completion records go through the model's chat template, as the tokenize and train stages put them.\nLengths count every token of an example; training feeds length - 1 positions, so an example is truncated when that exceeds --max-seq-len.\n\nExamples:\n  pipe tokens data/uploads/verbs.csv\n  pipe tokens runs/quickstart/data/train.jsonl --max-seq-len 64 --preview 5\n  pipe tokens data/train.jsonl --json | jq .stats.truncated"
)]
pub struct Args {
    /// The data file.
    pub file: PathBuf,
    /// The model whose tokenizer and chat template to use (known id, GGUF file or directory).
    #[arg(long, short, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// The training's sequence length, for the count of truncated examples.
    #[arg(long, default_value_t = 2048)]
    pub max_seq_len: usize,
    /// How many examples to show as the model sees them.
    #[arg(long, default_value_t = 3)]
    pub preview: usize,
    /// Print one JSON object: `stats`, `histogram` (`[lowest length, examples]` buckets)
    /// and `preview` (`text`, `tokens`, `loss_tokens`).
    #[arg(long)]
    pub json: bool,
}
