//! Python tools the tests run for real (mlx-lm, the MLflow server, the `openai` client, the
//! `gguf` reader): each lives in its own virtual environment in the user cache
//! (`<cache>/python/<name>`), created on first use with pinned versions and reused after a
//! version check. Python 3 with `venv` is required (`PIPE_PYTHON` picks the interpreter);
//! without it a test fails and says what to install. None is ever skipped.

use std::path::PathBuf;
use std::process::Command;

/// Runs `cmd` and returns its stdout; panics with both streams when it fails.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The interpreter of the virtual environment `name` holding exactly `pins`
/// (`(distribution, version)`), created on first use. `extra` are further pip arguments
/// installed alongside (unpinned helpers, or platform wheels). Built in a temporary sibling
/// and renamed into place, so concurrent test runs never see a half-installed environment.
pub fn venv(name: &str, pins: &[(&str, &str)], extra: &[&str]) -> PathBuf {
    let root = pipe_engine::dirs::user_cache_dir().unwrap().join("python");
    let dir = root.join(name);
    let python = dir.join("bin").join("python");
    let names: Vec<String> = pins.iter().map(|(p, _)| format!("{p:?}")).collect();
    let check = format!(
        "import importlib.metadata as m; print(' '.join(m.version(p) for p in [{}]))",
        names.join(", ")
    );
    let expected: Vec<&str> = pins.iter().map(|(_, v)| *v).collect();
    let expected = expected.join(" ");
    if python.is_file() {
        let out = Command::new(&python).args(["-c", &check]).output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == expected) {
            return python;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let base = std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&base)
        .args(["-c", "import venv, ensurepip"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs Python 3 with venv and pip to install {name} from PyPI, but `{base}` \
         is missing or lacks them (Debian: apt-get install python3 python3-venv python3-pip; \
         or set PIPE_PYTHON): {probe:?}"
    );
    std::fs::create_dir_all(&root).unwrap();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&root)
        .unwrap();
    run(
        Command::new(&base).args(["-m", "venv"]).arg(staging.path()),
        "python3 -m venv",
    );
    let staged = staging.path().join("bin").join("python");
    let packages: Vec<String> = pins.iter().map(|(p, v)| format!("{p}=={v}")).collect();
    run(
        Command::new(&staged)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(&packages)
            .args(extra),
        &format!("pip install {}", packages.join(" ")),
    );
    let versions = run(Command::new(&staged).args(["-c", &check]), "version check");
    assert_eq!(versions.trim(), expected, "pip installed other versions");
    let staged_dir = staging.keep();
    if std::fs::rename(&staged_dir, &dir).is_err() {
        // Another run finished first; use its environment.
        let _ = std::fs::remove_dir_all(&staged_dir);
    }
    python
}
