//! GGUF export: a model (adapters fused) as a GGUF v3 file llama.cpp loads, or a LoRA
//! adapter as a GGUF adapter file (`pipe export gguf`).
//!
//! The formats are learnt from llama.cpp's `convert_hf_to_gguf.py`,
//! `convert_lora_to_gguf.py` and gguf-py; each concern has its file:
//! [`writer`] (the container), [`names`] (tensor names, Q/K permutation), [`quant`] (F16,
//! Q8_0, which tensor gets which type), [`vocab`] (tokenizer metadata), [`lora`] (adapter
//! tensors). The model metadata is here: `general.*` and the `<arch>.*` hyperparameters
//! (`LlamaModel.set_gguf_parameters`), with the value types llama.cpp checks.
//!
//! pipe's own GGUF loader ([`crate::load::gguf`]) reads the result back; the tests compare
//! logits before and after.

pub mod lora;
pub mod names;
pub mod quant;
pub mod vocab;
pub mod writer;

use crate::chat::ChatTemplate;
use crate::models::llama::Llama;
use crate::tokenizer::Tokenizer;
use mlx_rs::error::Exception;
use names::NamedTensor;
pub use quant::FileType;
use serde::Serialize;
use std::path::{Path, PathBuf};
use writer::{TensorInfo, TensorType, Value};

/// `general.quantization_version` (gguf-py's `GGML_QUANT_VERSION`).
const QUANT_VERSION: u32 = 2;

/// Why an export failed. Every variant names what is involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Writing the file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model has something GGUF export does not cover.
    #[error("{0}")]
    Unsupported(String),
    /// The tokenizer cannot be described in GGUF metadata.
    #[error(transparent)]
    Vocab(#[from] vocab::VocabError),
    /// The adapter cannot be written as a GGUF LoRA.
    #[error(transparent)]
    Lora(#[from] lora::LoraError),
    /// MLX failed computing a tensor.
    #[error("computing `{tensor}`: {source}")]
    Mlx {
        /// The tensor.
        tensor: String,
        /// The cause.
        source: Exception,
    },
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The file.
    pub out: PathBuf,
    /// `model` or `adapter` (`general.type`).
    pub kind: &'static str,
    /// The requested type.
    pub file_type: FileType,
    /// Tensors written.
    pub tensors: usize,
    /// Tensors per written type.
    pub tensor_types: std::collections::BTreeMap<String, usize>,
    /// File size in bytes.
    pub bytes: u64,
    /// Tensors written as F16 because their rows are not whole Q8_0 blocks.
    pub f16_fallbacks: Vec<String>,
}

/// What the metadata says besides what the model itself knows.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `general.name`.
    pub name: String,
    /// `<arch>.context_length`: the longest context the model was trained for.
    pub context_length: u32,
}

/// Writes `model` (with no unfused adapters) as a GGUF model file of `file_type`.
pub fn write_model(
    model: &Llama,
    tokenizer: &Tokenizer,
    chat_template: Option<&ChatTemplate>,
    info: &ModelInfo,
    file_type: FileType,
    out: &Path,
) -> Result<Summary, ExportError> {
    let c = &model.config;
    if c.rope_freqs.is_some() {
        return Err(ExportError::Unsupported(
            "exporting models with Llama 3.1 RoPE scaling (rope_freqs) is not implemented".into(),
        ));
    }
    if let Some(layer) = model.model.layers.iter().position(|l| {
        names::block_projections(l)
            .iter()
            .any(|(_, lin)| lin.adapter.is_some())
    }) {
        return Err(ExportError::Unsupported(format!(
            "block {layer} still carries an unfused adapter; fuse it first"
        )));
    }
    let arch = names::architecture(c.family);
    let count = |v: i32| Value::U32(v.max(0) as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let mut metadata = general(arch, "model", &info.name, file_type);
    metadata.extend([
        (k("context_length"), Value::U32(info.context_length)),
        (k("embedding_length"), count(c.hidden_size)),
        (k("block_count"), count(c.num_layers)),
        (k("feed_forward_length"), count(c.intermediate_size)),
        (k("attention.head_count"), count(c.num_heads)),
        (k("attention.head_count_kv"), count(c.num_kv_heads)),
        (k("rope.freq_base"), Value::F32(c.rope_theta)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps),
        ),
        (k("vocab_size"), count(c.vocab_size)),
        (k("rope.dimension_count"), count(c.head_dim)),
    ]);
    if c.rope_scale != 1.0 {
        metadata.extend([
            (k("rope.scaling.type"), Value::Str("linear".into())),
            (k("rope.scaling.factor"), Value::F32(1.0 / c.rope_scale)),
        ]);
    }
    metadata.extend(vocab::metadata(
        tokenizer,
        chat_template,
        c.vocab_size.max(0) as usize,
    )?);
    let tensors = names::model_tensors(model).map_err(|source| ExportError::Mlx {
        tensor: "model weights".into(),
        source,
    })?;
    write_file(out, "model", &metadata, tensors, file_type)
}

/// Writes the LoRA adapters `model` carries as a GGUF adapter file of `file_type`.
pub fn write_lora(
    model: &Llama,
    name: &str,
    file_type: FileType,
    out: &Path,
) -> Result<Summary, ExportError> {
    let (tensors, alpha) = lora::lora_tensors(model)?;
    let arch = names::architecture(model.config.family);
    let mut metadata = general(arch, "adapter", name, file_type);
    metadata.extend([
        ("adapter.type".to_owned(), Value::Str("lora".into())),
        ("adapter.lora.alpha".to_owned(), Value::F32(alpha)),
    ]);
    write_file(out, "adapter", &metadata, tensors, file_type)
}

fn general(arch: &str, kind: &str, name: &str, file_type: FileType) -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::Str(arch.into())),
        ("general.type".into(), Value::Str(kind.into())),
        ("general.name".into(), Value::Str(name.into())),
        (
            "general.file_type".into(),
            Value::U32(file_type.llama_ftype()),
        ),
        (
            "general.quantization_version".into(),
            Value::U32(QUANT_VERSION),
        ),
    ]
}

/// Encodes and writes the tensors one at a time into `out`, atomically.
fn write_file(
    out: &Path,
    kind: &'static str,
    metadata: &[(String, Value)],
    tensors: Vec<NamedTensor>,
    file_type: FileType,
) -> Result<Summary, ExportError> {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|t| {
            let shape: Vec<u64> = t.value.shape().iter().map(|&d| d as u64).collect();
            let ty = quant::tensor_type(&shape, file_type);
            TensorInfo {
                name: t.name.clone(),
                shape,
                ty,
            }
        })
        .collect();
    let io = |source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    };
    let file = pipe_engine::atomic_write::AtomicFile::create(out).map_err(io)?;
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let encode = |i: usize| -> Result<Vec<u8>, ExportError> {
        let mlx = |source| ExportError::Mlx {
            tensor: infos[i].name.clone(),
            source,
        };
        // `as_slice` needs row-major data; a transposed view (LoRA A and B) is not.
        let value = tensors[i].value.contiguous().map_err(mlx)?;
        value.eval().map_err(mlx)?;
        Ok(quant::encode(value.as_slice::<f32>(), infos[i].ty))
    };
    let bytes = writer::write(&mut buffered, metadata, &infos, encode).map_err(|e| match e {
        writer::WriteError::Io(source) => io(source),
        writer::WriteError::Data(e) => e,
        size @ writer::WriteError::Size { .. } => ExportError::Unsupported(size.to_string()),
    })?;
    let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    file.commit().map_err(io)?;
    let mut tensor_types = std::collections::BTreeMap::new();
    for t in &infos {
        *tensor_types.entry(type_name(t.ty).to_owned()).or_insert(0) += 1;
    }
    let f16_fallbacks = match file_type {
        FileType::Q8_0 => infos
            .iter()
            .filter(|t| t.ty == TensorType::F16)
            .map(|t| t.name.clone())
            .collect(),
        FileType::F16 => Vec::new(),
    };
    Ok(Summary {
        out: out.to_path_buf(),
        kind,
        file_type,
        tensors: infos.len(),
        tensor_types,
        bytes,
        f16_fallbacks,
    })
}

fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::F32 => "f32",
        TensorType::F16 => "f16",
        TensorType::Q8_0 => "q8_0",
    }
}

/// The context length a model source declares: `<arch>.context_length` of a GGUF file,
/// `max_position_embeddings` of a Hugging Face directory's `config.json`.
pub fn source_context_length(path: &Path) -> Option<u32> {
    if path.is_dir() {
        let text = fs_err::read_to_string(path.join("config.json")).ok()?;
        let config: serde_json::Value = serde_json::from_str(&text).ok()?;
        return config["max_position_embeddings"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok());
    }
    crate::load::gguf_header::check(path).ok()?;
    let gguf = mlx_rs::io::GgufFile::load(path).ok()?;
    let arch = gguf.get_metadata_string("general.architecture").ok()??;
    let value = gguf
        .get_metadata_array(&format!("{arch}.context_length"))
        .ok()??
        .as_dtype(mlx_rs::Dtype::Int64)
        .ok()?;
    value
        .as_slice::<i64>()
        .first()
        .and_then(|&v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests;
