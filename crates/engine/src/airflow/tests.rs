//! The DAG file against a golden copy (a fan-out/fan-in pipeline with a matrix stage,
//! paths with spaces and quotes), task ids, and the parts that must not vary.

use super::*;
use crate::spec::{self, LoadOptions};

const GOLDEN: &str = include_str!("testdata/fan_out.py");

const PIPELINE: &str = r#"name: fan out "nightly"
stages:
  prepare:
    cmd: mkdir -p data && echo 3 > data/n.txt
    outs: [data/n.txt]
  square:
    matrix:
      k: [2, 3]
    cmd: echo $(( $(cat data/n.txt) ** {{ matrix.k }} )) > data/pow{{ matrix.k }}.txt
    deps: [data/n.txt]
    outs: ["data/pow{{ matrix.k }}.txt"]
  count:
    cmd: wc -c < data/n.txt > data/count.txt
    deps: [data/n.txt]
    outs: [data/count.txt]
  sum:
    cmd: cat data/pow2.txt data/pow3.txt data/count.txt > sum.txt
    deps: [data/pow2.txt, data/pow3.txt, data/count.txt]
    outs: [sum.txt]
  announce:
    cmd: echo done
    needs: [sum]
"#;

fn load() -> (Pipeline, Dag) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipe.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let options = LoadOptions {
        root: dir.path().to_owned(),
        sets: vec![],
        skip_dep_check: true,
    };
    let pipeline = spec::load(&file, &options).unwrap();
    let dag = crate::dag::build(&pipeline).unwrap();
    (pipeline, dag)
}

fn dag_file(pipeline: &Pipeline) -> DagFile {
    DagFile {
        dag_id: default_dag_id(pipeline),
        pipe: "/opt/pipe tools/bin/pipe".into(),
        root: "/srv/ml/it's \"odd\" {{ ds }}".into(),
        pipeline_file: "/srv/ml/it's \"odd\" {{ ds }}/pipe.yaml".into(),
        sets: vec!["train.lr=3e-4".into(), "note='a b'".into()],
        env: BTreeMap::from([
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/srv/ml".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ]),
        schedule: Some("30 2 * * *".into()),
        timezone: "Europe/Berlin".into(),
        retries: 1,
    }
}

#[test]
fn dag_file_matches_the_golden_file() {
    let (pipeline, dag) = load();
    let text = render(&dag_file(&pipeline), &pipeline, &dag).unwrap();
    assert_eq!(text, GOLDEN, "the DAG file changed; new text:\n{text}");
    // Plain ASCII whatever the paths hold.
    assert!(text.is_ascii());
}

#[test]
fn same_inputs_same_bytes() {
    let (p1, d1) = load();
    let (p2, d2) = load();
    let a = render(&dag_file(&p1), &p1, &d1).unwrap();
    let b = render(&dag_file(&p2), &p2, &d2).unwrap();
    assert_eq!(a, b);
}

#[test]
fn no_schedule_and_no_environment() {
    let (pipeline, dag) = load();
    let file = DagFile {
        schedule: None,
        env: BTreeMap::new(),
        sets: vec![],
        ..dag_file(&pipeline)
    };
    let text = render(&file, &pipeline, &dag).unwrap();
    assert!(text.contains("    schedule=None,\n"));
    assert!(text.contains("ENV = {}\n"));
    assert!(text.contains("SETS = []\n"));
}

#[test]
fn task_ids_are_airflow_ids_and_unique() {
    let (mut pipeline, _) = load();
    let ids = task_ids(&pipeline);
    assert_eq!(
        ids,
        [
            "prepare",
            "square_k_2",
            "square_k_3",
            "count",
            "sum",
            "announce"
        ]
    );
    // Two names that map to the same id get distinct ids.
    pipeline.stages[0].name = "a@b".into();
    pipeline.stages[5].name = "a_b".into();
    let ids = task_ids(&pipeline);
    assert_eq!(ids[0], "a_b");
    assert_eq!(ids[5], "a_b_2");
    assert_eq!(default_dag_id(&pipeline), "fan_out__nightly_");
}

#[cfg(unix)]
#[test]
fn a_path_that_is_not_text_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let (pipeline, dag) = load();
    let file = DagFile {
        root: std::ffi::OsStr::from_bytes(b"/srv/\xff").into(),
        ..dag_file(&pipeline)
    };
    let err = render(&file, &pipeline, &dag).unwrap_err().to_string();
    assert!(err.contains("the workspace root"), "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn zone_names() {
    assert!(is_zone_name("Europe/Berlin"));
    assert!(is_zone_name("UTC"));
    assert!(is_zone_name("Etc/GMT+5"));
    assert!(!is_zone_name("/etc/localtime"));
    assert!(!is_zone_name("CET-1CEST,M3.5.0"));
    assert!(!is_zone_name("../x"));
    assert!(!is_zone_name(""));
}
