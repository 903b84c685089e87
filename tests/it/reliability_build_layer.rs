//! The Linux build layer (tools/mlx-linux/): setup.sh checks libclang the way bindgen loads
//! it, and the cargo configuration that points mlx-sys at the prebuilt MLX exists on Linux
//! only (setup.sh writes it; nothing tracked applies it to a Mac).
//!
//! setup.sh runs here from a copy of tools/mlx-linux/ in a temporary "checkout", with fake
//! `uname` and `apt-get` first on PATH where a test needs another host or must not install.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn probe() -> PathBuf {
    repo().join("tools/mlx-linux/libclang_probe.py")
}

/// A temporary checkout holding a copy of tools/mlx-linux/ and a `bin/` for fake tools.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = repo().join("tools/mlx-linux");
    let to = dir.path().join("tools/mlx-linux");
    for entry in walkdir::WalkDir::new(&from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(&from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    dir
}

fn fake_tool(checkout: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = checkout.join("bin").join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn setup(checkout: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(checkout.join("tools/mlx-linux/setup.sh"));
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", checkout.join("bin").display()));
    cmd
}

/// A directory holding only what a machine with LLVM tools but no libclang has: LLVM's C++
/// library, which a file-name glob mistakes for libclang. (The file needs only an ELF
/// header: bindgen skips it by name before loading anything.)
fn only_libclang_cpp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("libclang-cpp.so.14"), b"\x7fELF\x02fake").unwrap();
    dir
}

#[test]
fn the_libclang_probe_rejects_libclang_cpp_as_bindgen_does() {
    let libs = only_libclang_cpp();
    let out = Command::new("python3")
        .arg(probe())
        .env("LIBCLANG_PATH", libs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("libclang-cpp.so.14, which bindgen skips"),
        "{stderr}"
    );
}

#[test]
fn the_libclang_probe_rejects_a_library_that_does_not_load() {
    let libs = tempfile::tempdir().unwrap();
    std::fs::write(
        libs.path().join("libclang.so.1"),
        b"\x7fELF\x02not a library",
    )
    .unwrap();
    let out = Command::new("python3")
        .arg(probe())
        .env("LIBCLANG_PATH", libs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot load"), "{stderr}");
}

/// This machine built pipe, so bindgen found a libclang here: the probe must agree, and
/// name a C-API library, not LLVM's C++ one.
#[test]
fn the_libclang_probe_accepts_the_libclang_this_build_used() {
    let out = Command::new("python3")
        .arg(probe())
        .env_remove("LIBCLANG_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = Path::new(stdout.trim())
        .file_name()
        .unwrap()
        .to_string_lossy();
    assert!(
        name.starts_with("libclang") && !name.contains("-cpp."),
        "{stdout}"
    );
}

/// The defect a new user hit: with LLVM's libclang-cpp but no libclang, setup.sh said all
/// was well and the README's build then failed inside bindgen. Now setup.sh asks for
/// libclang-dev, and when installing it does not help (here a fake apt-get installs
/// nothing) it stops with the probe's reason instead of going on to the build.
#[test]
fn setup_asks_for_libclang_dev_when_only_libclang_cpp_is_installed() {
    let co = checkout();
    let libs = only_libclang_cpp();
    let log = co.path().join("apt-get.log");
    fake_tool(
        co.path(),
        "apt-get",
        &format!("echo \"$@\" >> '{}'", log.display()),
    );
    fake_tool(co.path(), "id", "echo 0");
    let out = setup(co.path())
        .env("LIBCLANG_PATH", libs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let apt = std::fs::read_to_string(&log).unwrap();
    assert!(
        apt.lines()
            .any(|l| l.starts_with("install") && l.contains("libclang-dev")),
        "{apt}"
    );
    assert!(
        stderr.contains("bindgen will not find a working libclang")
            && stderr.contains("libclang-cpp.so.14, which bindgen skips"),
        "{stderr}"
    );
    // It stopped before the wheel and before writing a build layer.
    assert!(!co.path().join(".mlx-linux").exists());
    assert!(!co.path().join(".cargo").exists());
}

/// As a user without root, the same machine gets the apt-get command to run.
#[test]
fn setup_without_root_names_libclang_dev_as_missing() {
    let co = checkout();
    let libs = only_libclang_cpp();
    fake_tool(co.path(), "id", "echo 1000");
    let out = setup(co.path())
        .env("LIBCLANG_PATH", libs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing system packages: libclang-dev"),
        "{stderr}"
    );
}

/// On a Mac, setup.sh writes nothing, and takes away a layer copied from a Linux checkout;
/// a cargo configuration of the user's own is left alone.
#[test]
fn on_macos_setup_leaves_no_build_layer() {
    let co = checkout();
    fake_tool(co.path(), "uname", "echo Darwin");
    let config = co.path().join(".cargo/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "# Written by tools/mlx-linux/setup.sh (Linux only)\n[build]\n",
    )
    .unwrap();
    let out = setup(co.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!config.exists(), "the Linux layer was left on a Mac");
    assert!(!co.path().join(".mlx-linux").exists());

    std::fs::write(&config, "[build]\njobs = 2\n").unwrap();
    let out = setup(co.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[build]\njobs = 2\n"
    );
}

/// Nothing tracked configures cargo for every host: the layer is setup.sh's output, and
/// ignored. (A tracked `.cargo/config.toml` would reach a Mac with the clone.)
#[test]
fn no_tracked_cargo_configuration_reaches_other_hosts() {
    let out = Command::new("git")
        .args(["ls-files", "--", ".cargo", "**/.cargo/**"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = Command::new("git")
        .args(["check-ignore", "-q", ".cargo/config.toml"])
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(out.success(), ".cargo/config.toml is not ignored");
}
