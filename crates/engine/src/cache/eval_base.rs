//! The base-model score cache's files, as the engine sees them: where they live, marking
//! one as used, and which `pipe gc` deletes. The entries are computed, written and read by
//! `pipe_mlx_core::stages::base_scores` (an evaluate stage scores the base model once per
//! workspace for a given model, records and generation budget); the `pipe` binary does not
//! link MLX, so what gc needs is here.
//!
//! ```text
//! <root>/cache/eval-base/v1/<key>.json             one evaluation's base scores
//! <root>/cache/eval-base/v1/.<key>.json.*.tmp.json being written (crate::atomic_write)
//! ```
//!
//! Like the activation cache, these files are a cache, not results: nothing refers to
//! them and a missing one is recomputed. gc deletes entries unused (not read or written)
//! for longer than the activation cache's maximum age, and temporary files older than a
//! day (no write takes that long).

use super::{CacheError, io_err};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The folder, under the workspace root.
pub const DIR: &str = "cache/eval-base/v1";

/// A temporary file older than this is a crashed writer's.
const TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The folder of the workspace at `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join(DIR)
}

/// Marks an entry as just used (gc deletes entries by how long they went unused).
pub fn touch(entry: &Path) {
    super::activations::touch(entry);
}

/// Whether `name` is an entry's: 64 hex digits, `.json`.
fn is_entry(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|key| key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What gc did: the activation cache's report, where every entry removed is `expired`
/// (this cache has no size budget).
pub use super::activations::GcReport;

/// Deletes the entries of `dir` unused for longer than `max_age` as of `now`, and stale
/// temporary files; a dry run deletes nothing. A missing folder is an empty cache.
pub fn gc(
    dir: &Path,
    max_age: Duration,
    now: SystemTime,
    dry_run: bool,
) -> Result<GcReport, CacheError> {
    let mut report = GcReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_err("cannot list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        let path = entry.path();
        let remove = if is_entry(&name) {
            if age > max_age {
                report.entries_removed += 1;
                report.expired += 1;
                true
            } else {
                report.entries_kept += 1;
                report.bytes_kept += meta.len();
                false
            }
        } else if name.starts_with('.') && name.contains(".tmp") && age > TEMP_MAX_AGE {
            report.temp_removed += 1;
            true
        } else {
            false
        };
        if remove {
            report.bytes_freed += meta.len();
            if !dry_run {
                match std::fs::remove_file(&path) {
                    // A concurrent gc got there first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.map_err(io_err("cannot remove", &path))?,
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn file(dir: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; bytes]).unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn deletes_entries_unused_too_long_and_stale_temporary_files() {
        let root = tempfile::tempdir().unwrap();
        let d = dir(root.path());
        std::fs::create_dir_all(&d).unwrap();
        let key = |c: char| c.to_string().repeat(64);
        let old = file(&d, &format!("{}.json", key('a')), 10, 40 * DAY);
        let used = file(&d, &format!("{}.json", key('b')), 20, 40 * DAY);
        touch(&used);
        let fresh = file(&d, &format!("{}.json", key('c')), 30, 2 * DAY);
        let crashed = file(&d, &format!(".{}.json.x1.tmp.json", key('d')), 5, 2 * DAY);
        let writing = file(
            &d,
            &format!(".{}.json.x2.tmp.json", key('e')),
            7,
            Duration::ZERO,
        );
        let stranger = file(&d, "notes.txt", 3, 400 * DAY);

        let dry = gc(&d, 30 * DAY, SystemTime::now(), true).unwrap();
        assert_eq!((dry.entries_removed, dry.temp_removed), (1, 1), "{dry:?}");
        assert!(
            old.exists() && crashed.exists(),
            "a dry run deletes nothing"
        );

        let done = gc(&d, 30 * DAY, SystemTime::now(), false).unwrap();
        assert_eq!(done, dry);
        assert_eq!(
            done,
            GcReport {
                entries_removed: 1,
                expired: 1,
                temp_removed: 1,
                bytes_freed: 15,
                entries_kept: 2,
                bytes_kept: 50,
            }
        );
        assert!(!old.exists() && !crashed.exists());
        assert!(used.exists() && fresh.exists() && writing.exists() && stranger.exists());
    }

    #[test]
    fn a_missing_folder_is_an_empty_cache() {
        let root = tempfile::tempdir().unwrap();
        let report = gc(&dir(root.path()), DAY, SystemTime::now(), false).unwrap();
        assert_eq!(report, GcReport::default());
    }
}
