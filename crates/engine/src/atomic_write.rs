//! Writing a file so that readers see either the old content or the new, never a part:
//! a temporary file in the same directory, synced, then renamed over the target. Every
//! file pipe writes whole (stage outs, reports, splits, lock files, cache entries,
//! downloads) goes through here; append-only logs and journals do not need to.
//!
//! - [`write_atomic`] and [`write_json`] for bytes in memory;
//! - [`AtomicFile`] to stream into the file (a download checked by its hash as it
//!   arrives), or to hand the temporary path to a writer that takes a path (MLX's
//!   safetensors writer); nothing is published unless [`AtomicFile::commit`] is called.
//!
//! The temporary file is named `.<name>.<random>.tmp<.ext>` beside the target (keeping the
//! target's extension, which MLX's writers insist on), so a crash leaves a recognisable
//! hidden file, never a half-written one under the real name. It is created with the
//! permissions of a freshly created file (0666 less the umask), not the 0600 of a
//! temporary file.
//!
//! Power loss: a commit syncs the file, renames it, then syncs the directory, so once
//! [`AtomicFile::commit`] returns the new content is on disk under its name; a write that
//! another depends on (an object before the lock file naming it) is durable first.
//! [`sync_dir`] is the directory half, for callers that rename things themselves;
//! docs/reliability.md lists every durable write and its order.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file being written in place of `dest`: write to it (it implements [`Write`]), then
/// [`commit`](Self::commit). Dropped without a commit, it is deleted and `dest` is left as
/// it was.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    sync: bool,
}

impl AtomicFile {
    /// Starts writing `dest`, creating its directory if needed.
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs_err::create_dir_all(dir)?;
        let name = dest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let suffix = match dest.extension() {
            Some(ext) => format!(".tmp.{}", ext.to_string_lossy()),
            None => ".tmp".to_owned(),
        };
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The mode passed to open(2), so the umask applies as for any new file.
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder.tempfile_in(dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            )
        })?;
        Ok(Self {
            tmp,
            dest: dest.to_owned(),
            sync: true,
        })
    }

    /// Skips the `fsync` before the rename: for files whose loss in a crash costs nothing
    /// (a progress display) and that are replaced often.
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// The temporary file's path, for a writer that takes a path rather than a stream. It
    /// must write to this path in place (truncating is fine; replacing the file is not).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs the file (unless [`without_sync`](Self::without_sync)) and renames it over
    /// the target.
    pub fn commit(mut self) -> std::io::Result<()> {
        let cannot = |e: std::io::Error, dest: &Path| {
            std::io::Error::new(e.kind(), format!("cannot write {}: {e}", dest.display()))
        };
        self.tmp.flush().map_err(|e| cannot(e, &self.dest))?;
        if self.sync {
            self.tmp
                .as_file()
                .sync_all()
                .map_err(|e| cannot(e, &self.dest))?;
        }
        self.tmp
            .persist(&self.dest)
            .map_err(|e| cannot(e.error, &self.dest))?;
        if self.sync {
            let dir = self
                .dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            sync_dir(dir).map_err(|e| cannot(e, &self.dest))?;
        }
        Ok(())
    }
}

/// Makes the entries of `dir` durable (names created, renamed or removed in it), as
/// `fsync` on the directory does; after a rename, the file's own sync is not enough for the
/// new name to survive a power loss. A no-op where directories cannot be opened (Windows).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tmp.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// The temporary files an [`AtomicFile`] for `dest` may have left beside it when its
/// process was killed before committing: `.<name>.<6 random>.tmp` and `.tmp.<ext>`. The
/// run that takes over from a killed one removes them with the killed stage's outs.
pub fn temporary_files_of(dest: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.strip_prefix(&prefix)
                .and_then(|rest| rest.split_once(".tmp"))
                .is_some_and(|(random, ext)| {
                    random.len() == 6
                        && random.chars().all(|c| c.is_ascii_alphanumeric())
                        && (ext.is_empty() || ext.starts_with('.'))
                })
        })
        .map(|e| e.path())
        .collect()
}

/// Writes `bytes` to `path` atomically, creating the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    })?;
    file.commit()
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomic(&path, b"one").unwrap();
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(names(&dir.path().join("sub")), ["out.json"]);
    }

    #[test]
    fn temporary_files_of_finds_what_a_killed_writer_leaves_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("report.html");
        let file = AtomicFile::create(&dest).unwrap();
        let tmp = file.path().to_owned();
        // As a `kill -9` would leave it: no drop, no cleanup.
        std::mem::forget(file);
        for other in [
            "report.html",
            ".report.html.keep",
            ".other.html.abc123.tmp.html",
        ] {
            std::fs::write(dir.path().join(other), "x").unwrap();
        }
        assert_eq!(temporary_files_of(&dest), [tmp]);
    }

    #[test]
    fn an_uncommitted_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        write_atomic(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half of the new").unwrap();
        // The temporary name is hidden and keeps the extension.
        let tmp = file
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            tmp.starts_with(".report.html.") && tmp.ends_with(".tmp.html"),
            "{tmp}"
        );
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["report.html"]);
    }

    #[test]
    fn a_writer_that_takes_a_path_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        let file = AtomicFile::create(&path).unwrap().without_sync();
        std::fs::write(file.path(), b"tensors").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"tensors");
        assert_eq!(names(dir.path()), ["weights.safetensors"]);
    }

    #[cfg(unix)]
    #[test]
    fn files_get_the_permissions_of_a_new_file_not_of_a_temporary_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe.lock");
        write_atomic(&path, b"x").unwrap();
        // Compare with a file created the ordinary way under the same umask.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
    }
}
