//! Listing every file under a directory with its stat stamp, as fast as the OS allows.
//!
//! `walkdir` stats each entry by its full path, so the kernel resolves every path
//! component again; std's `DirEntry::metadata` stats relative to the open directory
//! (`fstatat`), which is several times cheaper on deep trees. Subdirectories of the top
//! level are walked on a few scoped threads: stat-heavy walks are syscall-bound and scale
//! with cores. Symlinks are followed (a symlinked directory at most [`MAX_DEPTH`] deep, so
//! a loop ends in an error rather than forever).

use super::stat::Stamp;
use super::{CacheError, io_err};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const MAX_DEPTH: usize = 64;

/// A file found by the walk: its path relative to the walked directory, and its stamp.
pub(crate) type Found = (String, Stamp);

/// Every file under `dir` (relative paths with `/`), unsorted.
pub(crate) fn files(dir: &Path) -> Result<Vec<Found>, CacheError> {
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    read_one(dir, "", &mut out, &mut subdirs)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if subdirs.len() < 2 || threads < 2 {
        for (rel, _) in subdirs {
            walk(&dir.join(&rel), &rel, &mut out)?;
        }
        return Ok(out);
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(subdirs.len()) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                let mut result = Ok(());
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, _)) = subdirs.get(k) else {
                        break;
                    };
                    result = walk(&dir.join(rel), rel, &mut mine);
                    if result.is_err() {
                        break;
                    }
                }
                results
                    .lock()
                    .expect("walk results")
                    .push(result.map(|()| mine));
            });
        }
    });
    for part in results.into_inner().expect("walk results") {
        out.extend(part?);
    }
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Found>) -> Result<(), CacheError> {
    let mut subdirs = Vec::new();
    read_one(dir, prefix, out, &mut subdirs)?;
    for (rel, d) in subdirs {
        if d > MAX_DEPTH {
            return Err(CacheError::Corrupt {
                path: dir.join(&rel),
                why: format!("more than {MAX_DEPTH} directories deep (a symlink loop?)"),
            });
        }
        // `rel` is `prefix/name`: the subdirectory is `dir/name`.
        walk(&dir.join(&rel[prefix.len() + 1..]), &rel, out)?;
    }
    Ok(())
}

/// Reads one directory: files go to `out`, subdirectories (relative path, depth) to `subdirs`.
fn read_one(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<Found>,
    subdirs: &mut Vec<(String, usize)>,
) -> Result<(), CacheError> {
    let depth = prefix.matches('/').count() + 1;
    for entry in std::fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(io_err("cannot stat", &entry.path()))?;
        let meta = if kind.is_symlink() {
            std::fs::metadata(entry.path()).map_err(io_err("cannot follow", &entry.path()))?
        } else if kind.is_dir() {
            subdirs.push((rel, depth));
            continue;
        } else {
            entry
                .metadata()
                .map_err(io_err("cannot stat", &entry.path()))?
        };
        if meta.is_dir() {
            subdirs.push((rel, depth));
        } else {
            out.push((rel, Stamp::of(&meta)));
        }
    }
    Ok(())
}
