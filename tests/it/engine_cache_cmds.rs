//! `pipe cache verify` and `pipe gc`.

use crate::support::Ws;

fn objects(ws: &Ws) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(ws.path("cache/v1/objects"))
        .min_depth(2)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn ws() -> Ws {
    let ws = Ws::new();
    ws.file("in.txt", "v1\n").pipeline(
        "stages:\n  copy:\n    cmd: mkdir -p out && cat in.txt > out/a.txt && echo b > out/b.txt\n    deps: [in.txt]\n    outs: [out]\n",
    );
    ws
}

#[test]
fn verify_catches_and_quarantines_a_corrupt_object() {
    let ws = ws();
    ws.run_ok(&[]);
    let ok = ws.pipe().args(["cache", "verify"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("0 corrupt"));
    let victim = objects(&ws)
        .into_iter()
        .find(|p| std::fs::read_to_string(p).unwrap() == "v1\n")
        .unwrap();
    let mut perms = std::fs::metadata(&victim).unwrap().permissions();
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "the test makes a store object writable on purpose"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&victim, perms).unwrap();
    std::fs::write(&victim, "evil\n").unwrap();
    let bad = ws
        .pipe()
        .args(["cache", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["corrupt"].as_array().unwrap().len(), 1);
    assert!(!victim.exists());
    assert!(ws.path("cache/v1/quarantine").read_dir().unwrap().count() == 1);
}

#[test]
fn gc_frees_objects_nothing_references() {
    let ws = ws();
    ws.run_ok(&[]);
    ws.file("in.txt", "v2 with more bytes\n");
    ws.run_ok(&[]);
    let before = objects(&ws).len();
    // Keep 1 run: the v1 outs are referenced neither by pipe.lock nor the newest run.
    let out = ws
        .pipe()
        .args(["gc", "--keep-runs", "1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["objects_removed"], 2, "{v}"); // v1 a.txt + the v1 manifest
    assert!(v["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(objects(&ws).len(), before - 2);
    // What pipe.lock references survives: deleting the out restores it.
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    assert_eq!(ws.run_ok(&[]).restored().len(), 1);
    assert_eq!(ws.read("out/a.txt"), "v2 with more bytes\n");
}

/// The activation cache's files (written here without MLX, sealed as the trainer seals
/// them) are counted by `pipe cache stats`, reported by `pipe gc --dry-run`, and deleted
/// by `pipe gc`: unused for too long, least recently used over the budget, temporary
/// files of writers that are gone. `pipe cache verify` deletes a damaged one.
#[test]
fn gc_and_stats_manage_the_activation_cache() {
    use pipe_engine::cache::activations::{dir, write_sealed_for_tests};
    let ws = ws();
    let d = dir(&ws.path(""));
    let key = |n: u8| format!("{n:02x}").repeat(32);
    let old = write_sealed_for_tests(&d, &key(1), &[0.0; 1024]).unwrap();
    let recent = write_sealed_for_tests(&d, &key(2), &[0.0; 1024]).unwrap();
    let f = std::fs::File::options().append(true).open(&old).unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    f.set_modified(std::time::SystemTime::now() - 10 * day)
        .unwrap();
    let dead = d.join(format!(".{}.{}.tmp.safetensors", key(3), u32::MAX - 1));
    std::fs::write(&dead, "cut short").unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = ws.pipe().args(args).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let stats = json(&["cache", "stats"]);
    assert_eq!(stats["activations"]["entries"], 2, "{stats}");
    assert_eq!(stats["activations"]["temp_files"], 1, "{stats}");
    let size = std::fs::metadata(&old).unwrap().len();
    assert_eq!(stats["activations"]["bytes"], 2 * size);

    let dry = json(&["gc", "--dry-run", "--activation-max-age", "7"]);
    assert_eq!(dry["activations"]["entries_removed"], 1, "{dry}");
    assert_eq!(dry["activations"]["expired"], 1);
    assert_eq!(dry["activations"]["temp_removed"], 1);
    assert!(old.exists() && dead.exists(), "a dry run deletes nothing");

    let done = json(&["gc", "--activation-max-age", "7"]);
    assert_eq!(done["activations"], dry["activations"]);
    assert!(!old.exists() && !dead.exists() && recent.exists());

    let bytes = std::fs::read(&recent).unwrap();
    std::fs::write(&recent, &bytes[..bytes.len() - 4]).unwrap();
    let verified = json(&["cache", "verify"]);
    assert_eq!(verified["activations"]["checked"], 1, "{verified}");
    assert!(!recent.exists(), "a damaged file is deleted");

    write_sealed_for_tests(&d, &key(4), &[0.0; 1024]).unwrap();
    let over = json(&["gc", "--activation-budget-mb", "0"]);
    assert_eq!(over["activations"]["entries_removed"], 1, "{over}");
    assert_eq!(json(&["cache", "stats"])["activations"]["entries"], 0);
}

/// The base-model scores evaluate stages keep (`cache/eval-base/v1/`) follow the activation
/// cache's age rule: `pipe gc` deletes an entry unused for longer than
/// `--activation-max-age` days, and reading an entry counts as using it.
#[test]
fn gc_deletes_base_model_scores_unused_for_too_long() {
    use pipe_mlx_core::stages::evaluate::base_scores::{self, BaseScores};
    let ws = ws();
    let dir = ws.path(base_scores::DIR);
    let scores = BaseScores {
        scores: pipe_schema::evaluate::Scores {
            loss: 2.5,
            perplexity: 12.18,
            exact_match: 0.5,
            contains_match: 0.5,
            seconds: 1.0,
            exact_match_ci: None,
            contains_match_ci: None,
        },
        answers: vec![("walked".into(), "walked".into())],
    };
    let entry = |c: char| dir.join(format!("{}.json", c.to_string().repeat(64)));
    let (unused, read, recent) = (entry('a'), entry('b'), entry('c'));
    let day = std::time::Duration::from_secs(24 * 3600);
    for (path, age) in [(&unused, 10 * day), (&read, 10 * day), (&recent, day)] {
        base_scores::store(path, &scores);
        let f = std::fs::File::options().append(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }
    // An evaluation reads `read` back: it was used just now.
    assert_eq!(base_scores::load(&read, 1), Some(scores));

    let gc = |args: &[&str]| -> serde_json::Value {
        let out = ws
            .pipe()
            .arg("gc")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = gc(&["--dry-run", "--activation-max-age", "7"]);
    assert_eq!(dry["eval_base"]["entries_removed"], 1, "{dry}");
    assert_eq!(dry["eval_base"]["entries_kept"], 2, "{dry}");
    assert!(unused.exists(), "a dry run deletes nothing");

    let done = gc(&["--activation-max-age", "7"]);
    assert_eq!(done["eval_base"], dry["eval_base"]);
    assert!(!unused.exists() && read.exists() && recent.exists());
}

/// `pipe gc` while a run is in its middle: gc waits for the run (it says so), and when
/// both are done the run's outs are all in the cache: the next run runs nothing, and a
/// deleted out comes back from the cache.
#[test]
fn gc_during_a_run_waits_for_it_and_keeps_what_it_made() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let ws = Ws::new();
    ws.file("in.txt", "v1\n").pipeline(
        "stages:\n  first:\n    cmd: mkdir -p out && cat in.txt > out/a.txt\n    deps: [in.txt]\n    outs: [out/a.txt]\n  second:\n    cmd: touch started && while [ ! -e gate ]; do sleep 0.05; done && cat out/a.txt out/a.txt > b.txt\n    deps: [out/a.txt]\n    outs: [b.txt]\n",
    );
    let pipe = || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"));
        c.current_dir(ws.dir.path()).env("NO_COLOR", "1");
        c
    };
    let mut run = pipe()
        .args(["run", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !ws.exists("started") {
        assert!(run.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut gc = pipe()
        .args(["gc", "--keep-runs", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = String::new();
    BufReader::new(gc.stderr.take().unwrap())
        .read_line(&mut waiting)
        .unwrap();
    assert!(
        waiting.contains(&format!(
            "waiting for another pipe run (pid {}) to finish",
            run.id()
        )),
        "{waiting}"
    );
    assert!(
        gc.try_wait().unwrap().is_none(),
        "gc went ahead during the run"
    );
    ws.file("gate", "");
    assert!(run.wait().unwrap().success());
    let gc = gc.wait_with_output().unwrap();
    assert!(gc.status.success());
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["objects_removed"], 0, "{report}");

    assert!(ws.run_ok(&[]).ran().is_empty());
    std::fs::remove_file(ws.path("b.txt")).unwrap();
    std::fs::remove_file(ws.path("out/a.txt")).unwrap();
    let again = ws.run_ok(&[]);
    assert!(again.ran().is_empty(), "{:?}", again.ran());
    assert_eq!(again.restored().len(), 2);
    assert_eq!(ws.read("b.txt"), "v1\nv1\n");
}
