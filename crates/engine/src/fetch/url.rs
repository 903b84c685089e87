//! Downloading a file named by an http(s) URL and pinned by its hash.
//!
//! A pipeline never trusts a URL alone: the same address can serve different bytes
//! tomorrow, and a stage's fingerprint must not need the network. So a URL source carries
//! its sha256 or blake3 ([`Pin`]); the stage key hashes the pin (the `with:` text), and
//! the bytes are fetched once into the user cache at
//! `<user cache>/downloads/<algo>-<hex>/<file name>`, keyed by the pin. A download is
//! streamed through the hash into a temporary file beside its destination and renamed into
//! place only when the hash matches, so a file in that folder has always been checked.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pipe_schema::ingest::{Pin, check_digest, file_name_of};

/// The running hash that checks a download against `pin`.
fn hasher(pin: &Pin) -> Hasher {
    match pin {
        Pin::Sha256(_) => Hasher::Sha256(Box::default()),
        Pin::Blake3(_) => Hasher::Blake3(Box::default()),
    }
}

enum Hasher {
    Sha256(Box<Sha256>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// Where the file pinned by `pin` and called `name` lives in the user cache.
pub fn download_path(cache_dir: &Path, pin: &Pin, name: &str) -> PathBuf {
    cache_dir
        .join("downloads")
        .join(format!("{}-{}", pin.algo(), pin.hex()))
        .join(name)
}

/// Makes sure the file at `url` with hash `pin` is in the user cache (as `name`) and
/// returns its path. No network access when it is already there and still matches its
/// pin. Safe to call from several processes at once (a lock file serialises them).
pub fn fetch_url(cache_dir: &Path, url: &str, pin: &Pin, name: &str) -> anyhow::Result<PathBuf> {
    let dest = download_path(cache_dir, pin, name);
    if matches_pin(&dest, pin)? {
        return Ok(dest);
    }
    let dir = dest.parent().expect("download path has a parent");
    fs_err::create_dir_all(dir)?;
    let lock = fs_err::File::create(dir.join(".lock"))?;
    lock.file()
        .lock()
        .with_context(|| format!("cannot lock {}", dir.join(".lock").display()))?;
    if matches_pin(&dest, pin)? {
        return Ok(dest);
    }
    download_to(url, pin, &dest)?;
    Ok(dest)
}

/// Whether `path` exists with the pinned content. The file was checked when it was
/// installed, but the user cache is an ordinary folder: rehashing costs far less than the
/// ingest that reads it, and a file edited by hand is fetched again instead of trusted.
fn matches_pin(path: &Path, pin: &Pin) -> anyhow::Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut hasher = hasher(pin);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.hex() == pin.hex())
}

/// Downloads `url` into `dest` (atomically, only if it matches `pin`).
pub(crate) fn download_to(url: &str, pin: &Pin, dest: &Path) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| {
        let hint = match e {
            ureq::Error::StatusCode(_) => "check the URL",
            _ => "is the server reachable from this machine?",
        };
        anyhow::anyhow!("cannot download {url}: {e}\nhint: {hint}")
    })?;
    let mut out = crate::atomic_write::AtomicFile::create(dest)?;
    let mut body = response.into_body().into_reader();
    let mut hasher = hasher(pin);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("download of {url} broke off"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    let actual = hasher.hex();
    if actual != pin.hex() {
        bail!(
            "{algo} mismatch for {url}: expected {}, got {actual}\nhint: the server sent \
             different bytes than the pin names, so they were not used; if the new content \
             is what you want, set `{algo}: {actual}`",
            pin.hex(),
            algo = pin.algo()
        );
    }
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        assert_eq!(file_name_of("https://h/x/data.jsonl"), Some("data.jsonl"));
        assert_eq!(file_name_of("http://h:8/a.csv?raw=1#top"), Some("a.csv"));
        assert_eq!(file_name_of("https://h/dir/"), None);
        assert_eq!(file_name_of("https://h"), None);
    }

    #[test]
    fn digests_must_be_64_lowercase_hex() {
        assert!(check_digest("sha256", &"a".repeat(64)).is_ok());
        assert!(check_digest("sha256", &"A".repeat(64)).is_err());
        assert!(check_digest("blake3", "abc").is_err());
    }

    #[test]
    fn a_cached_file_is_used_only_while_it_matches_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin::Blake3(blake3::hash(b"rows\n").to_hex().to_string());
        let path = download_path(dir.path(), &pin, "d.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"rows\n").unwrap();
        assert!(matches_pin(&path, &pin).unwrap());
        std::fs::write(&path, b"edited\n").unwrap();
        assert!(!matches_pin(&path, &pin).unwrap());
        let sha =
            Pin::Sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into());
        std::fs::write(&path, b"abc").unwrap();
        assert!(matches_pin(&path, &sha).unwrap());
    }
}
