//! `pipe eval`: loss and perplexity of a model on a text file or a JSONL dataset, and
//! greedy exact-match / contains-match accuracy on prompt/completion or chat data.

use super::generate::ModelArgs;
use std::path::PathBuf;

/// Arguments of `pipe eval`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Data: JSON Lines, one record per line: {\"text\": ...}, {\"prompt\": ..., \"completion\": ...} or {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}. Only completions (the last message) are scored when there is a prompt.\nAccuracy normalisation: lower-case, punctuation removed, whitespace collapsed.\n\nExamples:\n  pipe eval --text passage.txt\n  pipe eval --data test.jsonl --chat --accuracy --json"
)]
pub struct Args {
    /// The model and how to hold its weights.
    #[command(flatten)]
    pub model: ModelArgs,
    /// A plain-text file: perplexity over all of it.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub text: Option<PathBuf>,
    /// A JSONL dataset (see below).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Put prompt/completion records through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Also generate greedy answers and report exact-match and contains-match accuracy.
    #[arg(long, requires = "data")]
    pub accuracy: bool,
    /// Token budget of each generated answer (with --accuracy).
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Use only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Longest window scored at once for --text (tokens).
    #[arg(long, default_value_t = 1024)]
    pub window: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}
