//! Matrix expansion: names, templating of the values, `needs` on a base name.

use crate::support::{Ws, set};

#[test]
fn matrix_expands_into_named_stages_with_values_in_templates() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
params:
  epochs: 2
stages:
  train:
    matrix:
      rank: [8, 16]
      lr: [1e-4, 3e-4]
    cmd: echo "{{ matrix.rank }} {{ matrix.lr }} {{ params.epochs }}" > out-{{ matrix.rank }}-{{ matrix.lr }}.txt
    outs: ["out-{{ matrix.rank }}-{{ matrix.lr }}.txt"]
  summary:
    cmd: echo done > summary.txt
    needs: [train]
    outs: [summary.txt]
"#,
    );
    let dag = ws.pipe().arg("dag").output().unwrap();
    let text = String::from_utf8_lossy(&dag.stdout);
    for name in [
        "train@rank=8,lr=1e-4",
        "train@rank=8,lr=3e-4",
        "train@rank=16,lr=1e-4",
        "train@rank=16,lr=3e-4",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    assert!(
        text.contains("summary <- train@rank=8,lr=1e-4 (needs)"),
        "{text}"
    );
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran().len(), 5);
    assert_eq!(ws.read("out-16-0.0003.txt"), "16 0.0003 2\n");
    // -s with the base name selects every expansion.
    let r = ws.run_ok(&["-s", "train", "--force"]);
    assert_eq!(r.ran().len(), 4);
    assert!(!r.ran().contains("summary"));
    let one = ws.run_ok(&["-s", "train@rank=8,lr=1e-4", "--force"]);
    assert_eq!(one.ran(), set(&["train@rank=8,lr=1e-4"]));
}

#[test]
fn matrix_values_with_slashes_still_get_a_log_file() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  fetch:\n    matrix:\n      model: [org/a, org/b]\n    cmd: echo {{ matrix.model }} > {{ matrix.model | replace('/', '-') }}.txt\n    outs: [\"{{ matrix.model | replace('/', '-') }}.txt\"]\n",
    );
    let r = ws.run_ok(&[]);
    assert_eq!(r.ran(), set(&["fetch@model=org/a", "fetch@model=org/b"]));
    assert_eq!(ws.read("org-b.txt"), "org/b\n");
    let show = ws
        .pipe()
        .args(["show", "fetch@model=org/a"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("last run ok"));
}
