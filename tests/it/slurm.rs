//! `pipe run --executor slurm` against a real one-node Slurm cluster: Debian's `slurm-wlm`
//! and `munge` (installed by `tools/test-deps.sh`), started here with a private key,
//! socket, config and ports, so nothing on the machine is touched. Stages run as batch
//! jobs, in dependency order, with what they declare (`mem_gb` → `--mem`); the lock file
//! and run history are a local run's; a failed job fails its stage with Slurm's exit status
//! and skips what depends on it; an interrupt cancels the running job.
//!
//! Slurm's daemons run as root (`SlurmUser=root`), as `.ci/run` does.

use crate::support::{Ws, set};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// munged, slurmctld and slurmd, killed on drop.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hostname() -> String {
    let out = Command::new("hostname").arg("-s").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the Slurm test starts slurmd, which runs jobs as their user: run it as root (CI does)"
        );
        for program in [
            "/usr/sbin/munged",
            "/usr/sbin/slurmctld",
            "/usr/sbin/slurmd",
        ] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install slurm-wlm and munge with tools/test-deps.sh"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // munged wants the directory of its socket searchable by all.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        std::fs::write(d.join("munge.key"), key).unwrap();
        std::fs::set_permissions(
            d.join("munge.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let socket = d.join("munge.sock");
        let mut daemons = vec![
            Command::new("/usr/sbin/munged")
                .arg("--foreground")
                .arg("--force")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--key-file={}", d.join("munge.key").display()))
                .arg(format!("--log-file={}", d.join("log/munged.log").display()))
                .arg(format!("--pid-file={}", d.join("munged.pid").display()))
                .arg(format!("--seed-file={}", d.join("munged.seed").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ];
        wait_until(Duration::from_secs(20), "munged's socket", || {
            socket.exists()
        });
        let host = hostname();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=pipetest\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmdPort={slurmd}\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={socket}\n\
             CredType=cred/munge\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             SchedulerType=sched/backfill\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core_Memory\n\
             MinJobAge=600\n\
             KillWait=2\n\
             ReturnToService=2\n\
             MpiDefault=none\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4096 State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            ctld = free_port(),
            slurmd = free_port(),
            socket = socket.display(),
            d = d.display(),
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let cluster_daemon = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .env("SLURM_CONF", d.join("slurm.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        daemons.push(cluster_daemon("/usr/sbin/slurmctld", &["-D", "-i"]));
        daemons.push(cluster_daemon("/usr/sbin/slurmd", &["-D"]));
        let cluster = Cluster { dir, daemons };
        wait_until(Duration::from_secs(60), "the Slurm node to be idle", || {
            cluster
                .command("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        cluster
    }

    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm client command aimed at this cluster.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// `scontrol show job -o ID`.
    pub(crate) fn job_record(&self, id: &str) -> String {
        let out = self
            .command("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().rev() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fan-out and fan-in of command stages, a built-in kind (ingest, which runs as
/// `pipe __run-stage` inside the job) and a stage asking for memory. Each command stage
/// writes the id of the Slurm job it ran in.
const PIPELINE: &str = r#"stages:
  prepare:
    cmd: mkdir -p out && echo "prepare $SLURM_JOB_ID" > out/prepare.txt
    outs: [out/prepare.txt]
  left:
    cmd: cat out/prepare.txt > out/left.txt && echo "left $SLURM_JOB_ID $SLURM_MEM_PER_NODE" >> out/left.txt
    deps: [out/prepare.txt]
    outs: [out/left.txt]
    resources: {mem_gb: 1}
  right:
    cmd: echo "right $SLURM_JOB_ID" > out/right.txt
    deps: [out/prepare.txt]
    outs: [out/right.txt]
  join:
    cmd: cat out/left.txt out/right.txt > out/join.txt && echo "join $SLURM_JOB_ID" >> out/join.txt
    deps: [out/left.txt, out/right.txt]
    outs: [out/join.txt]
  ingest:
    kind: ingest
    with: {source: raw/qa.jsonl, out: data}
"#;

fn rows() -> String {
    (0..20)
        .map(|i| format!("{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n"))
        .collect()
}

/// The Slurm job id a stage's out records after `label`.
fn job_of(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label} ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{label}` line in {text:?}"))
        .to_owned()
}

#[test]
fn stages_run_as_slurm_jobs_and_leave_what_a_local_run_leaves() {
    let cluster = Cluster::start();
    let conf = cluster.conf();
    let env = [("SLURM_CONF", conf.to_str().unwrap())];
    let ws = Ws::new();
    ws.file("raw/qa.jsonl", &rows()).pipeline(PIPELINE);

    let run = ws.run_env(&["--executor", "slurm"], &env);
    assert_eq!(
        run.code,
        0,
        "{}\n{:#?}\n{}",
        run.stderr,
        run.events,
        cluster.logs()
    );
    assert_eq!(
        run.ran(),
        set(&["prepare", "left", "right", "join", "ingest"])
    );
    // Every command stage ran in a job of its own, after its upstream jobs.
    let join = ws.read("out/join.txt");
    let ids: Vec<u64> = ["prepare", "left", "right", "join"]
        .iter()
        .map(|label| job_of(&join, label).parse().unwrap())
        .collect();
    assert!(
        ids[0] < ids[1] && ids[0] < ids[2] && ids[1] < ids[3] && ids[2] < ids[3],
        "{join}"
    );
    // `mem_gb: 1` reached Slurm as `--mem=1G`: the job saw it, and the controller has it.
    assert!(join.contains(&format!("left {} 1024", ids[1])), "{join}");
    assert!(
        cluster
            .job_record(&ids[1].to_string())
            .contains("MinMemoryNode=1G")
    );
    // The built-in kind ran inside its job and wrote its outs on the shared workspace.
    assert!(ws.exists("data/train.jsonl"), "ingest wrote no data");
    let log = std::fs::read_dir(ws.path("cache/logs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.file_name().unwrap() == "ingest.log")
        .expect("ingest.log");
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("is Slurm job"),
        "the stage log names its job"
    );
    // The same stage run locally in another workspace writes byte-identical outs.
    let local = Ws::new();
    local.file("raw/qa.jsonl", &rows()).pipeline(PIPELINE);
    local.run_ok(&["-s", "ingest"]);
    let files = |ws: &Ws| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = walkdir::WalkDir::new(ws.path("data"))
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(ws.dir.path()).unwrap();
                (rel.display().to_string(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let (on_slurm, here) = (files(&ws), files(&local));
    assert!(!on_slurm.is_empty());
    assert!(on_slurm == here, "Slurm and local ingest outs differ");

    // The lock file is a local run's: a local run finds everything up to date, and the
    // run history has the Slurm run with each stage.
    let again = ws.run_ok(&[]);
    assert!(again.started().is_empty(), "{:#?}", again.events);
    let list = ws.pipe().args(["runs", "list", "--json"]).output().unwrap();
    let runs: Vec<Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let slurm_run = &runs[1];
    assert_eq!(slurm_run["status"], "succeeded", "{slurm_run:#}");
    let stages = slurm_run["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 5, "{slurm_run:#}");
    assert!(stages.iter().all(|s| s["status"] == "ran"), "{slurm_run:#}");
    assert!(
        runs[0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached" && s["produced_by"] == slurm_run["id"])
    );

    // A failing job fails its stage with the job's exit status, skips its downstream, and
    // leaves no partial out; what does not depend on it still ran (--keep-going).
    ws.pipeline(&PIPELINE.replace(
        "echo \"right $SLURM_JOB_ID\" > out/right.txt",
        "echo partial > out/right.txt; exit 3",
    ));
    let failed = ws.run_env(&["--executor", "slurm", "--keep-going"], &env);
    assert_eq!(failed.code, 1, "{:#?}", failed.events);
    assert_eq!(failed.failed(), set(&["right"]));
    let error = failed.event("stage-failed", "right")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("Slurm job ") && error.ends_with("exited with status 3"),
        "{error}"
    );
    assert!(!ws.exists("out/right.txt"), "a partial out survived");
    assert!(
        failed
            .events
            .iter()
            .any(|e| e["event"] == "stage-skipped" && e["stage"] == "join")
    );

    // An interrupt cancels the running job and ends the run as interrupted.
    ws.pipeline(&PIPELINE.replace(
        "echo \"right $SLURM_JOB_ID\" > out/right.txt",
        "echo started > out/started; sleep 120; echo late > out/right.txt",
    ));
    let child = Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .current_dir(ws.dir.path())
        .env("SLURM_CONF", &conf)
        .args(["run", "--json", "--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the sleeping job to start", || {
        ws.exists("out/started")
    });
    let running: Vec<String> = {
        let out = cluster
            .command("squeue")
            .args(["-h", "-o", "%i %j"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.ends_with("pipe:right"))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(running.len(), 1, "one job for `right` in the queue");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = cluster.job_record(&running[0]);
    assert!(state.contains("JobState=CANCELLED"), "{state}");
    assert!(!ws.exists("out/right.txt"));

    // `pipe run` killed outright: its job goes on running on the cluster until the next
    // run, which cancels it, waits for it to end, removes its partial out, and runs the
    // stage again.
    ws.pipeline(&PIPELINE.replace(
        "echo \"right $SLURM_JOB_ID\" > out/right.txt",
        "echo partial > out/right.txt; echo started > out/started; if [ -e slow ]; then sleep 120; fi; echo \"right $SLURM_JOB_ID\" > out/right.txt",
    ));
    let _ = std::fs::remove_file(ws.path("out/started"));
    ws.file("slow", "");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pipe"))
        .current_dir(ws.dir.path())
        .env("SLURM_CONF", &conf)
        .args(["run", "--json", "--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the sleeping job to start", || {
        ws.exists("out/started")
    });
    let records: Vec<String> = std::fs::read_dir(ws.path("cache/v1/groups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("slurm-"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let job = records[0]
        .trim_start_matches("slurm-")
        .trim_end_matches(".json")
        .to_owned();
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        cluster.job_record(&job).contains("JobState=RUNNING"),
        "the killed run's job runs on: {}",
        cluster.job_record(&job)
    );
    std::fs::remove_file(ws.path("slow")).unwrap();
    let next = ws.run_env(
        &["--executor", "slurm"],
        &[("SLURM_CONF", conf.to_str().unwrap())],
    );
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(
        next.stderr.contains(&format!(
            "cancelled Slurm job {job} of stage `right` left running by a killed run; removed 1 partial out"
        )),
        "{}",
        next.stderr
    );
    let state = cluster.job_record(&job);
    assert!(state.contains("JobState=CANCELLED"), "{state}");
    let right = ws.read("out/right.txt");
    assert!(
        right.starts_with("right ") && !right.contains(&job),
        "{right}"
    );
    assert!(
        !ws.path("cache/v1/groups").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("slurm-")),
        "the record of a finished job is removed"
    );
}

/// A matrix stage whose expansions read their own input file, and a stage gathering them.
/// Each expansion records the array job and task it ran as, and the word it was given.
const MATRIX: &str = r#"stages:
  shard:
    matrix:
      n: [0, 1, 2]
    cmd: mkdir -p out && { cat in/{{ matrix.n }}.txt; echo "array ${SLURM_ARRAY_JOB_ID:-none} ${SLURM_ARRAY_TASK_ID:-none}"; } > out/{{ matrix.n }}.txt
    deps: ["in/{{ matrix.n }}.txt"]
    outs: ["out/{{ matrix.n }}.txt"]
  gather:
    cmd: cat out/0.txt out/1.txt out/2.txt > out/all.txt
    deps: [out/0.txt, out/1.txt, out/2.txt]
    outs: [out/all.txt]
"#;

/// The `array JOB TASK` a shard's out records.
fn array_of(text: &str) -> (String, String) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("array "))
        .unwrap_or_else(|| panic!("no array line in {text:?}"));
    let (job, task) = line.split_once(' ').unwrap();
    (job.to_owned(), task.to_owned())
}

#[test]
fn a_matrix_runs_as_one_job_array_and_only_its_stale_expansions_rerun() {
    let cluster = Cluster::start();
    let conf = cluster.conf();
    let env = [("SLURM_CONF", conf.to_str().unwrap())];
    let ws = Ws::new();
    for n in 0..3 {
        ws.file(&format!("in/{n}.txt"), &format!("input {n}\n"));
    }
    ws.pipeline(MATRIX);

    let run = ws.run_env(&["--executor", "slurm"], &env);
    assert_eq!(
        run.code,
        0,
        "{}\n{:#?}\n{}",
        run.stderr,
        run.events,
        cluster.logs()
    );
    assert_eq!(
        run.ran(),
        set(&["shard@n=0", "shard@n=1", "shard@n=2", "gather"])
    );
    // The three expansions were the three tasks of one array.
    let shards: Vec<(String, String)> = (0..3)
        .map(|n| array_of(&ws.read(&format!("out/{n}.txt"))))
        .collect();
    let job = &shards[0].0;
    assert!(job.parse::<u64>().is_ok(), "{shards:?}");
    assert!(shards.iter().all(|(j, _)| j == job), "{shards:?}");
    let mut tasks: Vec<&str> = shards.iter().map(|(_, t)| t.as_str()).collect();
    tasks.sort();
    assert_eq!(tasks, ["0", "1", "2"]);
    let record = cluster.job_record(&format!("{job}_0"));
    assert!(
        record.contains("JobName=pipe:shard") && record.contains(&format!("ArrayJobId={job}")),
        "{record}"
    );
    // Each stage's own log has its command's output and names its task.
    let logs = ws.path("cache/logs");
    let log_of = |stage: &str| -> String {
        std::fs::read_dir(&logs)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{stage}.log"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|| panic!("no log of {stage}"))
    };
    let one = log_of("shard@n=1");
    assert!(one.contains(&format!("is Slurm job {job}_")), "{one}");
    // Outs and the lock file are a local run's: the gathered file holds each input, and a
    // local run has nothing to do. The task files are gone.
    let all = ws.read("out/all.txt");
    for n in 0..3 {
        assert!(all.contains(&format!("input {n}\n")), "{all}");
    }
    assert!(ws.run_ok(&[]).started().is_empty());
    let arrays = ws.path("cache/slurm/arrays");
    assert!(
        !arrays.exists() || arrays.read_dir().unwrap().next().is_none(),
        "task files left in {arrays:?}"
    );

    // One changed input reruns its expansion alone, as a plain job.
    ws.file("in/1.txt", "input 1, edited\n");
    let again = ws.run_env(&["--executor", "slurm"], &env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.ran(), set(&["shard@n=1", "gather"]));
    assert_eq!(array_of(&ws.read("out/1.txt")).0, "none");
    assert_eq!(array_of(&ws.read("out/0.txt")).0, *job);

    // A task that fails fails its stage alone, with its exit status, and leaves no partial
    // out; its siblings in the array finish and are recorded (--keep-going).
    ws.pipeline(&MATRIX.replace(
        "} > out/{{ matrix.n }}.txt",
        "} > out/{{ matrix.n }}.txt; if [ {{ matrix.n }} = 2 ]; then exit 3; fi",
    ));
    let failed = ws.run_env(&["--executor", "slurm", "--keep-going"], &env);
    assert_eq!(failed.code, 1, "{:#?}", failed.events);
    assert_eq!(failed.ran(), set(&["shard@n=0", "shard@n=1"]));
    assert_eq!(failed.failed(), set(&["shard@n=2"]));
    let error = failed.event("stage-failed", "shard@n=2")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    let (array, _) = array_of(&ws.read("out/0.txt"));
    assert_eq!(error, format!("Slurm job {array}_2 exited with status 3"));
    assert!(!ws.exists("out/2.txt"), "a partial out survived");
    assert!(
        failed
            .events
            .iter()
            .any(|e| e["event"] == "stage-skipped" && e["stage"] == "gather")
    );
}
