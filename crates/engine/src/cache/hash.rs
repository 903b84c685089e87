//! Hashing files and directories with blake3, consulting the stat cache first.
//!
//! A directory is walked once; files whose stamp matches the stat cache are not opened.
//! The rest are hashed in parallel (rayon): small files are read into a per-thread buffer
//! that is reused, big files are read in large chunks, each hashed with blake3's own
//! multi-threaded tree hashing.
//!
//! Nothing is memory-mapped: a mapped file that another process truncates kills the
//! reader with SIGBUS, and a dependency being rewritten while a run hashes it is a thing
//! users do. A file whose length differs from its stat by the end of the read changed
//! while it was read, and is an error rather than a hash of half of it.

use super::stat::Stamp;
use super::{CacheError, Store, io_err};
use rayon::prelude::*;
use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Suffix of directory hashes (`<manifest hash>.dir`).
pub const DIR_SUFFIX: &str = ".dir";

/// Files at least this big are hashed on several threads, a chunk at a time.
const BIG_FILE: u64 = 4 << 20;

/// Bytes read per chunk of a big file: large enough for blake3 to spread over threads.
const CHUNK: usize = 8 << 20;

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

/// blake3 of a file's content; `size` is its length by the stat taken before.
pub fn hash_file(path: &Path, size: u64) -> Result<String, CacheError> {
    let read = if size >= BIG_FILE {
        let mut hasher = blake3::Hasher::new();
        update_from_file(&mut hasher, path).map(|n| (n, hasher.finalize().to_hex().to_string()))
    } else {
        BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let n = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf))?;
            Ok((n as u64, blake3::hash(&buf).to_hex().to_string()))
        })
    };
    let (n, hash) = read.map_err(io_err("cannot read", path))?;
    if n != size {
        return Err(io_err("cannot read", path)(std::io::Error::other(format!(
            "it changed while it was read ({size} bytes when listed, {n} read); \
             something is writing it: run again once it is done"
        ))));
    }
    Ok(hash)
}

/// Feeds the whole file at `path` to `hasher`, big chunks on several threads; returns the
/// bytes read. Reads rather than maps, so a file truncated meanwhile gives a short count,
/// not SIGBUS.
pub fn update_from_file(hasher: &mut blake3::Hasher, path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        // Fill the chunk (a read may return less than asked before the end).
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        hasher.update_rayon(&chunk[..filled]);
        total += filled as u64;
        if filled < CHUNK {
            return Ok(total);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ everywhere, so a chunk hashed twice or skipped changes the hash.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The error and its causes, as the command line prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text += &format!(": {s}");
            source = s.source();
        }
        text
    }

    #[test]
    fn big_and_small_files_hash_as_blake3_of_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Two full chunks and a part, a file of exactly one chunk, and a small file.
        for len in [2 * CHUNK + 12_345, CHUNK, BIG_FILE as usize, 1000, 0] {
            let bytes = noise(len);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                hash_file(&path, len as u64).unwrap(),
                blake3::hash(&bytes).to_hex().to_string(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn a_file_whose_length_changed_since_it_was_listed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for len in [10usize, 5 << 20] {
            let path = dir.path().join("f");
            std::fs::write(&path, noise(len)).unwrap();
            let e = chain(&hash_file(&path, len as u64 + 1).unwrap_err());
            assert!(e.contains("changed while it was read"), "{e}");
        }
    }

    /// A dependency truncated and rewritten while it is hashed: with a memory map the
    /// reader died of SIGBUS (the whole test binary with it); now each hash is the file's
    /// or an error that says it changed.
    #[test]
    fn a_big_file_truncated_while_it_is_hashed_gives_its_hash_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes = noise(16 << 20);
        std::fs::write(&path, &bytes).unwrap();
        let whole = blake3::hash(&bytes).to_hex().to_string();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (mut good, mut changed) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::io::{Seek, Write};
                let mut cut = 1u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    cut = (cut * 7919) % (16 << 20);
                    f.set_len(cut).unwrap();
                    f.seek(std::io::SeekFrom::Start(cut)).unwrap();
                    f.write_all(&bytes[cut as usize..]).unwrap();
                }
            });
            for _ in 0..20 {
                match hash_file(&path, bytes.len() as u64) {
                    Ok(h) => {
                        assert_eq!(h, whole);
                        good += 1;
                    }
                    Err(e) => {
                        let e = chain(&e);
                        assert!(e.contains("changed while it was read"), "{e}");
                        changed += 1;
                    }
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(good + changed, 20);
    }
}
