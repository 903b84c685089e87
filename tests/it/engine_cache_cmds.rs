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
    #[allow(clippy::permissions_set_readonly_false)]
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
