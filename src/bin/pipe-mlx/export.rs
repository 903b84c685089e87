//! `pipe export gguf`: load the base model in float32, attach the adapter and fuse it (or
//! keep it apart with `--lora-only`), and write a GGUF file (`pipe_mlx_core::export::gguf`).

use anyhow::Context;
use pipe::cli::UsageError;
use pipe::cli::export::{Command, GgufArgs, GgufType};
use pipe::cli::output::Printer;
use pipe_mlx_core::export::gguf::{self, FileType, ModelInfo};
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::train::adapters;
use std::path::Path;

pub fn run(printer: &Printer, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Gguf(args) => export_gguf(printer, args),
        // No MLX; `pipe` runs it (this path is `pipe-mlx` called directly).
        airflow @ Command::Airflow(_) => {
            pipe::cli::run_engine(printer, pipe::cli::Command::Export(airflow))
        }
    }
}

fn export_gguf(printer: &Printer, args: GgufArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.adapter
        && !dir.join("adapter_config.json").is_file()
    {
        return Err(UsageError(format!(
            "{} is not an adapter folder (no adapter_config.json); pass the folder a train stage wrote",
            dir.display()
        ))
        .into());
    }
    // Float32, dequantized: fused weights and re-encoding start from the exact values.
    let options = LoadOptions {
        keep_quantized: false,
        ..LoadOptions::default()
    };
    let mut loaded = match load::load(&args.model, options) {
        Ok(m) => m,
        Err(load::LoadError::NotFound(msg)) => return Err(UsageError(msg).into()),
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("cannot load model `{}`", args.model));
        }
    };
    if let Some(dir) = &args.adapter {
        adapters::load_mlx_lm(&mut loaded.model, dir)
            .with_context(|| format!("cannot load the adapter in {}", dir.display()))?;
        if !args.lora_only {
            adapters::fuse(&mut loaded.model)?;
        }
    }
    let file_type = match args.ty {
        GgufType::F16 => FileType::F16,
        GgufType::Q8_0 => FileType::Q8_0,
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&loaded.path, args.adapter.as_deref()));
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent)?;
    }
    let summary = if args.lora_only {
        gguf::write_lora(&loaded.model, &name, file_type, &args.out)?
    } else {
        let context_length = args
            .context_length
            .or_else(|| gguf::source_context_length(&loaded.path))
            .ok_or_else(|| {
                UsageError(format!(
                    "{} does not say its context length; pass --context-length N",
                    loaded.path.display()
                ))
            })?;
        let info = ModelInfo {
            name,
            context_length,
        };
        gguf::write_model(
            &loaded.model,
            &loaded.tokenizer,
            loaded.chat_template.as_ref(),
            &info,
            file_type,
            &args.out,
        )?
    };
    if args.json {
        return printer.json(&summary);
    }
    let types: Vec<String> = summary
        .tensor_types
        .iter()
        .map(|(ty, n)| format!("{n} {ty}"))
        .collect();
    printer.result(&format!(
        "wrote {} ({}, {} tensors: {}, {:.1} MB)",
        summary.out.display(),
        summary.kind,
        summary.tensors,
        types.join(", "),
        summary.bytes as f64 / 1e6
    ));
    if !summary.f16_fallbacks.is_empty() {
        printer.status(&format!(
            "{} tensors written as f16: their rows are not whole q8_0 blocks of 32 ({}{})",
            summary.f16_fallbacks.len(),
            summary.f16_fallbacks[..summary.f16_fallbacks.len().min(3)].join(", "),
            if summary.f16_fallbacks.len() > 3 {
                ", …"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// `general.name`: the model file or folder name, plus the adapter folder's.
fn default_name(model: &Path, adapter: Option<&Path>) -> String {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match adapter {
        Some(a) => format!("{}+{}", stem(model), stem(a)),
        None => stem(model),
    }
}
