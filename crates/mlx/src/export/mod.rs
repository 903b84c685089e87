//! Writing models and adapters in formats other tools load: GGUF for llama.cpp and the
//! tools built on it (`pipe export gguf`). Hugging Face directories are written by
//! [`crate::load::hf::save_dir`] (`pipe fuse`).

pub mod gguf;
