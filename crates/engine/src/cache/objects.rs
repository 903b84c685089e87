//! The object store: content named by its blake3 hash under `objects/ab/cdef...`, plus
//! restoring outs from it, garbage collection and verification.
//!
//! Objects are written to a temporary name in the store and renamed into place, so a crash
//! never leaves a half-written object under a real name. They are not synced one by one:
//! [`make_durable`] syncs what one `store_path` published, once, before the run-cache entry
//! and the lock file that name the objects are written.

use super::hash::{DIR_SUFFIX, hash_file, is_dir_hash, parse_manifest};
use super::stat::Stamp;
use super::{CacheError, Store, io_err};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What `gc` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Objects deleted (or that would be, on a dry run).
    pub objects_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Run-cache entries dropped.
    pub runs_removed: usize,
    /// Objects kept.
    pub objects_kept: usize,
}

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Objects checked.
    pub checked: usize,
    /// Corrupt objects, moved to `quarantine/`.
    pub corrupt: Vec<String>,
}

fn object_path(store: &Store, hex: &str) -> PathBuf {
    let hex = hex.strip_suffix(DIR_SUFFIX).unwrap_or(hex);
    store.dir.join("objects").join(&hex[..2]).join(&hex[2..])
}

/// A temporary path inside the store, on the same file system as the objects.
fn temp_path(store: &Store) -> Result<tempfile::TempPath, CacheError> {
    let dir = store.dir.join("tmp");
    fs_err::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("cannot write in", &dir))?;
    Ok(tmp.into_temp_path())
}

/// Publishes `tmp` as object `hex`; returns its path (for [`make_durable`]).
fn publish(store: &Store, tmp: tempfile::TempPath, hex: &str) -> Result<PathBuf, CacheError> {
    let dst = object_path(store, hex);
    let parent = dst.parent().expect("fan-out dir");
    fs_err::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    set_readonly(&tmp, true);
    tmp.persist(&dst).map_err(|e| CacheError::Io {
        op: "cannot store",
        path: dst.clone(),
        source: e.error,
    })?;
    Ok(dst)
}

/// Stores the content of `src` as object `hex`: the new object's path, or `None` when the
/// store already had it.
pub(crate) fn insert_file(
    store: &Store,
    src: &Path,
    hex: &str,
) -> Result<Option<PathBuf>, CacheError> {
    if object_path(store, hex).exists() {
        return Ok(None);
    }
    let tmp = temp_path(store)?;
    let _ = std::fs::remove_file(&tmp);
    if !reflink(src, &tmp) {
        std::fs::copy(src, &tmp).map_err(io_err("cannot copy into the cache", src))?;
    }
    publish(store, tmp, hex).map(Some)
}

/// Publishes `tmp` (a file in the store's `tmp/`, say a download) as object `hex` after
/// checking that its content hashes to `hex`: the new object's path, or `None` when the
/// store already had it. A file that does not match is deleted and reported corrupt.
pub(crate) fn import_file(
    store: &Store,
    tmp: tempfile::TempPath,
    hex: &str,
) -> Result<Option<PathBuf>, CacheError> {
    if object_path(store, hex).exists() {
        return Ok(None);
    }
    let size = fs_err::metadata(&tmp)
        .map_err(io_err("cannot read", &tmp))?
        .len();
    let actual = hash_file(&tmp, size)?;
    if actual != hex {
        return Err(CacheError::Corrupt {
            path: tmp.to_path_buf(),
            why: format!("its content hashes to {actual}, not {hex}"),
        });
    }
    publish(store, tmp, hex).map(Some)
}

/// The file of object `hex` (a file's hash, or a directory manifest's bare hash), if the
/// store has it.
pub(crate) fn object_file(store: &Store, hex: &str) -> Option<PathBuf> {
    let path = object_path(store, hex);
    path.is_file().then_some(path)
}

/// A new empty temporary file in the store (removed on drop unless published).
pub(crate) fn temp_file(store: &Store) -> Result<tempfile::TempPath, CacheError> {
    temp_path(store)
}

/// Stores `bytes` as object `hex`, like [`insert_file`].
pub(crate) fn insert_bytes(
    store: &Store,
    hex: &str,
    bytes: &[u8],
) -> Result<Option<PathBuf>, CacheError> {
    if object_path(store, hex).exists() {
        return Ok(None);
    }
    let tmp = temp_path(store)?;
    fs_err::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
    publish(store, tmp, hex).map(Some)
}

/// Makes the objects just published durable (their content and their names), so that a
/// run-cache entry or lock file written afterwards never names an object a power loss
/// took away. On Linux one `syncfs` on the store's file system does it whatever the number
/// of objects (a stage's out can be thousands of files); elsewhere each object, then each
/// folder that gained one, is synced.
pub(crate) fn make_durable(store: &Store, published: &[PathBuf]) -> Result<(), CacheError> {
    if published.is_empty() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = fs_err::File::open(&store.dir).map_err(io_err("cannot sync", &store.dir))?;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io_err("cannot sync", &store.dir)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut dirs = BTreeSet::new();
        for path in published {
            fs_err::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("cannot sync", path))?;
            if let Some(fan) = path.parent() {
                dirs.insert(fan.to_owned());
            }
        }
        dirs.insert(store.dir.join("objects"));
        for dir in dirs {
            crate::atomic_write::sync_dir(&dir).map_err(io_err("cannot sync", &dir))?;
        }
        Ok(())
    }
}

fn read_manifest(store: &Store, hash: &str) -> Option<String> {
    std::fs::read_to_string(object_path(store, hash)).ok()
}

pub(crate) fn can_restore(store: &Store, hash: &str) -> bool {
    if !is_dir_hash(hash) {
        return object_path(store, hash).exists();
    }
    let Some(manifest) = read_manifest(store, hash) else {
        return false;
    };
    parse_manifest(&manifest)
        .iter()
        .all(|(h, _, _)| object_path(store, h).exists())
}

pub(crate) fn restore(store: &Store, rel: &str, hash: &str) -> Result<(), CacheError> {
    let dst = store.root.join(rel);
    remove_path(&dst)?;
    if !is_dir_hash(hash) {
        return restore_file(store, rel, hash, &dst);
    }
    let manifest = checked_manifest(store, hash, rel)?;
    fs_err::create_dir_all(&dst).map_err(io_err("cannot create", &dst))?;
    for (h, _, inner) in parse_manifest(&manifest) {
        restore_file(store, &format!("{rel}/{inner}"), h, &dst.join(inner))?;
    }
    Ok(())
}

/// The manifest of the directory `hash`, checked against its hash.
fn checked_manifest(store: &Store, hash: &str, what: &str) -> Result<String, CacheError> {
    let manifest = read_manifest(store, hash).ok_or_else(|| CacheError::MissingObject {
        path: what.to_owned(),
        hash: hash.to_owned(),
    })?;
    let bare = hash.strip_suffix(DIR_SUFFIX).unwrap_or(hash);
    if super::hash::hash_bytes(manifest.as_bytes()) != bare {
        quarantine(store, bare)?;
        return Err(CacheError::Corrupt {
            path: object_path(store, hash),
            why: "directory manifest does not match its hash (quarantined)".into(),
        });
    }
    Ok(manifest)
}

pub(crate) fn manifest(
    store: &Store,
    hash: &str,
) -> Result<Vec<(String, u64, String)>, CacheError> {
    let manifest = checked_manifest(store, hash, hash)?;
    Ok(parse_manifest(&manifest)
        .into_iter()
        .map(|(h, size, path)| (h.to_owned(), size, path.to_owned()))
        .collect())
}

pub(crate) fn export_dir(store: &Store, hash: &str, dest: &Path) -> Result<(), CacheError> {
    let what = dest.display().to_string();
    let manifest = checked_manifest(store, hash, &what)?;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pipe-checkout-")
        .tempdir_in(parent)
        .map_err(io_err("cannot write in", parent))?;
    for (h, _, inner) in parse_manifest(&manifest) {
        let src = object_path(store, h);
        if !src.exists() {
            return Err(CacheError::MissingObject {
                path: format!("{what}/{inner}"),
                hash: h.to_owned(),
            });
        }
        check_object(store, h)?;
        let dst = tmp.path().join(inner);
        if let Some(dir) = dst.parent() {
            fs_err::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        }
        if !reflink(&src, &dst) {
            std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &dst))?;
        }
        set_readonly(&dst, false);
    }
    // Swap: the old folder moves aside first, so a failure leaves it in place.
    let old = parent.join(format!(
        ".pipe-old-{}",
        tmp.path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let had_old = std::fs::symlink_metadata(dest).is_ok();
    if had_old {
        fs_err::rename(dest, &old).map_err(io_err("cannot move aside", dest))?;
    }
    if let Err(e) = std::fs::rename(tmp.path(), dest) {
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        return Err(io_err("cannot replace", dest)(e));
    }
    if had_old {
        remove_path(&old)?;
    }
    Ok(())
}

/// Reflink, else read-only hardlink, else copy; then teach the stat cache the hash.
fn restore_file(store: &Store, rel: &str, hash: &str, dst: &Path) -> Result<(), CacheError> {
    let src = object_path(store, hash);
    if !src.exists() {
        return Err(CacheError::MissingObject {
            path: rel.to_owned(),
            hash: hash.to_owned(),
        });
    }
    check_object(store, hash)?;
    if let Some(parent) = dst.parent() {
        fs_err::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    }
    if reflink(&src, dst) {
        set_readonly(dst, false);
    } else if std::fs::hard_link(&src, dst).is_err() {
        std::fs::copy(&src, dst).map_err(io_err("cannot restore", dst))?;
        set_readonly(dst, false);
    }
    if let Ok(meta) = std::fs::metadata(dst) {
        store
            .stat
            .lock()
            .expect("stat cache")
            .insert(rel, Stamp::of(&meta), hash);
    }
    Ok(())
}

/// Rehashes an object before it is restored. A restored out may be a hardlink to the
/// object, and someone who can write to it (root ignores the read-only bit) writes into
/// the store too: checking here turns that into a rerun instead of a silently wrong out.
fn check_object(store: &Store, hash: &str) -> Result<(), CacheError> {
    let path = object_path(store, hash);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    if hash_file(&path, size)? == hash {
        return Ok(());
    }
    quarantine(store, hash)?;
    Err(CacheError::Corrupt {
        path,
        why: "content does not match its hash (quarantined)".into(),
    })
}

fn quarantine(store: &Store, hex: &str) -> Result<(), CacheError> {
    let dir = store.dir.join("quarantine");
    fs_err::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let from = object_path(store, hex);
    fs_err::rename(&from, dir.join(hex)).map_err(io_err("cannot quarantine", &from))
}

/// Removes a file or directory tree (outs before a stage runs, or before a restore).
pub(crate) fn remove_path(path: &Path) -> Result<(), CacheError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path).map_err(io_err("cannot remove", path)),
        Ok(_) => fs_err::remove_file(path).map_err(io_err("cannot remove", path)),
        Err(_) => Ok(()),
    }
}

fn set_readonly(path: &Path, readonly: bool) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mut perms = meta.permissions();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            perms.set_mode(if readonly { 0o444 } else { 0o644 });
        }
        #[cfg(not(unix))]
        perms.set_readonly(readonly);
        let _ = std::fs::set_permissions(path, perms);
    }
}

/// Copy-on-write clone of `src` to a new file `dst`; false when the file system can't.
fn reflink(src: &Path, dst: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const FICLONE: libc::c_ulong = 0x4004_9409;
        let Ok(from) = std::fs::File::open(src) else {
            return false;
        };
        let Ok(to) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
        else {
            return false;
        };
        // SAFETY: both descriptors are open for the duration of the call.
        let ok = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0;
        if !ok {
            drop(to);
            let _ = std::fs::remove_file(dst);
        }
        ok
    }
    #[cfg(target_os = "macos")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let (Ok(s), Ok(d)) = (
            CString::new(src.as_os_str().as_bytes()),
            CString::new(dst.as_os_str().as_bytes()),
        ) else {
            return false;
        };
        // SAFETY: valid NUL-terminated paths.
        unsafe { libc::clonefile(s.as_ptr(), d.as_ptr(), 0) == 0 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = (src, dst);
        false
    }
}

/// Every object file as (hex name, path).
fn all_objects(store: &Store) -> Vec<(String, PathBuf)> {
    let dir = store.dir.join("objects");
    walkdir::WalkDir::new(&dir)
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let fan = e.path().parent()?.file_name()?.to_str()?.to_owned();
            let rest = e.file_name().to_str()?.to_owned();
            Some((format!("{fan}{rest}"), e.into_path()))
        })
        .collect()
}

pub(crate) fn gc(store: &Store, keep_runs: usize, dry_run: bool) -> Result<GcReport, CacheError> {
    let mut report = GcReport::default();
    let mut roots: Vec<String> = Vec::new();
    for lock in super::runs::registered_locks(store) {
        roots.extend(super::runs::hashes_in_lock(&lock));
    }
    roots.extend(super::runs::recorded_versions(store));
    let mut runs = super::runs::all(store);
    runs.sort_by_key(|r| std::cmp::Reverse(r.1.created_ms));
    for (i, (path, entry)) in runs.into_iter().enumerate() {
        if i < keep_runs {
            roots.extend(entry.outs.into_values());
        } else {
            report.runs_removed += 1;
            if !dry_run {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let mut keep = BTreeSet::new();
    for root in roots {
        let bare = root.strip_suffix(DIR_SUFFIX).unwrap_or(&root).to_owned();
        if is_dir_hash(&root)
            && let Some(m) = read_manifest(store, &root)
        {
            keep.extend(parse_manifest(&m).into_iter().map(|(h, _, _)| h.to_owned()));
        }
        keep.insert(bare);
    }
    // Temporary files left by a killed run (gc holds the workspace lock, so none is live).
    if !dry_run && let Ok(dir) = std::fs::read_dir(store.dir.join("tmp")) {
        for entry in dir.flatten() {
            report.bytes_freed += entry.metadata().map_or(0, |m| m.len());
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (hex, path) in all_objects(store) {
        if keep.contains(&hex) {
            report.objects_kept += 1;
            continue;
        }
        report.objects_removed += 1;
        report.bytes_freed += std::fs::metadata(&path).map_or(0, |m| m.len());
        if !dry_run {
            fs_err::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        }
    }
    Ok(report)
}

/// How much the object store holds.
#[derive(Debug, Default, serde::Serialize)]
pub struct StoreUsage {
    /// Objects.
    pub objects: usize,
    /// Their bytes.
    pub object_bytes: u64,
    /// Run-cache entries.
    pub runs: usize,
}

pub(crate) fn usage(store: &Store) -> StoreUsage {
    let objects = all_objects(store);
    StoreUsage {
        objects: objects.len(),
        object_bytes: objects
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum(),
        runs: super::runs::all(store).len(),
    }
}

pub(crate) fn verify(store: &Store) -> Result<VerifyReport, CacheError> {
    let objects = all_objects(store);
    let bad: Vec<(String, PathBuf)> = objects
        .par_iter()
        .filter(|(hex, path)| {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            hash_file(path, size).map_or(true, |h| &h != hex)
        })
        .cloned()
        .collect();
    for (hex, _) in &bad {
        quarantine(store, hex)?;
    }
    Ok(VerifyReport {
        checked: objects.len(),
        corrupt: bad.into_iter().map(|(h, _)| h).collect(),
    })
}
