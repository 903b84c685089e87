//! `pipe generate`: load a model, render the prompt through its chat template (when it has
//! one, unless `--raw`), stream the completion to stdout and report prompt and generation
//! tokens/s. A prompt that gets no text back is an error (exit 1), not silence.

use anyhow::Context;
use mlx_rs::Dtype;
use pipe::cli::generate::{Args, ModelArgs, Weights};
use pipe::cli::output::Printer;
use pipe::cli::{Failure, UsageError};
use pipe_engine::data::{Message, Role};
use pipe_mlx_core::generate::{self, GenerateOptions, Sampling};
use pipe_mlx_core::load::{self, LoadOptions, LoadedModel};
use serde::Serialize;
use std::time::Instant;

/// The load options a `--weights` choice means on the current device.
pub fn load_options(weights: Weights) -> LoadOptions {
    {
        let cpu = pipe_mlx_core::linear::QuantKernel::for_default_device()
            == pipe_mlx_core::linear::QuantKernel::Dequantize;
        let (dtype, keep_quantized) = match weights {
            Weights::Auto if cpu => (Dtype::Float32, false),
            Weights::Auto => (Dtype::Float16, true),
            Weights::Quantized => (Dtype::Float32, true),
            Weights::Float32 => (Dtype::Float32, false),
            Weights::Float16 => (Dtype::Float16, false),
            Weights::Bfloat16 => (Dtype::Bfloat16, false),
        };
        LoadOptions {
            dtype,
            keep_quantized,
        }
    }
}

/// Loads the model, reporting how long it took.
pub fn load_model(printer: &Printer, args: &ModelArgs) -> anyhow::Result<LoadedModel> {
    let start = Instant::now();
    let m = match load::load(&args.model, load_options(args.weights)) {
        Ok(m) => m,
        // A model argument that names nothing is a usage error (exit 2).
        Err(load::LoadError::NotFound(msg)) => return Err(UsageError(msg).into()),
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("cannot load model `{}`", args.model));
        }
    };
    printer.verbose(&format!(
        "loaded {} in {:.2} s ({} layers, hidden {}, {:?})",
        m.path.display(),
        start.elapsed().as_secs_f64(),
        m.model.config.num_layers,
        m.model.config.hidden_size,
        m.model.config.family
    ));
    Ok(m)
}

#[derive(Serialize)]
struct Report<'a> {
    model: String,
    text: &'a str,
    stop_reason: generate::StopReason,
    #[serde(flatten)]
    stats: generate::GenerationStats,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    if let (Some(input), Some(output)) = (&args.batch, &args.out) {
        return crate::generate_batch::run(printer, &args, input, output);
    }
    if !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        return Err(UsageError("--top-p must be in (0, 1]".into()).into());
    }
    if args.temp < 0.0 {
        return Err(UsageError("--temp must be >= 0".into()).into());
    }
    let mut m = load_model(printer, &args.model)?;
    let template = if args.raw {
        None
    } else {
        match (m.chat_template.as_ref(), args.chat || args.system.is_some()) {
            (Some(t), _) => Some(t),
            (None, false) => None,
            (None, true) => {
                let flag = if args.chat { "--chat" } else { "--system" };
                return Err(UsageError(format!(
                    "{} has no chat template, which {flag} needs; drop {flag}",
                    m.path.display()
                ))
                .into());
            }
        }
    };
    let mut batch = Vec::with_capacity(args.prompt.len());
    for prompt in &args.prompt {
        let text = match template {
            Some(template) => {
                let mut messages = Vec::new();
                if let Some(s) = &args.system {
                    messages.push(Message::new(Role::System, s));
                }
                messages.push(Message::new(Role::User, prompt));
                template.render(&messages, true)?
            }
            None => prompt.clone(),
        };
        // A chat template writes its own special tokens; plain text gets the model's bos.
        batch.push(m.tokenizer.encode(&text, template.is_none())?);
    }
    let hint = empty_hint(template.is_some(), m.chat_template.is_some());
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: Sampling {
            temperature: args.temp,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_strings: args.stop.clone(),
    };
    let json = args.json;
    if batch.len() > 1 {
        let (gens, stats) = generate::generate_batch(&mut m.model, &m.tokenizer, &batch, &options)?;
        for g in &gens {
            if json {
                printer.json(&serde_json::json!({"text": g.text, "stop_reason": g.stop_reason}))?;
            } else {
                printer.result(&g.text.replace('\n', "\\n"));
            }
        }
        if json {
            return printer.json(&stats);
        }
        printer.status(&format!(
            "batch of {}: prompt {:.1} tok/s | generation {} tokens, {:.1} tok/s",
            gens.len(),
            stats.prompt_tps,
            stats.generated_tokens,
            stats.generation_tps
        ));
        let empty: Vec<String> = gens
            .iter()
            .enumerate()
            .filter(|(_, g)| g.text.trim().is_empty())
            .map(|(i, g)| format!("{} ({})", i + 1, stop_words(g.stop_reason)))
            .collect();
        if !empty.is_empty() {
            return Err(Failure(format!(
                "the model generated no text for prompt {} of {}{hint}",
                empty.join(", "),
                gens.len()
            ))
            .into());
        }
        return Ok(());
    }
    let ids = batch.swap_remove(0);
    let (g, stats) =
        generate::generate(&mut m.model, &m.tokenizer, &ids, &options, &mut |piece| {
            if !json {
                printer.result_fragment(piece);
            }
        })?;
    if json {
        printer.json(&Report {
            model: m.path.display().to_string(),
            text: &g.text,
            stop_reason: g.stop_reason,
            stats,
        })?;
    } else {
        printer.result("");
        printer.status(&format!(
            "prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s | stop: {:?} | peak memory {:.0} MiB",
            stats.prompt_tokens,
            stats.prompt_tps,
            stats.generated_tokens,
            stats.generation_tps,
            g.stop_reason,
            mlx_rs::memory::peak_memory().unwrap_or(0) as f64 / (1 << 20) as f64
        ));
    }
    if g.text.trim().is_empty() {
        return Err(Failure(format!(
            "the model generated no text ({}){hint}",
            stop_words(g.stop_reason)
        ))
        .into());
    }
    Ok(())
}

/// Why a completion ended, in words for the empty-generation message.
fn stop_words(reason: generate::StopReason) -> &'static str {
    match reason {
        generate::StopReason::Eos => "it ended with its end-of-sequence token",
        generate::StopReason::StopString => "a stop string came first",
        generate::StopReason::MaxTokens => "only whitespace within --max-tokens",
    }
}

/// What to try when a prompt got no text: the chat template is the usual cure (an
/// instruct model given a bare prompt often ends at once, issue #15).
fn empty_hint(templated: bool, has_template: bool) -> &'static str {
    match (templated, has_template) {
        (false, true) => "; drop --raw to send the prompt through the model's chat template",
        (false, false) => "; the model has no chat template: try a longer prompt or a base model",
        (true, _) => "; try rephrasing the prompt or --system",
    }
}
