//! The activation cache's files, as the engine sees them: where they live, how a file is
//! sealed on write and checked on read, and which old files are deleted. The states
//! themselves are computed and read by `pipe_mlx_core::train::activations`; everything
//! about the files that needs no MLX is here, so `pipe gc` and `pipe cache stats` (the
//! `pipe` binary does not link MLX) can manage them.
//!
//! # Layout
//!
//! ```text
//! <root>/cache/activations/v1/<key>.safetensors         one data set's states
//! <root>/cache/activations/v1/.<key>.<pid>.tmp.safetensors   being written by process pid
//! ```
//!
//! `<key>` is 64 hex digits of blake3 over the base model below block `k`, `k` and the
//! tokenized data (see the MLX module), so every run and tune trial of a workspace with
//! the same base model, data and `k` finds the same file.
//!
//! # Integrity
//!
//! A file is written under a temporary name, then [`seal`]ed: blake3 over its tensor data
//! goes into its safetensors metadata (`pipe_blake3`, written first as 64 zeros and
//! overwritten in place), the file is synced, and [`publish`] renames it to its key. A
//! writer killed at any point leaves at most a temporary file, which no reader opens and
//! `pipe gc` deletes once its writer is gone. A reader runs [`check`] first: a file whose
//! length or hash does not match (a disk error, a copy cut short, an edit) is deleted and
//! its states are recomputed; it is never read.
//!
//! # What `pipe gc` deletes
//!
//! The files are a cache, not results: each is a pure function of the base model, the
//! tokens and `k`, no lock file or run entry refers to one, and a run that misses one
//! recomputes it. So gc keeps no file for a run's sake; it deletes files unused (not read
//! or written) for longer than `max_age`, then the least recently used until the directory
//! fits the budget, and temporary files whose writer is no longer running.

use super::{CacheError, io_err};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Disk budget of the directory, in MiB, unless the train options or `pipe gc` say
/// otherwise.
pub const DEFAULT_DISK_MB: u64 = 4096;

/// `pipe gc` deletes files unused for longer than this many days, unless told otherwise.
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;

/// The metadata key holding a file's checksum.
pub const CHECKSUM_KEY: &str = "pipe_blake3";

/// What a writer puts under [`CHECKSUM_KEY`] before [`seal`] overwrites it.
pub const UNSEALED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A temporary file older than this is deleted by gc even if a process with its writer's
/// id runs (ids are reused; no write takes a day).
const TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Safetensors headers beyond this are not ours (an entry per example, ~80 bytes each).
const MAX_HEADER: u64 = 256 << 20;

/// The cache directory of the workspace at `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("cache").join("activations").join("v1")
}

/// The file of `key` in `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.safetensors"))
}

/// A temporary name for this process's write of `key` (MLX appends `.safetensors` to a
/// name without it, so the name ends with it).
pub fn temp_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!(".{key}.{}.tmp.safetensors", std::process::id()))
}

/// What a file name in the directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `<key>.safetensors`.
    Entry,
    /// `.<key>.<pid>.tmp.safetensors`, written by `pid`.
    Temp(u32),
    /// Anything else (left alone).
    Other,
}

fn classify(name: &str) -> Name {
    let is_key = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(key) = name.strip_suffix(".safetensors")
        && is_key(key)
    {
        return Name::Entry;
    }
    let temp = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp.safetensors"))
        .and_then(|n| n.split_once('.'))
        .filter(|(key, _)| is_key(key))
        .and_then(|(_, pid)| pid.parse().ok());
    temp.map_or(Name::Other, Name::Temp)
}

/// Seals the freshly written file at `path`: writes blake3 of its tensor data over the
/// [`UNSEALED`] placeholder in its metadata and syncs it to disk.
pub fn seal(path: &Path) -> Result<(), CacheError> {
    let corrupt = |why: String| CacheError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    let (header, data_start) = read_header(&mut file).map_err(corrupt)?;
    let needle = format!("\"{UNSEALED}\"");
    let at = find(&header, needle.as_bytes())
        .ok_or_else(|| corrupt(format!("no `{CHECKSUM_KEY}` placeholder in its metadata")))?;
    let hash = hash_from(&mut file, data_start).map_err(io_err("cannot read", path))?;
    file.seek(SeekFrom::Start(8 + at as u64 + 1))
        .and_then(|_| file.write_all(hash.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io_err("cannot write", path))
}

/// Moves the sealed file `tmp` to `dest` (atomically, replacing an older one).
pub fn publish(tmp: &Path, dest: &Path) -> Result<(), CacheError> {
    fs_err::rename(tmp, dest).map_err(io_err("cannot rename", tmp))?;
    // The rename itself reaches the disk with the directory.
    #[cfg(unix)]
    if let Some(dir) = dest.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether the file at `path` is whole and sealed: its length is what its header says and
/// its tensor data hashes to its checksum. `Err` says what is wrong.
pub fn check(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let (header, data_start) = read_header(&mut file)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format!("its header is not JSON: {e}"))?;
    let map = header
        .as_object()
        .ok_or("its header is not a JSON object")?;
    let expected = map
        .get("__metadata__")
        .and_then(|m| m.get(CHECKSUM_KEY))
        .and_then(|v| v.as_str())
        .ok_or("it has no checksum (not written by this version of pipe)")?;
    let data_len = map
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if data_start + data_len != len {
        return Err(format!(
            "it is {len} bytes, its header says {}",
            data_start + data_len
        ));
    }
    let actual = hash_from(&mut file, data_start).map_err(|e| format!("cannot read: {e}"))?;
    if actual != expected {
        return Err(format!(
            "its data hashes to {actual}, its checksum is {expected}"
        ));
    }
    Ok(())
}

/// Marks a file as just used (its modification time orders eviction).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The header bytes and where the data starts.
fn read_header(file: &mut std::fs::File) -> Result<(Vec<u8>, u64), String> {
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| "it is shorter than a safetensors header".to_owned())?;
    let n = u64::from_le_bytes(len);
    let file_len = file.metadata().map_or(0, |m| m.len());
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(format!(
            "its header length {n} does not fit its {file_len} bytes"
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|_| "it ends inside its header".to_owned())?;
    Ok((header, 8 + n))
}

fn hash_from(file: &mut std::fs::File, start: u64) -> std::io::Result<String> {
    file.seek(SeekFrom::Start(start))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(file, &mut hasher)?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One cache file.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    bytes: u64,
    last_used: SystemTime,
    name: Name,
}

fn files(dir: &Path) -> Vec<File> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .filter_map(|e| {
            let name = classify(e.file_name().to_str()?);
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some(File {
                path: e.path(),
                bytes: meta.len(),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                name,
            })
        })
        .filter(|f| f.name != Name::Other)
        .collect()
}

/// How much the directory holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Cache files (one per data set, base model and `k`).
    pub entries: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Temporary files (writes in progress, or left by a killed writer).
    pub temp_files: usize,
    /// Their bytes.
    pub temp_bytes: u64,
}

/// What the directory at `dir` holds (empty when it does not exist).
pub fn usage(dir: &Path) -> Usage {
    let mut u = Usage::default();
    for f in files(dir) {
        if f.name == Name::Entry {
            u.entries += 1;
            u.bytes += f.bytes;
        } else {
            u.temp_files += 1;
            u.temp_bytes += f.bytes;
        }
    }
    u
}

/// Deletes the least recently used files of `dir` (never `keep`) until the directory fits
/// `budget` bytes. Returns the bytes freed.
pub fn trim(dir: &Path, budget: u64, keep: &Path) -> Result<u64, CacheError> {
    let mut entries: Vec<File> = files(dir)
        .into_iter()
        .filter(|f| f.name == Name::Entry)
        .collect();
    entries.sort_by_key(|f| f.last_used);
    let mut total: u64 = entries.iter().map(|f| f.bytes).sum();
    let mut freed = 0;
    for f in entries {
        if total <= budget {
            break;
        }
        if f.path == keep {
            continue;
        }
        remove(&f.path)?;
        total -= f.bytes;
        freed += f.bytes;
    }
    Ok(freed)
}

/// What gc deletes.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Files unused for longer than this go.
    pub max_age: Duration,
    /// Then the least recently used go until the directory fits this many bytes.
    pub budget_bytes: u64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(DEFAULT_MAX_AGE_DAYS * 24 * 3600),
            budget_bytes: DEFAULT_DISK_MB << 20,
        }
    }
}

/// What gc did to the activation cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// Cache files deleted (or that would be, on a dry run).
    pub entries_removed: usize,
    /// Of those, for being unused longer than the maximum age.
    pub expired: usize,
    /// Temporary files of writers no longer running.
    pub temp_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Cache files kept.
    pub entries_kept: usize,
    /// Their bytes.
    pub bytes_kept: u64,
}

/// Applies `policy` to `dir` as of `now`; a dry run deletes nothing.
pub fn gc(
    dir: &Path,
    policy: GcPolicy,
    now: SystemTime,
    dry_run: bool,
) -> Result<GcReport, CacheError> {
    let mut report = GcReport::default();
    let age = |f: &File| now.duration_since(f.last_used).unwrap_or_default();
    let mut entries = Vec::new();
    for f in files(dir) {
        match f.name {
            Name::Temp(pid) if !crate::process::is_alive(pid) || age(&f) > TEMP_MAX_AGE => {
                report.temp_removed += 1;
                report.bytes_freed += f.bytes;
                if !dry_run {
                    remove(&f.path)?;
                }
            }
            Name::Entry => entries.push(f),
            Name::Temp(_) | Name::Other => {}
        }
    }
    entries.sort_by_key(|f| f.last_used);
    let mut total: u64 = entries.iter().map(|f| f.bytes).sum();
    for f in entries {
        let expired = age(&f) > policy.max_age;
        if expired || total > policy.budget_bytes {
            report.entries_removed += 1;
            report.expired += usize::from(expired);
            report.bytes_freed += f.bytes;
            total -= f.bytes;
            if !dry_run {
                remove(&f.path)?;
            }
        } else {
            report.entries_kept += 1;
            report.bytes_kept += f.bytes;
        }
    }
    Ok(report)
}

/// What `verify` found in the activation cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Cache files checked.
    pub checked: usize,
    /// Files that failed [`check`] and were deleted (they are recomputed when needed), with
    /// what was wrong.
    pub removed: Vec<(PathBuf, String)>,
}

/// Checks every cache file of `dir`; deletes those that fail.
pub fn verify(dir: &Path) -> Result<VerifyReport, CacheError> {
    let mut report = VerifyReport::default();
    for f in files(dir).into_iter().filter(|f| f.name == Name::Entry) {
        report.checked += 1;
        if let Err(why) = check(&f.path) {
            remove(&f.path)?;
            report.removed.push((f.path, why));
        }
    }
    Ok(report)
}

fn remove(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        // Another process (a concurrent trim) got there first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_err("cannot remove", path)),
    }
}

/// Writes a sealed cache file holding `values` as one float32 row named `0`, the way the
/// trainer's files look (for tests of gc and of readers, which need no MLX to make one).
#[doc(hidden)]
pub fn write_sealed_for_tests(
    dir: &Path,
    key: &str,
    values: &[f32],
) -> Result<PathBuf, CacheError> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(
        "{{\"0\":{{\"dtype\":\"F32\",\"shape\":[1,{}],\"data_offsets\":[0,{}]}},\"__metadata__\":{{\"{CHECKSUM_KEY}\":\"{UNSEALED}\"}}}}",
        values.len(),
        data.len()
    );
    fs_err::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let tmp = temp_path(dir, key);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    fs_err::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
    seal(&tmp)?;
    let dest = entry_path(dir, key);
    publish(&tmp, &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests;
