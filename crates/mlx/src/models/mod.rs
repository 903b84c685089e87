//! Model architectures, one file per family. Each file has a serde config mirroring
//! `config.json`, a resolved config, and modules whose field names are the checkpoint keys.

pub mod cache;
pub mod llama;
