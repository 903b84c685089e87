//! The repository itself: no tracked file names an absolute path of a development machine
//! (`/work/...`, `/root/...`, `/home/...`, `/Users/...`). Such a path is wrong on every
//! other machine: a comment citing a note that only exists there, a test reading a file
//! that only exists there.

use std::path::Path;
use std::process::Command;

/// Folders that belong to one machine or one user.
const MACHINE_DIRS: [&str; 4] = ["/work/", "/root/", "/home/", "/Users/"];

/// Absolute paths that are meant: (file, text, why).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "crates/engine/src/schedule/launchd.rs",
        "/Users/me/",
        "the made-up Mac home of the launchd plist's golden test",
    ),
    (
        "crates/engine/src/schedule/testdata/dev.pipe.schedule.nightly.plist",
        "/Users/me/",
        "the golden plist itself, for that made-up Mac home",
    ),
];

/// Where `needle` occurs in `text` as the start of a path: not inside a longer path
/// (`src/home/`) or a home-relative one (`~/work/`).
fn path_starts(text: &str, needle: &str) -> Vec<usize> {
    text.match_indices(needle)
        .map(|(at, _)| at)
        .filter(|&at| {
            text[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || "._-~/".contains(c)))
        })
        .collect()
}

#[test]
fn tracked_files_name_no_absolute_path_of_a_development_machine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(out) = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
    else {
        eprintln!("git is not available; nothing checked");
        return;
    };
    if !out.status.success() {
        eprintln!("not a git checkout; nothing checked");
        return;
    }
    let this_file = "tests/it/sources.rs";
    let mut found = Vec::new();
    for file in String::from_utf8_lossy(&out.stdout).split('\0') {
        if file.is_empty() || file == this_file {
            continue;
        }
        // Binary files, and files listed but deleted in the working tree, are skipped.
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for needle in MACHINE_DIRS {
                for at in path_starts(line, needle) {
                    let allowed = ALLOWED
                        .iter()
                        .any(|(f, text, _)| *f == file && line[at..].starts_with(text));
                    if !allowed {
                        found.push(format!("{file}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "absolute paths of a development machine (say what the file holds, or use a path \
         relative to the repository; a path that is meant goes into ALLOWED with why):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_path_starts_count() {
    assert_eq!(path_starts("see `/srv/x`", "/srv/"), [5]);
    assert_eq!(path_starts("/opt/a", "/opt/"), [0]);
    assert!(path_starts("src/home/a ~/work/b ../root/c", "/home/").is_empty());
    assert!(path_starts("~/work/b", "/work/").is_empty());
    assert!(path_starts("../root/c", "/root/").is_empty());
}
