//! The stat cache: (path, size, mtime_ns, inode) -> hash, so a file that did not change
//! since it was last hashed is not read again.
//!
//! Stored as plain text lines (`hash size mtime_ns inode path`): parsing 10,000 lines takes
//! about a millisecond, far less than JSON, and the file can be read with `grep`.
//!
//! Racy entries: file timestamps come from a coarse kernel clock, so a file written twice
//! within one tick keeps its mtime. Entries whose mtime is too close to the moment they
//! were hashed are not trusted later (the rule of git's index), at the price of hashing
//! such a file again next time. "Too close" is [`RACY_FINE_NS`] on file systems with
//! sub-second timestamps (ext4, APFS, btrfs: a clock tick is a few milliseconds) and
//! [`RACY_COARSE_NS`] when the mtime has no sub-second part (HFS+, FAT, some network
//! file systems), so that a multi-GB out written just before its stage ended is not
//! rehashed by the next run on modern file systems.

use super::CacheError;
use std::collections::HashMap;
use std::path::Path;

/// Files modified this recently (relative to when they were hashed) are not cached, on
/// file systems with fine timestamps...
const RACY_FINE_NS: i128 = 100_000_000;
/// ...and on those whose timestamps are whole seconds (or two).
const RACY_COARSE_NS: i128 = 2_000_000_000;

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                size: meta.len(),
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                inode: meta.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Stamp {
                size: meta.len(),
                mtime_ns,
                inode: 0,
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatCache {
    entries: HashMap<String, (Stamp, String)>,
    dirty: bool,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    /// Loads the cache; a missing or unreadable file is an empty cache (it is only a cache).
    pub fn load(path: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let mut entries = HashMap::with_capacity(text.len() / 100);
        for line in text.lines() {
            let mut f = line.splitn(5, ' ');
            let (Some(hash), Some(size), Some(mtime), Some(ino), Some(p)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let (Ok(size), Ok(mtime_ns), Ok(inode)) = (size.parse(), mtime.parse(), ino.parse())
            else {
                continue;
            };
            entries.insert(
                p.to_owned(),
                (
                    Stamp {
                        size,
                        mtime_ns,
                        inode,
                    },
                    hash.to_owned(),
                ),
            );
        }
        Self {
            entries,
            dirty: false,
        }
    }

    pub fn get(&self, path: &str, stamp: Stamp) -> Option<&str> {
        match self.entries.get(path) {
            Some((s, h)) if *s == stamp => Some(h),
            _ => None,
        }
    }

    pub fn insert(&mut self, path: &str, stamp: Stamp, hash: &str) {
        let window = if stamp.mtime_ns % 1_000_000_000 == 0 {
            RACY_COARSE_NS
        } else {
            RACY_FINE_NS
        };
        if stamp.mtime_ns > now_ns() - window {
            // Too fresh to trust later; forget any older entry too.
            if self.entries.remove(path).is_some() {
                self.dirty = true;
            }
            return;
        }
        if self.get(path, stamp) != Some(hash) {
            self.entries
                .insert(path.to_owned(), (stamp, hash.to_owned()));
            self.dirty = true;
        }
    }

    pub fn save(&mut self, path: &Path) -> Result<(), CacheError> {
        if !self.dirty {
            return Ok(());
        }
        let mut text = String::with_capacity(self.entries.len() * 120);
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            let (s, h) = &self.entries[k];
            text.push_str(&format!("{h} {} {} {} {k}\n", s.size, s.mtime_ns, s.inode));
        }
        super::runs::write_atomic(path, text.as_bytes())?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_racy_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        let mut c = StatCache::default();
        let old = Stamp {
            size: 3,
            mtime_ns: 1_000,
            inode: 7,
        };
        let fresh = Stamp {
            size: 3,
            mtime_ns: now_ns(),
            inode: 8,
        };
        c.insert("a b/c.txt", old, "h1");
        c.insert("fresh", fresh, "h2");
        // Whole-second mtimes (a coarse file system) one second ago: still racy.
        let coarse = Stamp {
            size: 3,
            mtime_ns: (now_ns() / 1_000_000_000 - 1) * 1_000_000_000,
            inode: 9,
        };
        c.insert("coarse", coarse, "h3");
        // A fine-grained mtime half a second ago: trusted.
        let settled = Stamp {
            size: 3,
            mtime_ns: now_ns() - 500_000_001,
            inode: 10,
        };
        c.insert("settled", settled, "h4");
        c.save(&path).unwrap();
        let c = StatCache::load(&path);
        assert_eq!(c.get("a b/c.txt", old), Some("h1"));
        assert_eq!(c.get("a b/c.txt", Stamp { size: 4, ..old }), None);
        assert_eq!(c.get("fresh", fresh), None);
        assert_eq!(c.get("coarse", coarse), None);
        assert_eq!(c.get("settled", settled), Some("h4"));
    }
}
