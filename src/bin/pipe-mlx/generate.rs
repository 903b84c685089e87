//! `pipe generate`: load a model, render the prompt (optionally through its chat
//! template), stream the completion to stdout and report prompt and generation tokens/s.

use anyhow::Context;
use mlx_rs::Dtype;
use pipe::cli::UsageError;
use pipe::cli::generate::{Args, ModelArgs, Weights};
use pipe::cli::output::Printer;
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
    let mut batch = Vec::with_capacity(args.prompt.len());
    for prompt in &args.prompt {
        let text = if args.chat {
            let template = m.chat_template.as_ref().ok_or_else(|| {
                UsageError(format!(
                    "{} has no chat template; drop --chat",
                    m.path.display()
                ))
            })?;
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(Message::new(Role::System, s));
            }
            messages.push(Message::new(Role::User, prompt));
            template.render(&messages, true)?
        } else {
            prompt.clone()
        };
        // A chat template writes its own special tokens; plain text gets the model's bos.
        batch.push(m.tokenizer.encode(&text, !args.chat)?);
    }
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
        return printer.json(&Report {
            model: m.path.display().to_string(),
            text: &g.text,
            stop_reason: g.stop_reason,
            stats,
        });
    }
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
    Ok(())
}
