//! The workspace cache: a blake3 content-addressed object store, a stat cache so
//! unchanged files are never rehashed, and a run cache from stage fingerprints to outs.
//!
//! # What goes into a stage key (fingerprint)
//!
//! The key itself is computed in [`crate::exec::fingerprint`]; this table is here because
//! the cache is what the key addresses. A stage reruns when its key changes.
//!
//! | Input                              | Why it is in the key                              |
//! |------------------------------------|---------------------------------------------------|
//! | key schema version                 | changing the key's layout must invalidate keys    |
//! | stage kind and its `impl_version`  | a new `train` implementation produces new outs    |
//! | `cmd` after templating             | the command *is* the stage                        |
//! | `with` after templating            | the kind's configuration                          |
//! | declared deps, outs, metrics paths | renaming an out is a different stage              |
//! | values of the params it reads      | `params: [train.lr]` -> the value of `train.lr`    |
//! | content hash of every dep          | files by content, directories by manifest         |
//!
//! Deliberately left out: mtimes (a `touch` or a fresh clone must not rerun anything),
//! absolute paths (moving or cloning the workspace keeps the cache valid), the stage name
//! for matrix expansions is in the definition only through the rendered values, `needs`
//! (order, not content), `-j`/thread counts, resources, `frozen`/`always_run` (they
//! decide *whether* to look at the key, not what it is), environment variables, and
//! timestamps of any kind.
//!
//! # On-disk layout (`<root>/cache/`)
//!
//! ```text
//! cache/run.lock                     workspace lock, holder PID inside (exec::lock)
//! cache/logs/<pipeline>/<stage>.log  stdout+stderr of the last run of a stage
//! cache/logs/<pipeline>/<stage>.json when it last ran, how long, exit status
//! cache/v1/objects/ab/cdef...        content, named by blake3 hex (two-level fan-out)
//! cache/v1/runs/<fingerprint>.json   run cache: fingerprint -> outs {path: hash}
//! cache/v1/stat                      stat cache: `hash size mtime_ns inode path` lines
//! cache/v1/locks                     lock files that reference objects (for gc)
//! cache/v1/quarantine/<hash>         objects found corrupt (by `verify` or a restore)
//! cache/v1/data/versions.jsonl       dataset versions (crate::data::version); gc keeps them
//! cache/v1/tmp/                      objects being written (cleared by `pipe gc`)
//! cache/activations/v1/<key>.safetensors  frozen-block activations (see [`activations`])
//! cache/eval-base/v1/<key>.json      base-model evaluation scores (see [`eval_base`])
//! ```
//!
//! `pipe gc` deletes objects nothing refers to, old run-cache entries, and, in the two
//! caches outside `v1/` (pure functions of their inputs, recomputed when missing), the
//! files unused for longer than `--activation-max-age` days.
//!
//! A file's hash is 64 hex digits of blake3 over its bytes. A directory's hash is the same
//! over its *manifest* with `.dir` appended (`ab12....dir`), and the manifest is itself an
//! object: one `hash<TAB>size<TAB>relative/path` line per file, sorted by path. Empty
//! directories are not represented (like git).
//!
//! Objects are read-only. Outs are restored by reflink, else read-only hardlink, else
//! copy; the executor deletes a stage's outs before running it, so a command that writes
//! with `>` never writes through a hardlink into the store. Someone else still can (root
//! ignores the read-only bit), so every object is rehashed before it is restored; a
//! corrupt one is moved to `quarantine/` and the stage reruns instead.
//!
//! # Debugging
//!
//! - `pipe status --json` prints each stale stage with its reasons (the `DirtyReason`s).
//! - `pipe.lock` (next to the pipeline) holds the last fingerprint, dep/param/out hashes
//!   of every stage; `git diff` on it says what changed between two runs.
//! - `b3sum path` gives the same hash for a file as pipe does.
//! - Deleting `cache/v1/stat` is always safe: everything is rehashed once.
//! - `pipe cache verify` rehashes every object and quarantines corrupt ones.

pub mod activations;
pub mod eval_base;
mod hash;
mod objects;
mod runs;
mod stat;
mod walk;

pub use hash::{DIR_SUFFIX, hash_bytes, is_dir_hash};
pub use hash::{hash_file, update_from_file};
pub use objects::{GcReport, StoreUsage, VerifyReport};
pub use runs::RunEntry;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing a file failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done ("cannot read", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An object needed for a restore is missing from the store.
    #[error("object {hash} for `{path}` is missing from the cache")]
    MissingObject {
        /// The out being restored.
        path: String,
        /// The missing object.
        hash: String,
    },
    /// A stored file is not what its name says.
    #[error("cache entry {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// A closure turning an I/O error of `op` on `path` into a [`CacheError`].
pub fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + use<> {
    let path = path.to_owned();
    move |source| CacheError::Io { op, path, source }
}

/// The cache of one workspace. Shared between threads (`&Store` is `Sync`).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    dir: PathBuf,
    stat: Mutex<stat::StatCache>,
    /// Hashes computed in this process, so a directory that several stages read is walked
    /// once per run. Every write through the store (store, restore, remove) invalidates
    /// the overlapping entries; files changed behind pipe's back during a run are seen by
    /// the next run.
    memo: Mutex<HashMap<String, Option<String>>>,
}

impl Store {
    /// Opens the cache of the workspace at `root` (created on first write).
    pub fn open(root: &Path) -> Self {
        let dir = root.join("cache").join("v1");
        let stat = stat::StatCache::load(&dir.join("stat"));
        Self {
            root: root.to_owned(),
            dir,
            stat: Mutex::new(stat),
            memo: Mutex::new(HashMap::new()),
        }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/cache/v1`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hash of the file or directory at the workspace-relative `rel`, or `None` when
    /// it does not exist. Uses the stat cache; only new or changed files are read.
    pub fn hash_path(&self, rel: &str) -> Result<Option<String>, CacheError> {
        if let Some(known) = self.memo.lock().expect("memo").get(rel) {
            return Ok(known.clone());
        }
        let hash = hash::hash_path(self, rel, false)?.map(|h| h.hash);
        self.memo
            .lock()
            .expect("memo")
            .insert(rel.to_owned(), hash.clone());
        Ok(hash)
    }

    fn forget(&self, rel: &str) {
        self.memo
            .lock()
            .expect("memo")
            .retain(|k, _| !crate::spec::path_within(k, rel) && !crate::spec::path_within(rel, k));
    }

    /// Hashes `rel` and copies its content into the object store (outs after a run).
    pub fn store_path(&self, rel: &str) -> Result<Option<String>, CacheError> {
        self.forget(rel);
        let Some(hashed) = hash::hash_path(self, rel, true)? else {
            return Ok(None);
        };
        let mut published = Vec::new();
        for (file, hex) in &hashed.files {
            published.extend(objects::insert_file(self, file, hex)?);
        }
        if let Some(manifest) = &hashed.manifest {
            published.extend(objects::insert_bytes(
                self,
                &hashed.hash[..64],
                manifest.as_bytes(),
            )?);
        }
        objects::make_durable(self, &published)?;
        self.memo
            .lock()
            .expect("memo")
            .insert(rel.to_owned(), Some(hashed.hash.clone()));
        Ok(Some(hashed.hash))
    }

    /// Whether every object needed to restore `hash` is in the store.
    pub fn can_restore(&self, hash: &str) -> bool {
        objects::can_restore(self, hash)
    }

    /// Replaces whatever is at `rel` with the content `hash` names.
    pub fn restore(&self, rel: &str, hash: &str) -> Result<(), CacheError> {
        self.forget(rel);
        objects::restore(self, rel, hash)?;
        self.memo
            .lock()
            .expect("memo")
            .insert(rel.to_owned(), Some(hash.to_owned()));
        Ok(())
    }

    /// The files of the directory `hash` names, as `(hash, size, relative path)` rows
    /// sorted by path, from its manifest object (checked against its hash).
    pub fn manifest(&self, hash: &str) -> Result<Vec<(String, u64, String)>, CacheError> {
        objects::manifest(self, hash)
    }

    /// Copies the directory `hash` names to `dest`, anywhere on disk, as ordinary writable
    /// files (not links into the store: a checked-out dataset is meant to be edited).
    /// Every object is rehashed first. `dest` is replaced whole: the copy is built beside
    /// it and renamed into place.
    pub fn export_dir(&self, hash: &str, dest: &Path) -> Result<(), CacheError> {
        objects::export_dir(self, hash, dest)
    }

    /// The objects `hash` is made of, each once: itself for a file; for a directory its
    /// manifest (by the manifest's bare hash) and then every file. The manifest must be in
    /// the store (its files need not be).
    pub fn object_closure(&self, hash: &str) -> Result<Vec<String>, CacheError> {
        let Some(bare) = hash.strip_suffix(DIR_SUFFIX) else {
            return Ok(vec![hash.to_owned()]);
        };
        let mut all = vec![bare.to_owned()];
        let mut seen = std::collections::BTreeSet::new();
        for (file, _, _) in self.manifest(hash)? {
            if seen.insert(file.clone()) {
                all.push(file);
            }
        }
        Ok(all)
    }

    /// The file holding object `hex` (as [`Self::object_closure`] names them), if present.
    pub fn object_file(&self, hex: &str) -> Option<PathBuf> {
        objects::object_file(self, hex)
    }

    /// A new temporary file inside the store, to download an object into.
    pub fn temp_file(&self) -> Result<tempfile::TempPath, CacheError> {
        objects::temp_file(self)
    }

    /// Adds the downloaded file `tmp` as object `hex` if its content hashes to `hex`
    /// ([`CacheError::Corrupt`] otherwise, and nothing is stored). Call
    /// [`Self::make_durable`] with the returned paths before recording anything that names
    /// the objects.
    pub fn import_object(
        &self,
        tmp: tempfile::TempPath,
        hex: &str,
    ) -> Result<Option<PathBuf>, CacheError> {
        objects::import_file(self, tmp, hex)
    }

    /// Makes newly added objects durable (see [`Self::import_object`]).
    pub fn make_durable(&self, published: &[PathBuf]) -> Result<(), CacheError> {
        objects::make_durable(self, published)
    }

    /// Records a run-cache entry that was made elsewhere (a pulled one), as is.
    pub fn import_run(&self, fingerprint: &str, entry: &RunEntry) -> Result<(), CacheError> {
        runs::import(self, fingerprint, entry)
    }

    /// Deletes the file or directory at `rel` (a stage's outs before it runs).
    pub fn remove(&self, rel: &str) -> Result<(), CacheError> {
        self.forget(rel);
        objects::remove_path(&self.root.join(rel))
    }

    /// Writes the stat cache back if it changed.
    pub fn save_stat(&self) -> Result<(), CacheError> {
        self.stat
            .lock()
            .expect("stat cache poisoned")
            .save(&self.dir.join("stat"))
    }

    /// Records a run: `fingerprint` produced `outs`.
    pub fn put_run(
        &self,
        fingerprint: &str,
        stage: &str,
        outs: &BTreeMap<String, String>,
    ) -> Result<(), CacheError> {
        runs::put(self, fingerprint, stage, outs)
    }

    /// The outs an earlier run with `fingerprint` produced.
    pub fn get_run(&self, fingerprint: &str) -> Option<RunEntry> {
        runs::get(self, fingerprint)
    }

    /// Remembers a lock file so `gc` keeps what it references.
    pub fn register_lock(&self, lock: &Path) -> Result<(), CacheError> {
        runs::register_lock(self, lock)
    }

    /// Deletes objects referenced by no registered lock file and by none of the newest
    /// `keep_runs` run-cache entries (older run entries are dropped too).
    pub fn gc(&self, keep_runs: usize, dry_run: bool) -> Result<GcReport, CacheError> {
        objects::gc(self, keep_runs, dry_run)
    }

    /// How many objects and run entries the store holds, and their bytes.
    pub fn usage(&self) -> StoreUsage {
        objects::usage(self)
    }

    /// Rehashes every object; moves corrupt ones to `quarantine/`.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        objects::verify(self)
    }
}

#[cfg(test)]
mod tests;
