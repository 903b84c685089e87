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
