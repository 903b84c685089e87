//! `pipe-mlx --build-id` answers with the build id of the `pipe` library it was built
//! with, which `pipe` compares with its own before handing a command over.

#[test]
fn build_id_is_the_pipe_librarys() {
    let out = assert_cmd::Command::cargo_bin("pipe-mlx")
        .unwrap()
        .arg(pipe::cli::BUILD_ID_ARG)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pipe::cli::BUILD_ID
    );
}
