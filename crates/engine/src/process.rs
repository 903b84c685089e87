//! Processes: whether one is alive, signalling the process group of a child, and ending
//! this process at once. One implementation of each, so every caller follows the same
//! rules (which errno means "alive", which ids are never signalled).
//!
//! Off Unix there are no signals: [`is_alive`] answers `true` (callers then keep what a
//! live process might still use) and [`signal_group`] does nothing.

/// A signal pipe sends to the commands it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGINT`: stop, as Ctrl-C would.
    Interrupt,
    /// `SIGKILL`: stop now.
    Kill,
}

#[cfg(unix)]
impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// The id as `kill(2)` takes it, or `None` for 0 (which `kill` reads as "this process's
/// group") and ids above `pid_t::MAX` (which would turn negative, naming a group).
#[cfg(unix)]
fn pid_t(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

/// Whether a process with this id exists (a zombie, not yet reaped, still does).
///
/// `kill(pid, 0)` sends nothing: success or `EPERM` (it exists but belongs to another
/// user) mean alive, `ESRCH` means gone. 0 and ids beyond `pid_t` name no process, so they
/// count as gone. (1 is alive: in a container, pipe itself may be process 1.)
pub fn is_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Some(pid) = pid_t(pid) else {
            return false;
        };
        // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// kill(2) of `target` (a pid, or a negated process group id that is not 0 or -1); a
/// target that has already exited is not an error.
#[cfg(unix)]
fn kill_unless_gone(target: libc::pid_t, signal: Signal) -> std::io::Result<()> {
    // SAFETY: kill(2) only sends a signal; callers never pass 0 or -1.
    if unsafe { libc::kill(target, signal.number()) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Sends `signal` to the process group `pgid`: a child spawned with `process_group(0)`
/// leads a group whose id is its pid, so this reaches it and everything it started. A group
/// that has already exited is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let Some(pgid) = pid_t(pgid).filter(|&p| p > 1) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{pgid} is not a process group pipe started"),
            ));
        };
        // A negative id names the group; pgid > 1, so it is never this process's own
        // group (0) or every process (-1).
        kill_unless_gone(-pgid, signal)
    }
    #[cfg(not(unix))]
    {
        let _ = (pgid, signal);
        Ok(())
    }
}

/// Waits for `child`, the leader of its own process group, then kills what is left of
/// the group before reaping the child: what a command left running (a `&` job, the
/// grandchildren of a killed shell) must not outlive it. On Linux the exited child stays
/// a zombie (`waitid` with `WNOWAIT`) until its group is killed, so its id, which names
/// the group, cannot be reused by another process in between.
pub fn wait_and_end_group(
    child: &mut std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    #[cfg(target_os = "linux")]
    {
        let pid: libc::id_t = child.id();
        loop {
            // SAFETY: a zeroed siginfo_t is a valid out-parameter; WNOWAIT leaves the
            // child to be reaped by `child.wait()` below.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc =
                unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                // Already reaped (ECHILD): `child.wait()` answers from its own record.
                break;
            }
        }
    }
    #[cfg(unix)]
    {
        let _ = signal_group(child.id(), Signal::Kill);
        wait_group_gone(child.id());
    }
    child.wait()
}

/// The live (not zombie) processes whose process group is `pgid`, from `/proc`.
#[cfg(target_os = "linux")]
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are read after the last `)`.
#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Waits (up to 10 s) until no live process is left in group `pgid` after a `SIGKILL`:
/// the signal is not instant (a `write` in progress completes first), and what the group
/// wrote is read or removed next. Zombies count as gone (they write nothing, and whether
/// they are reaped depends on the system's init). `false` if some are still there.
/// Elsewhere than Linux there is no cheap way to list a group: it returns at once.
pub fn wait_group_gone(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !group_members(pgid).is_empty() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pgid;
        true
    }
}

/// Sends `signal` to the one process `pid` (not its group): how `pipe ui` stops a run,
/// as Ctrl-C would (`pipe run` then interrupts its stages itself). A process that has
/// already exited is not an error; ids that name no single process are refused.
pub fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let Some(pid) = pid_t(pid).filter(|&p| p > 1) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{pid} is not a process pipe can signal"),
            ));
        };
        kill_unless_gone(pid, signal)
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, signal);
        Ok(())
    }
}

/// Makes the child `command` starts die with this thread (Linux: `PR_SET_PDEATHSIG`,
/// SIGKILL), so a `kill -9` of pipe leaves no child behind. The signal comes when the
/// *thread* that spawned the child ends, so spawn from a thread that lives as long as the
/// child should (e.g. the one that waits for it). Elsewhere this does nothing.
pub fn die_with_parent(command: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: prctl and getppid are async-signal-safe; prctl only asks the kernel to
        // SIGKILL the child when the thread that started it ends. It reaches this child
        // only. If pipe died before prctl, the signal will never come, so the child gives
        // up at once.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// A command that starts this very program again: its path, or, on Linux, once that path
/// no longer holds a file (a rebuild or an upgrade during a nightly run unlinked it), the
/// running program's own file through `/proc/self/exe`, with `argv[0]` unchanged for
/// messages. The path stays the program otherwise, because a command may run elsewhere
/// (a Slurm job names it on another node), where `/proc/self/exe` would be `srun` itself.
pub fn this_program() -> std::io::Result<std::process::Command> {
    let path = std::env::current_exe()?;
    #[cfg(target_os = "linux")]
    if !path.exists() {
        use std::os::unix::process::CommandExt;
        let own = std::path::Path::new("/proc/self/exe");
        if own.exists() {
            let mut command = std::process::Command::new(own);
            command.arg0(path);
            return Ok(command);
        }
    }
    Ok(std::process::Command::new(path))
}

/// Ends the process with `code` at once: flushes Rust's stdout and stderr, then `_exit`,
/// so no C exit handler or library destructor runs.
///
/// On Linux, MLX's CPU backend calls OpenBLAS from its own worker threads; after that,
/// OpenBLAS's exit-time `blas_thread_shutdown_` can wait forever to join a worker (seen
/// with Debian's libopenblas0-pthread after generation). Every file pipe writes is already
/// complete (written atomically, synced where it matters), so there is nothing left for
/// exit handlers to do.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: _exit only ends the process; nothing runs after it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    #[test]
    fn this_process_is_alive() {
        assert!(is_alive(std::process::id()));
    }

    /// While the program's file is there, the command names it by its path: a Slurm job
    /// hands that path to `srun` on another node (`/proc/self/exe` would name `srun`).
    #[test]
    fn this_program_is_its_path_while_the_file_is_there() {
        let command = this_program().unwrap();
        assert_eq!(command.get_program(), std::env::current_exe().unwrap());
    }

    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn ids_that_name_no_single_process_are_not_alive() {
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(!is_alive(pid), "{pid}");
        }
    }

    #[test]
    fn signal_group_stops_the_child() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        signal_group(child.id(), Signal::Kill).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn wait_and_end_group_kills_what_the_command_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        // The shell exits at once, leaving `sleep` running in its group.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("sleep 600 & echo $! > {}", pidfile.display()))
            .process_group(0)
            .spawn()
            .unwrap();
        let status = wait_and_end_group(&mut child).unwrap();
        assert!(status.success());
        let bg: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed; it may stay a zombie until init reaps it, so read its state.
        let state = std::fs::read_to_string(format!("/proc/{bg}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "{bg} still runs: {state:?}"
        );
    }

    #[test]
    fn signal_interrupts_one_process_and_refuses_0_and_1() {
        // A test run started in the background of a non-interactive shell inherits SIGINT
        // ignored, and an ignored signal stays ignored across exec: give the child the
        // default action. And signal it only once it has exec'd: between fork and exec it
        // still runs this process's handlers (a ctrlc handler another test installed).
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo ready; exec sleep 30"])
            .stdout(std::process::Stdio::piped());
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, "ready\n");
        signal(child.id(), Signal::Interrupt).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGINT));
        for pid in [0, 1] {
            let err = signal(pid, Signal::Interrupt).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn signal_group_ignores_a_group_that_is_gone_and_refuses_0_and_1() {
        let mut child = Command::new("true").process_group(0).spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        signal_group(pid, Signal::Interrupt).unwrap();
        for pgid in [0, 1] {
            let err = signal_group(pgid, Signal::Interrupt).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
    }
}
