//! Start-up: engine commands run in `pipe`, which does not load MLX; commands that use MLX
//! are handed to `pipe-mlx` (issue #3).

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;

/// The shared libraries the dynamic loader opened for `bin args`, as glibc's loader reports
/// them with `LD_DEBUG=libs`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn loaded_libraries(bin: &str, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(cargo_bin(bin))
        .args(args)
        .current_dir(dir)
        .env("LD_DEBUG", "libs")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{bin} {args:?} failed: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("libc.so"),
        "LD_DEBUG=libs printed no library loads:\n{log}"
    );
    log
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn engine_commands_do_not_load_mlx() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipe.yaml"),
        "stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n",
    )
    .unwrap();
    for args in [&["run", "-q"][..], &["status"], &["dag"], &["--version"]] {
        let log = loaded_libraries("pipe", args, dir.path());
        assert!(
            !log.contains("libmlx") && !log.contains("blas"),
            "`pipe {args:?}` loaded MLX or a BLAS:\n{log}"
        );
    }
    // The check can see MLX where it is loaded.
    let log = loaded_libraries("pipe-mlx", &["--version"], dir.path());
    assert!(log.contains("libmlx"), "pipe-mlx did not load MLX:\n{log}");
}

#[test]
fn mlx_commands_run_in_pipe_mlx() {
    let out = Command::new(cargo_bin("pipe"))
        .args(["doctor", "--json", "--matmul-size", "64", "--reps", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mlx"]["mlx_version"], "0.32.2");
}

#[test]
fn a_missing_pipe_mlx_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir
        .path()
        .join(format!("pipe{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(cargo_bin("pipe"), &alone).unwrap();
    // Engine commands work without it...
    Command::new(&alone).arg("--version").assert().success();
    // ...and an MLX command says what is missing instead of failing obscurely.
    let out = Command::new(&alone)
        .args(["doctor", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipe-mlx") && err.contains("does not exist"),
        "{err}"
    );
}

/// `pipe` beside a fake `pipe-mlx` (a shell script): `--build-id` prints `id_line`, any
/// other command prints `ran` and its arguments.
#[cfg(unix)]
fn pipe_beside_fake_runner(id_script: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(cargo_bin("pipe"), dir.path().join("pipe")).unwrap();
    let runner = dir.path().join("pipe-mlx");
    std::fs::write(
        &runner,
        format!("#!/bin/sh\nif [ \"$1\" = --build-id ]; then\n{id_script}\nfi\necho ran \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs the `pipe` copied beside a fake runner. Executing a file this process has just
/// written can fail with "Text file busy" while another test thread forks (the child holds
/// the write descriptor until it execs), so that one error is retried.
#[cfg(unix)]
fn run_beside_fake(dir: &tempfile::TempDir, args: &[&str]) -> std::process::Output {
    for _ in 0..20 {
        let out = Command::new(dir.path().join("pipe"))
            .args(args)
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the fake pipe-mlx stayed busy");
}

#[test]
fn pipe_mlx_reports_the_build_pipe_was_built_with() {
    let out = Command::new(cargo_bin("pipe-mlx"))
        .arg("--build-id")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pipe::cli::BUILD_ID
    );
    assert!(
        pipe::cli::BUILD_ID.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")),
        "{}",
        pipe::cli::BUILD_ID
    );
}

/// `pipe doctor` beside a fake `pipe-mlx` whose `--build-id` runs `id_script`: it must
/// fail with exit code 1 and run nothing; returns its stderr.
#[cfg(unix)]
fn refused(id_script: &str) -> String {
    let dir = pipe_beside_fake_runner(id_script);
    let out = run_beside_fake(&dir, &["doctor", "--color", "never"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing ran: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[cfg(unix)]
#[test]
fn a_pipe_mlx_of_another_build_is_refused_with_how_to_rebuild() {
    let err = refused("echo 0.1.0+0123456789abcdef; exit 0");
    // The test and the binaries share a profile.
    let rebuild = if cfg!(debug_assertions) {
        "`cargo build`"
    } else {
        "`cargo build --release`"
    };
    assert!(
        err.contains("is not from the same build")
            && err.contains("0.1.0+0123456789abcdef")
            && err.contains(pipe::cli::BUILD_ID)
            && err.contains(&format!("{rebuild} builds pipe and pipe-mlx together")),
        "{err}"
    );
    // A pipe-mlx that knows no `--build-id` (older than the check) is refused too.
    let err = refused("echo 'error: unexpected argument' >&2; exit 2");
    assert!(err.contains("reports no build id"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_pipe_mlx_of_the_same_build_gets_the_command() {
    let dir = pipe_beside_fake_runner(&format!("echo {}; exit 0", pipe::cli::BUILD_ID));
    let out = run_beside_fake(&dir, &["doctor", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran doctor --json\n");
}
