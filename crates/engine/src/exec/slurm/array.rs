//! Matrix siblings as one Slurm job array: the stages a matrix expands to usually become
//! ready together (they share their upstream), ask the cluster for the same thing, and
//! differ only in their command. Submitting them as `sbatch --array=0-N` gives one queue
//! entry the user can watch or cancel as a whole (`scancel ID`). An array holds at most
//! [`MAX_TASKS`] expansions; the rest go in the next one.
//!
//! Each task finds its stage's command in a task file, `<dir>/<task>.json`: the batch
//! script runs `pipe __slurm-task <dir>`, which reads `$SLURM_ARRAY_TASK_ID`, points
//! stdout and stderr at the stage's log and execs the command. So argv and environment
//! are passed as data, never through a shell, as for a single job.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The hidden subcommand an array task runs.
pub const TASK_RUNNER: &str = "__slurm-task";

/// Most tasks in one array: Slurm's default `MaxArraySize` is 1001, the largest index
/// 1000, and `sbatch` refuses a larger array whole.
pub const MAX_TASKS: usize = 1000;

/// The folder of every array's task files.
fn arrays_dir(root: &Path) -> PathBuf {
    root.join("cache").join("slurm").join("arrays")
}

/// Removes the task folders of arrays submitted by runs that have died (named by their
/// pid). Call it only while holding the workspace lock, once the dead runs' jobs are known
/// to have ended (`groups::reap` cancels them first): a live run's folders stay.
pub fn remove_orphans(root: &Path) {
    let Ok(entries) = std::fs::read_dir(arrays_dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = entry
            .file_name()
            .to_str()
            .and_then(|name| name.split('-').next()?.parse::<u32>().ok());
        if owner.is_some_and(|pid| !crate::process::is_alive(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One stage's command, as the task that runs it needs it.
#[derive(Debug, Serialize, Deserialize)]
struct TaskFile {
    program: OsString,
    args: Vec<OsString>,
    /// Variables set (`Some`) or removed (`None`) on top of the job's environment.
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
    /// The stage's log, appended to.
    log: PathBuf,
}

impl TaskFile {
    /// The task file of `command`, with its output going to `log`.
    fn of(command: &Command, log: &Path) -> Self {
        TaskFile {
            program: command.get_program().to_owned(),
            args: command.get_args().map(OsString::from).collect(),
            env: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(OsString::from)))
                .collect(),
            dir: command.get_current_dir().map(Path::to_owned),
            log: log.to_owned(),
        }
    }
}

/// A submitted array: its job id and its task files.
#[derive(Debug)]
pub struct Array {
    /// The array's job id (`ArrayJobId`).
    pub job: String,
    dir: PathBuf,
}

impl Array {
    /// The id Slurm gives task `index` (`JOB_INDEX`), for `scontrol` and `scancel`.
    pub fn task(&self, index: usize) -> String {
        format!("{}_{index}", self.job)
    }

    /// What task `index` printed before it could open its stage's log (a task file it
    /// could not read, a command it could not start), for the error of a failed task.
    pub fn runner_output(&self, index: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(format!("{index}.out"))).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// Removes the task files once every task has ended.
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Submits `tasks` (each a stage's command and its log) as one array named `name`, asking
/// for `placement` (see [`super::placement`]) per task.
pub fn submit(
    root: &Path,
    name: &str,
    tasks: &[(Command, PathBuf)],
    placement: &[String],
) -> Result<Array, String> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let dir = root
        .join("cache")
        .join("slurm")
        .join("arrays")
        .join(format!(
            "{}-{}-{}",
            std::process::id(),
            crate::exec::events::utc_now().replace([':', '.'], ""),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
    fs_err::create_dir_all(&dir).map_err(|e| format!("cannot write the Slurm task files: {e}"))?;
    for (index, (command, log)) in tasks.iter().enumerate() {
        crate::atomic_write::write_json(
            &dir.join(format!("{index}.json")),
            &TaskFile::of(command, log),
        )
        .map_err(|e| format!("cannot write the Slurm task files: {e}"))?;
    }
    let mut options = vec![
        "--parsable".to_owned(),
        format!("--job-name=pipe:{name}"),
        format!("--array=0-{}", tasks.len().saturating_sub(1)),
        format!("--output={}", dir.join("%a.out").display()),
    ];
    options.extend(placement.iter().cloned());
    let exe = std::env::current_exe().map_err(|e| format!("cannot find pipe itself: {e}"))?;
    let mut runner = Command::new(exe);
    runner.arg(TASK_RUNNER).arg(&dir);
    match super::submit(&runner, root, &options) {
        Ok(job) => Ok(Array { job, dir }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The command of task `index` of the array whose task files are in `dir`, with its
/// output going to its stage's log; the task runner execs it.
pub fn task_command(dir: &Path, index: &str) -> Result<Command, String> {
    let path = dir.join(format!("{index}.json"));
    let text = fs_err::read_to_string(&path).map_err(|e| e.to_string())?;
    let task: TaskFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a task file: {e}", path.display()))?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&task.log)
        .map_err(|e| format!("cannot open the stage's log {}: {e}", task.log.display()))?;
    let mut command = Command::new(&task.program);
    command
        .args(&task.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    for (key, value) in task.env {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    if let Some(dir) = task.dir {
        command.current_dir(dir);
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_file_gives_back_the_stage_command_with_output_to_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stage.log");
        std::fs::write(&log, "pipe: stage `a` is Slurm job 7_0\n").unwrap();
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "echo \"$GREETING, $1\"; echo oops >&2",
                "sh",
                "a b; $HOME",
            ])
            .env("GREETING", "hello")
            .env_remove("NOT_FOR_THE_STAGE")
            .current_dir(dir.path());
        crate::atomic_write::write_json(&dir.path().join("3.json"), &TaskFile::of(&command, &log))
            .unwrap();

        let mut back = task_command(dir.path(), "3").unwrap();
        assert_eq!(back.get_program(), "sh");
        assert_eq!(back.get_current_dir(), Some(dir.path()));
        assert!(back.status().unwrap().success());
        // The argument with a space, a `;` and a `$` reached the command as one word.
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "pipe: stage `a` is Slurm job 7_0\nhello, a b; $HOME\noops\n"
        );
        let missing = task_command(dir.path(), "4").unwrap_err();
        assert!(missing.contains("4.json"), "{missing}");
    }

    #[test]
    fn only_the_task_folders_of_dead_runs_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let arrays = arrays_dir(root.path());
        let mine = arrays.join(format!("{}-20261207T031000Z-0", std::process::id()));
        // No process has pid 2^22 + 1 (Linux caps pids at 2^22).
        let dead = arrays.join("4194305-20261207T031000Z-0");
        for dir in [&mine, &dead] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("0.json"), "{}").unwrap();
        }
        remove_orphans(root.path());
        assert!(mine.join("0.json").exists());
        assert!(!dead.exists());
    }
}
