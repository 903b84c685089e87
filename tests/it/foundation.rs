//! The foundation: the binary starts, MLX computes, doctor reports, model ids are checked.

use assert_cmd::Command;
use predicates::prelude::*;

fn pipe() -> Command {
    let mut cmd = Command::cargo_bin("pipe").expect("the pipe binary is built");
    cmd.env_remove("NO_COLOR");
    cmd
}

#[test]
fn doctor_json_reports_a_working_mlx() {
    let out = pipe()
        .args(["doctor", "--json", "--matmul-size", "256", "--reps", "2"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).expect("doctor --json is JSON");
    let gflops = report["matmul_gflops"]
        .as_f64()
        .expect("matmul_gflops is a number");
    assert!(gflops > 0.0, "GFLOP/s must be positive, got {gflops}");
    assert_eq!(report["mlx"]["mlx_version"], "0.32.2");
    assert!(report["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(report["machine"]["memory_total_bytes"].as_u64().unwrap() > 0);
    if cfg!(target_os = "linux") {
        assert_eq!(report["mlx"]["backend"], "cpu");
        assert_eq!(report["mlx"]["metal_available"], false);
    }
}

#[test]
fn doctor_text_names_every_field() {
    let assert = pipe()
        .args([
            "doctor",
            "--matmul-size",
            "128",
            "--reps",
            "1",
            "--color",
            "never",
        ])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for field in [
        "platform", "chip", "cores", "memory", "mlx", "backend", "metal", "matmul",
    ] {
        assert!(
            text.contains(field),
            "doctor output lacks `{field}`:\n{text}"
        );
    }
}

#[test]
fn unknown_model_is_a_usage_error_with_the_known_ids() {
    pipe()
        .args(["model", "fetch", "gpt-17"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown model `gpt-17`"))
        .stderr(predicate::str::contains("smollm2-135m-instruct"));
}

#[test]
fn model_path_before_fetch_says_how_to_fetch() {
    let empty = tempfile::tempdir().unwrap();
    pipe()
        .env("PIPE_CACHE_DIR", empty.path())
        .args(["model", "path", "smollm2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "pipe model fetch smollm2-135m-instruct",
        ));
}

#[test]
fn missing_python_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    pipe()
        .env("PIPE_CACHE_DIR", empty.path())
        .env("PIPE_PYTHON", "/nonexistent/python3")
        .args(["model", "fetch", "smollm2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("was not found"))
        .stderr(predicate::str::contains("PIPE_PYTHON"));
}

#[test]
fn help_shows_examples() {
    pipe()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
}
