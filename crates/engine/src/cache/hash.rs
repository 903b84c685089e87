//! Hashing files and directories with blake3, consulting the stat cache first.
//!
//! A directory is walked once; files whose stamp matches the stat cache are not opened.
//! The rest are hashed in parallel (rayon): small files are read into a per-thread buffer
//! that is reused, big files are memory-mapped and hashed with blake3's own multi-threaded
//! tree hashing.

use super::stat::Stamp;
use super::{CacheError, Store, io_err};
use rayon::prelude::*;
use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Suffix of directory hashes (`<manifest hash>.dir`).
pub const DIR_SUFFIX: &str = ".dir";

/// Files at least this big are memory-mapped and hashed on several threads.
const BIG_FILE: u64 = 4 << 20;

/// Whether `hash` names a directory manifest.
pub fn is_dir_hash(hash: &str) -> bool {
    hash.ends_with(DIR_SUFFIX)
}

/// blake3 of `bytes` as 64 hex digits.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The result of hashing a path.
pub(crate) struct Hashed {
    /// File hash, or manifest hash + `.dir`.
    pub hash: String,
    /// Every file (absolute path, hash), when asked for.
    pub files: Vec<(PathBuf, String)>,
    /// The manifest text of a directory.
    pub manifest: Option<String>,
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1 << 20));
}

/// blake3 of a file's content.
pub fn hash_file(path: &Path, size: u64) -> Result<String, CacheError> {
    if size >= BIG_FILE {
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap_rayon(path)
            .map_err(io_err("cannot read", path))?;
        return Ok(hasher.finalize().to_hex().to_string());
    }
    BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io_err("cannot read", path))?;
        Ok(blake3::hash(&buf).to_hex().to_string())
    })
}

/// Parses a manifest back into `(hash, size, relative path)` rows.
pub(crate) fn parse_manifest(text: &str) -> Vec<(&str, u64, &str)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, f.next()?.parse().ok()?, f.next()?))
        })
        .collect()
}

pub(crate) fn hash_path(
    store: &Store,
    rel: &str,
    want_files: bool,
) -> Result<Option<Hashed>, CacheError> {
    let abs = store.root.join(rel);
    let meta = match std::fs::metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot stat", &abs)(e)),
    };
    if !meta.is_dir() {
        let stamp = Stamp::of(&meta);
        let cached = store
            .stat
            .lock()
            .expect("stat cache")
            .get(rel, stamp)
            .map(String::from);
        let hash = match cached {
            Some(h) => h,
            None => {
                let h = hash_file(&abs, stamp.size)?;
                store
                    .stat
                    .lock()
                    .expect("stat cache")
                    .insert(rel, stamp, &h);
                h
            }
        };
        let files = if want_files {
            vec![(abs, hash.clone())]
        } else {
            Vec::new()
        };
        return Ok(Some(Hashed {
            hash,
            files,
            manifest: None,
        }));
    }
    // One walk; stat every file; look the stamps up under one lock.
    let mut entries = super::walk::files(&abs)?;
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut key = String::with_capacity(rel.len() + 128);
    let mut hashes: Vec<Option<String>> = {
        let stat = store.stat.lock().expect("stat cache");
        entries
            .iter()
            .map(|(inner, stamp)| {
                key.clear();
                key.push_str(rel);
                key.push('/');
                key.push_str(inner);
                stat.get(&key, *stamp).map(String::from)
            })
            .collect()
    };
    let missing: Vec<usize> = (0..entries.len())
        .filter(|&i| hashes[i].is_none())
        .collect();
    let hash_one = |&i: &usize| hash_file(&abs.join(&entries[i].0), entries[i].1.size);
    // Starting rayon's pool costs more than hashing a handful of small files.
    let bytes: u64 = missing.iter().map(|&i| entries[i].1.size).sum();
    let fresh: Vec<Result<String, CacheError>> = if missing.len() < 64 && bytes < BIG_FILE {
        missing.iter().map(hash_one).collect()
    } else {
        missing.par_iter().map(hash_one).collect()
    };
    {
        let mut stat = store.stat.lock().expect("stat cache");
        for (&i, h) in missing.iter().zip(fresh) {
            let h = h?;
            stat.insert(&format!("{rel}/{}", entries[i].0), entries[i].1, &h);
            hashes[i] = Some(h);
        }
    }
    let mut manifest = String::with_capacity(entries.len() * 100);
    let mut files = Vec::new();
    for ((inner, stamp), hash) in entries.into_iter().zip(hashes) {
        let hash = hash.expect("every file hashed");
        use std::fmt::Write;
        let _ = writeln!(manifest, "{hash}\t{}\t{inner}", stamp.size);
        if want_files {
            files.push((abs.join(&inner), hash));
        }
    }
    Ok(Some(Hashed {
        hash: format!("{}{DIR_SUFFIX}", hash_bytes(manifest.as_bytes())),
        files,
        manifest: Some(manifest),
    }))
}
