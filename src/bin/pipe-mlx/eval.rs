//! `pipe eval`: loss and perplexity of a model on a text file or a JSONL dataset, and
//! greedy exact-match / contains-match accuracy on prompt/completion or chat data.

use super::generate::load_model;
use anyhow::Context;
use pipe::cli::UsageError;
use pipe::cli::eval::Args;
use pipe::cli::output::Printer;
use pipe_engine::data::Example;
use pipe_mlx_core::eval;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize)]
struct Report {
    model: String,
    tokens: usize,
    loss: f64,
    perplexity: f64,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_match: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contains_match: Option<f64>,
    /// `exact_match` with its 95% Wilson interval and counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_match_ci: Option<pipe_schema::evaluate::Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contains_match_ci: Option<pipe_schema::evaluate::Rate>,
}

/// The `--data` rows in mlx-lm's three JSONL forms, in order.
fn read_records(path: &PathBuf, limit: Option<usize>) -> anyhow::Result<Vec<Example>> {
    let text = fs_err::read_to_string(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Example = serde_json::from_str(line).map_err(|e| {
            UsageError(format!(
                "{}:{}: not a text, prompt/completion or messages record: {e}",
                path.display(),
                i + 1
            ))
        })?;
        out.push(r);
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
    }
    if out.is_empty() {
        return Err(UsageError(format!("{} has no records", path.display())).into());
    }
    Ok(out)
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let records = match &args.data {
        Some(p) => Some(read_records(p, args.limit)?),
        None => None,
    };
    let mut m = load_model(printer, &args.model)?;
    if args.chat && m.chat_template.is_none() {
        return Err(UsageError(format!("{} has no chat template", m.path.display())).into());
    }
    let template = if args.chat {
        m.chat_template.as_ref()
    } else {
        None
    };
    let start = Instant::now();
    let mut report = Report {
        model: m.path.display().to_string(),
        tokens: 0,
        loss: 0.0,
        perplexity: 0.0,
        seconds: 0.0,
        records: None,
        exact_match: None,
        contains_match: None,
        exact_match_ci: None,
        contains_match_ci: None,
    };
    // Answers scored with the loss, when both are asked for (one pass fewer over
    // multiple-choice rows).
    let mut answered = None;
    let stats = match (&args.text, &records) {
        (Some(path), _) => {
            let text = fs_err::read_to_string(path)?;
            eval::text_loss(&mut m.model, &m.tokenizer, &text, args.window)?
        }
        (None, Some(records)) if args.accuracy => {
            report.records = Some(records.len());
            let (loss, acc) = eval::loss_and_accuracy(
                &mut m.model,
                &m.tokenizer,
                template,
                records,
                args.max_tokens,
            )
            .context("scoring the dataset")?;
            answered = Some(acc);
            loss
        }
        (None, Some(records)) => {
            report.records = Some(records.len());
            eval::dataset_loss(&mut m.model, &m.tokenizer, template, records)
                .context("scoring the dataset")?
        }
        (None, None) => return Err(UsageError("give --text or --data".into()).into()),
    };
    report.tokens = stats.tokens;
    report.loss = stats.loss();
    report.perplexity = stats.perplexity();
    if args.accuracy
        && let Some(records) = &records
    {
        let acc = match answered {
            Some(acc) => acc,
            None => eval::accuracy(
                &mut m.model,
                &m.tokenizer,
                template,
                records,
                args.max_tokens,
            )?,
        };
        for (answer, reference) in &acc.answers {
            printer.verbose(&format!("answer {answer:?} | reference {reference:?}"));
        }
        report.exact_match = Some(acc.exact_rate());
        report.contains_match = Some(acc.contains_rate());
        report.exact_match_ci = pipe_engine::stats::rate(acc.exact, acc.total);
        report.contains_match_ci = pipe_engine::stats::rate(acc.contains, acc.total);
    }
    report.seconds = start.elapsed().as_secs_f64();
    if args.json {
        return printer.json(&report);
    }
    printer.result(&format!(
        "loss {:.4}  perplexity {:.3}  ({} tokens scored)",
        report.loss, report.perplexity, report.tokens
    ));
    if let (Some(e), Some(c)) = (report.exact_match_ci, report.contains_match_ci) {
        let pct = |r: pipe_schema::evaluate::Rate| {
            format!(
                "{:.1}% [{:.1}, {:.1}]",
                r.value * 100.0,
                r.low * 100.0,
                r.high * 100.0
            )
        };
        printer.result(&format!(
            "exact match {}  contains match {}  (95% intervals; {} records; lower-cased, punctuation removed, whitespace collapsed)",
            pct(e),
            pct(c),
            report.records.unwrap_or(0)
        ));
    }
    printer.status(&format!("took {:.1} s", report.seconds));
    Ok(())
}
