use super::*;

fn key(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn a_sealed_file_checks_and_any_damage_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sealed_for_tests(dir.path(), &key(1), &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(check(&path), Ok(()));
    assert!(
        !temp_path(dir.path(), &key(1)).exists(),
        "the temporary name is gone"
    );
    let good = fs_err::read(&path).unwrap();

    // A flipped bit in the data.
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    fs_err::write(&path, &flipped).unwrap();
    assert!(check(&path).unwrap_err().contains("hashes to"));

    // Cut short: in the data, in the header, before the header.
    for cut in [good.len() - 2, 20, 3] {
        fs_err::write(&path, &good[..cut]).unwrap();
        assert!(check(&path).is_err(), "cut at {cut} passed");
    }

    // Never sealed: what a writer killed between the write and the seal would leave (under
    // its temporary name; here under the real one, to show a reader would refuse it).
    let at = find(&good, CHECKSUM_KEY.as_bytes()).unwrap() + CHECKSUM_KEY.len() + 3;
    let mut bytes = good.clone();
    bytes[at..at + 64].copy_from_slice(UNSEALED.as_bytes());
    fs_err::write(&path, &bytes).unwrap();
    assert!(check(&path).unwrap_err().contains("hashes to"));
}

#[test]
fn names_are_classified() {
    let k = key(7);
    assert_eq!(classify(&format!("{k}.safetensors")), Name::Entry);
    assert_eq!(
        classify(&format!(".{k}.42.tmp.safetensors")),
        Name::Temp(42)
    );
    assert_eq!(classify("notes.safetensors"), Name::Other);
    assert_eq!(classify(&format!(".{k}.x.tmp.safetensors")), Name::Other);
    assert_eq!(classify(&format!("{k}.json")), Name::Other);
}

#[test]
fn gc_expires_old_files_then_trims_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 4 floats: 16 bytes of data plus a header of the same length each.
    let files: Vec<PathBuf> = (0..4)
        .map(|i| write_sealed_for_tests(d, &key(i), &[0.0; 4]).unwrap())
        .collect();
    let size = fs_err::metadata(&files[0]).unwrap().len();
    age(&files[0], 40 * 24 * 3600);
    age(&files[1], 3000);
    age(&files[2], 2000);
    age(&files[3], 1000);
    fs_err::write(d.join("README"), "not ours").unwrap();
    // A temporary file of a writer that is gone, and one of this (running) process.
    let dead = d.join(format!(".{}.{}.tmp.safetensors", key(9), u32::MAX - 1));
    let live = temp_path(d, &key(8));
    fs_err::write(&dead, "half").unwrap();
    fs_err::write(&live, "half").unwrap();

    let policy = GcPolicy {
        budget_bytes: 2 * size,
        ..GcPolicy::default()
    };
    let dry = gc(d, policy, SystemTime::now(), true).unwrap();
    assert_eq!(
        (dry.entries_removed, dry.expired, dry.temp_removed),
        (2, 1, 1)
    );
    assert!(files.iter().all(|f| f.exists()) && dead.exists(), "dry run");
    assert_eq!(usage(d).entries, 4);

    let done = gc(d, policy, SystemTime::now(), false).unwrap();
    assert_eq!(done, dry);
    assert_eq!((done.entries_kept, done.bytes_kept), (2, 2 * size));
    assert!(!files[0].exists(), "older than 30 days");
    assert!(!files[1].exists(), "least recently used over the budget");
    assert!(files[2].exists() && files[3].exists());
    assert!(!dead.exists() && live.exists());
    assert!(d.join("README").exists(), "other files are left alone");
    assert_eq!(
        usage(d),
        Usage {
            entries: 2,
            bytes: 2 * size,
            temp_files: 1,
            temp_bytes: 4
        }
    );
}

#[test]
fn trim_keeps_the_file_just_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = write_sealed_for_tests(d, &key(1), &[0.0; 4]).unwrap();
    let middle = write_sealed_for_tests(d, &key(2), &[0.0; 4]).unwrap();
    let keep = write_sealed_for_tests(d, &key(3), &[0.0; 4]).unwrap();
    let size = fs_err::metadata(&old).unwrap().len();
    age(&old, 300);
    age(&middle, 200);
    age(&keep, 400);
    // Someone else's write in progress is not counted and not deleted.
    let other = d.join(format!(".{}.1.tmp.safetensors", key(4)));
    fs_err::write(&other, vec![0u8; 10_000]).unwrap();
    assert_eq!(trim(d, 2 * size, &keep).unwrap(), size);
    assert!(!old.exists() && middle.exists() && keep.exists());
    trim(d, 0, &keep).unwrap();
    assert!(
        !middle.exists() && keep.exists(),
        "the newest write is kept"
    );
    assert!(other.exists());
}

#[test]
fn verify_deletes_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_sealed_for_tests(dir.path(), &key(1), &[1.0]).unwrap();
    let bad = write_sealed_for_tests(dir.path(), &key(2), &[1.0, 2.0]).unwrap();
    let bytes = fs_err::read(&bad).unwrap();
    fs_err::write(&bad, &bytes[..bytes.len() - 1]).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].0, bad);
    assert!(good.exists() && !bad.exists());
}
