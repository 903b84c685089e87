//! The shared remote cache between two "machines" (two workspaces with their own caches):
//! a folder remote with a command pipeline, and a real S3 API (moto's server, PyPI
//! `moto[server]`: it speaks the S3 REST protocol, signatures included, and installs from
//! PyPI with no daemon or root, unlike MinIO here) with the real quickstart. What A pushed,
//! B restores without running a stage; a corrupt remote object is refused.

use crate::support::{Run, Ws, set};
use serde_json::Value;
use std::process::Output;

const PIPELINE: &str = r#"name: shared
remote: REMOTE
stages:
  prep:
    cmd: mkdir -p out/prep && for i in 1 2 3; do echo "row $i $(cat data/in.txt)" > out/prep/part$i.txt; done
    deps: [data/in.txt]
    outs: [out/prep]
  left:
    cmd: cat out/prep/part1.txt out/prep/part2.txt > out/left.txt
    deps: [out/prep]
    outs: [out/left.txt]
  right:
    cmd: wc -l < out/prep/part3.txt > out/right.txt
    deps: [out/prep]
    outs: [out/right.txt]
  join:
    cmd: cat out/left.txt out/right.txt > out/join.txt
    deps: [out/left.txt, out/right.txt]
    outs: [out/join.txt]
  snap:
    kind: version
    with: {data: data, out: out/version.json}
"#;

const ALL: [&str; 5] = ["prep", "left", "right", "join", "snap"];
const OUTS: [&str; 6] = [
    "out/prep/part1.txt",
    "out/prep/part3.txt",
    "out/left.txt",
    "out/right.txt",
    "out/join.txt",
    "out/version.json",
];

/// A workspace holding the pipeline and its data (and, with `lock`, A's lock file, as a
/// git clone of a project that commits it would).
fn machine(remote: &std::path::Path, lock: Option<&str>) -> Ws {
    let ws = Ws::new();
    ws.pipeline(&PIPELINE.replace("REMOTE", &remote.display().to_string()));
    ws.file("data/in.txt", "shared input\n");
    if let Some(lock) = lock {
        ws.file("pipe.lock", lock);
    }
    ws
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_pulled_everything(run: &Run, stages: &[&str], remote: &str) {
    assert_eq!(run.ran(), set(&[]), "nothing runs: {:#?}", run.events);
    assert_eq!(run.restored(), set(stages));
    for stage in stages {
        let from = &run.event("stage-restored", stage)["pulled_from"];
        assert_eq!(from.as_str(), Some(remote), "{stage}");
    }
}

#[test]
fn a_folder_remote_carries_outs_and_data_versions_to_a_second_machine_and_refuses_corruption() {
    let share = tempfile::tempdir().unwrap();
    let remote = share.path().join("pipe-cache");
    let a = machine(&remote, None);
    assert_eq!(a.run_ok(&[]).ran(), set(&ALL));

    let pushed = json(&a.pipe().args(["push", "--json"]).output().unwrap());
    assert!(
        pushed["objects"]["copied"].as_u64().unwrap() >= 6,
        "{pushed}"
    );
    assert!(
        pushed["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "pushed")
    );
    // Content-addressed: a second push sends nothing.
    let again = json(&a.pipe().args(["push", "--json"]).output().unwrap());
    assert_eq!(again["objects"]["copied"], 0, "{again}");
    assert_eq!(again["objects"]["present"], pushed["objects"]["copied"]);

    // B has no lock file and an empty cache: `run --pull` restores every stage.
    let b = machine(&remote, None);
    let run = b.run_ok(&["--pull"]);
    assert_pulled_everything(&run, &ALL, &remote.display().to_string());
    for out in OUTS {
        assert_eq!(b.read(out), a.read(out), "{out}");
    }
    assert_eq!(b.run_ok(&[]).ran(), set(&[]));

    // C has A's lock file: `pipe pull` restores the outs; the run then has nothing to do.
    let lock = a.read("pipe.lock");
    let c = machine(&remote, Some(&lock));
    let pulled = json(&c.pipe().args(["pull", "--json"]).output().unwrap());
    assert_eq!(
        pulled["restored"].as_array().unwrap().len(),
        ALL.len(),
        "{pulled}"
    );
    for out in OUTS {
        assert_eq!(c.read(out), a.read(out), "{out}");
    }
    let run = c.run_ok(&[]);
    assert_eq!((run.ran(), run.restored()), (set(&[]), set(&[])));

    // Data versions travel too: pulled into D's log, then checked out byte for byte.
    let d = machine(&remote, None);
    let id = json(&a.pipe().args(["data", "log", "--json"]).output().unwrap())["id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.pipe()
        .args(["data", "push", "--pipeline", "pipe.yaml"])
        .assert()
        .success();
    d.pipe()
        .args(["data", "pull", &id[..10], "--pipeline", "pipe.yaml"])
        .assert()
        .success();
    d.pipe()
        .args(["data", "checkout", &id[..10], "--to", "restored"])
        .assert()
        .success();
    assert_eq!(d.read("restored/in.txt"), "shared input\n");

    // Someone damages join's object on the share. A pull refuses it and restores nothing
    // from it; `run --pull` says so and runs join here, with the right result.
    let entry: Value = serde_yaml::from_str(&lock).unwrap();
    let hash = entry["stages"]["join"]["outs"]["out/join.txt"]
        .as_str()
        .unwrap()
        .to_owned();
    let object = remote.join("v1/objects").join(&hash[..2]).join(&hash[2..]);
    assert!(object.is_file(), "{}", object.display());
    std::fs::write(&object, "row 1 tampered\n").unwrap();
    let e = machine(&remote, Some(&lock));
    let out = e.pipe().arg("pull").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("object {hash}")) && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(!e.exists("out/join.txt"));
    assert!(
        !e.path("cache/v1/objects")
            .join(&hash[..2])
            .join(&hash[2..])
            .exists()
    );
    let run = e.run_ok(&["--pull"]);
    assert_eq!(run.ran(), set(&["join"]));
    assert!(
        run.event("remote-refused", "join")["error"]
            .as_str()
            .unwrap()
            .contains("corrupt")
    );
    assert_eq!(e.read("out/join.txt"), a.read("out/join.txt"));
    e.pipe().args(["cache", "verify"]).assert().success();
}

#[test]
fn pull_without_a_remote_says_how_to_configure_one() {
    let ws = Ws::new();
    ws.pipeline("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    ws.run_ok(&[]);
    let out = ws
        .pipe()
        .arg("push")
        .env_remove("PIPE_REMOTE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("remote: s3://"), "{stderr}");
    let out = ws
        .pipe()
        .args(["pull", "--remote", "gs://bucket/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://"));
    let missing = ws.path("no-such-share");
    let out = ws
        .pipe()
        .args(["pull", "--remote", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// The quickstart on the real model: A runs it and pushes to S3; B, a second clone with its
/// own cache, runs it with `--pull` and executes nothing.
#[test]
fn the_quickstart_pushed_to_s3_runs_nothing_on_a_second_machine() {
    let python = crate::tracking_s3::moto_python();
    let s3 = crate::tracking_s3::start_s3(&python);
    crate::tracking_s3::boto3(
        &python,
        &s3.endpoint,
        "s3.create_bucket(Bucket='team-cache')",
    );
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/quickstart.yaml"
    ))
    .unwrap();
    let remote = "s3://team-cache/pipe";
    let env = [
        ("AWS_ACCESS_KEY_ID", "pipe-test"),
        ("AWS_SECRET_ACCESS_KEY", "pipe-test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("PIPE_REMOTE", remote),
    ];
    let small = [
        "pipelines/quickstart.yaml",
        "--set",
        "train.iters=4",
        "--set",
        "eval.examples=4",
    ];
    let run_on = |ws: &Ws, extra: &[&str]| -> Run {
        let mut cmd = ws.pipe();
        cmd.arg("run").arg("--json").args(small).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            events: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(run.code, 0, "{}", run.stderr);
        run
    };

    let a = Ws::new();
    a.file("pipelines/quickstart.yaml", &yaml);
    let first = run_on(&a, &["--push"]);
    let stages = first.ran();
    assert!(
        stages.contains("train") && stages.contains("report"),
        "{stages:?}"
    );

    let b = Ws::new();
    b.file("pipelines/quickstart.yaml", &yaml);
    let run = run_on(&b, &["--pull"]);
    let names: Vec<&str> = stages.iter().map(String::as_str).collect();
    assert_pulled_everything(&run, &names, remote);
    for out in [
        "runs/quickstart/lora/adapters.safetensors",
        "runs/quickstart/eval/lora.json",
        "reports/quickstart.html",
    ] {
        assert_eq!(
            std::fs::read(b.path(out)).unwrap(),
            std::fs::read(a.path(out)).unwrap(),
            "{out}"
        );
    }
}

/// A tune stage of command trials that score (x - 0.3)² and log each trial they run.
fn tune_machine(remote: &std::path::Path, n_trials: usize) -> Ws {
    let ws = Ws::new();
    ws.file(
        "trial.sh",
        "echo \"{\\\"value\\\": $(awk -v x=$1 'BEGIN{print (x-0.3)^2}')}\" > \"$PIPE_TRIAL_DIR/metrics.json\"\necho \"$PIPE_TRIAL_INDEX $1\" >> ran.log\n",
    )
    .pipeline(&format!(
        "remote: {}\nstages:\n  search:\n    kind: tune\n    with:\n      out: tune/x\n      space: {{x: {{float: [0.0, 1.0]}}}}\n      objective: {{metric: value, mode: min}}\n      budget: {{n_trials: {n_trials}}}\n      trial:\n        cmd: sh trial.sh {{x}}\n        deps: [trial.sh]\n",
        remote.display()
    ));
    ws
}

#[test]
fn tune_trials_pushed_from_one_machine_are_reused_on_another_and_checked() {
    let share = tempfile::tempdir().unwrap();
    let remote = share.path().join("pipe-cache");
    let a = tune_machine(&remote, 4);
    a.run_ok(&[]);
    let pushed = json(&a.pipe().args(["push", "--json"]).output().unwrap());
    let of = |report: &Value, what: &str, state: &str| {
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["stage"] == what && s["state"] == state)
            .count()
    };
    assert_eq!(of(&pushed, "tune trial", "pushed"), 4, "{pushed}");
    assert_eq!(of(&pushed, "tune study", "pushed"), 1, "{pushed}");
    let again = json(&a.pipe().args(["push", "--json"]).output().unwrap());
    assert_eq!(of(&again, "tune trial", "pushed"), 0, "{again}");
    assert_eq!(of(&again, "tune study", "up-to-date"), 1, "{again}");

    // B extends the study to 6 trials: after a pull it runs only the 2 new ones.
    let b = tune_machine(&remote, 6);
    let pulled = json(&b.pipe().args(["pull", "--json"]).output().unwrap());
    assert_eq!(of(&pulled, "tune trial", "pulled"), 4, "{pulled}");
    assert_eq!(of(&pulled, "tune study", "pulled"), 1, "{pulled}");
    b.run_ok(&[]);
    let ran: Vec<String> = b.read("ran.log").lines().map(str::to_owned).collect();
    assert_eq!(ran.len(), 2, "only the new trials ran on B: {ran:?}");
    assert!(
        ran.iter()
            .all(|l| l.starts_with("4 ") || l.starts_with("5 ")),
        "{ran:?}"
    );
    let trials = |ws: &Ws| -> Vec<Value> {
        ws.read("tune/x/trials.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (on_a, on_b) = (trials(&a), trials(&b));
    assert_eq!(on_b.len(), 6);
    for (x, y) in on_a.iter().zip(&on_b) {
        assert_eq!((&x["key"], &x["value"]), (&y["key"], &y["value"]));
        assert_eq!(y["reused"], true, "{y}");
    }

    // B's new trials go up as a second journal snapshot beside A's; a third machine reads
    // both merged and runs nothing.
    let from_b = json(&b.pipe().args(["push", "--json"]).output().unwrap());
    assert_eq!(of(&from_b, "tune trial", "pushed"), 2, "{from_b}");
    let snapshots = std::fs::read_dir(remote.join("v1/tune/studies"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 2, "no push overwrites another's journal");
    let d = tune_machine(&remote, 6);
    d.pipe().arg("pull").assert().success();
    d.run_ok(&[]);
    assert!(!d.exists("ran.log"), "D ran a trial: {}", d.read("ran.log"));
    assert_eq!(trials(&d).len(), 6);

    // A damaged trial object on the share is refused, and no trial is taken from it.
    let key = on_a[0]["key"].as_str().unwrap();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(remote.join(format!("v1/tune/trials/{key}.json"))).unwrap(),
    )
    .unwrap();
    let manifest = &record["dir"].as_str().unwrap()[..64];
    let object = remote
        .join("v1/objects")
        .join(&manifest[..2])
        .join(&manifest[2..]);
    std::fs::write(&object, "tampered\n").unwrap();
    let c = tune_machine(&remote, 4);
    let out = c.pipe().arg("pull").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(!c.exists(&format!("cache/tune/v1/trials/{key}/trial.json")));
}
