//! Which base model an adapter belongs to.
//!
//! An adapter is a small change to one exact set of base weights. Loaded onto another
//! base of the same shape (the plain model instead of the instruct one, or a model that
//! already has an adapter fused in), it loads without a shape error and answers badly, and
//! nothing says why. So training records the base's content hash in the adapter's
//! `adapter_config.json` (`base_model`, beside mlx-lm's own fields, which mlx-lm ignores),
//! and every load of an mlx-lm adapter compares it with the model it is loaded onto
//! ([`crate::train::adapters::load_mlx_lm`]). Adapters without the record (older ones, or
//! trained elsewhere) load as before.
//!
//! The identity is the content, not the name: the same file under another path or id is
//! the same base; another file is another base, even when converted from the same one.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A base model as an adapter records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// The model as the user named it when training (an id, a file or a folder).
    pub source: String,
    /// blake3 of the weights: the GGUF file, or a folder's `config.json` and
    /// `*.safetensors` files by name.
    pub blake3: String,
}

impl BaseModel {
    /// The identity of the model loaded from `path`, named `source`.
    pub fn of(path: &Path, source: &str) -> std::io::Result<Self> {
        Ok(Self {
            source: source.to_owned(),
            blake3: weights_hash(path)?,
        })
    }

    /// The first characters of the hash, enough to tell two models apart in a message.
    pub fn short(&self) -> &str {
        &self.blake3[..self.blake3.len().min(12)]
    }
}

fn weights_hash(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "config.json" || n.ends_with(".safetensors"))
            .collect();
        files.sort();
        for name in files {
            // Name and length first, so that moving bytes between files changes the hash.
            let file = path.join(&name);
            hasher.update(name.as_bytes());
            hasher.update(&std::fs::metadata(&file)?.len().to_le_bytes());
            pipe_engine::cache::update_from_file(&mut hasher, &file)?;
        }
    } else {
        pipe_engine::cache::update_from_file(&mut hasher, path)?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// An adapter recorded for one base and loaded onto another.
#[derive(Debug, thiserror::Error)]
#[error(
    "the adapter in {dir} was trained on `{}` (weights blake3 {}…), not on this model `{}` \
     (blake3 {}…); load it onto the model it was trained on (e.g. --model {})",
    trained.source, trained.short(), loaded_onto.source, loaded_onto.short(), trained.source
)]
pub struct BaseMismatch {
    /// The adapter folder.
    pub dir: String,
    /// What the adapter records.
    pub trained: BaseModel,
    /// The model it was being loaded onto.
    pub loaded_onto: BaseModel,
}

/// Refuses `recorded` (what an adapter in `dir` says) on `model`'s base; either unknown
/// passes.
pub fn check(
    dir: &Path,
    recorded: Option<&BaseModel>,
    model: Option<&BaseModel>,
) -> Result<(), BaseMismatch> {
    match (recorded, model) {
        (Some(trained), Some(loaded_onto)) if trained.blake3 != loaded_onto.blake3 => {
            Err(BaseMismatch {
                dir: dir.display().to_string(),
                trained: trained.clone(),
                loaded_onto: loaded_onto.clone(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_its_content_and_a_folder_by_its_weight_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.gguf");
        let b = dir.path().join("b.gguf");
        std::fs::write(&a, b"weights").unwrap();
        std::fs::write(&b, b"weights").unwrap();
        let (ia, ib) = (
            BaseModel::of(&a, "a").unwrap(),
            BaseModel::of(&b, "b").unwrap(),
        );
        assert_eq!(ia.blake3, ib.blake3, "same content, same base");
        std::fs::write(&b, b"weightz").unwrap();
        assert_ne!(ia.blake3, BaseModel::of(&b, "b").unwrap().blake3);

        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        std::fs::write(hf.join("config.json"), "{}").unwrap();
        std::fs::write(hf.join("model.safetensors"), "w").unwrap();
        let before = BaseModel::of(&hf, "hf").unwrap();
        std::fs::write(hf.join("README.md"), "docs do not count").unwrap();
        assert_eq!(before, BaseModel::of(&hf, "hf").unwrap());
        std::fs::write(hf.join("model.safetensors"), "v").unwrap();
        assert_ne!(before, BaseModel::of(&hf, "hf").unwrap());
    }

    #[test]
    fn only_two_known_and_different_bases_are_refused() {
        let base = |h: &str| BaseModel {
            source: format!("m-{h}"),
            blake3: h.repeat(16),
        };
        let dir = Path::new("runs/lora");
        assert!(check(dir, Some(&base("a")), Some(&base("a"))).is_ok());
        assert!(check(dir, None, Some(&base("a"))).is_ok());
        assert!(check(dir, Some(&base("a")), None).is_ok());
        let e = check(dir, Some(&base("a")), Some(&base("b"))).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("runs/lora")
                && message.contains("`m-a`")
                && message.contains("`m-b`")
                && message.contains("--model m-a"),
            "{message}"
        );
    }
}
