//! Starting ranks: `distributed: {ranks: N}` runs N processes of this same command on
//! loopback, joined by MLX's ring backend; and a Slurm step's tasks get the ring hostfile
//! their step implies.
//!
//! The launcher only waits: rank 0 prints the command's output and writes every file. When
//! a rank fails, the launcher stops the others at once (a survivor would otherwise wait in
//! a collective for a peer that is gone) and says which rank failed and how.

use super::role::{Launched, SlurmStep, expand_tasks_per_node, slurm_base_port, slurm_hostfile};
use anyhow::{Context, bail};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Runs `ranks` copies of this process's command as ranks 0..ranks on loopback and waits
/// for all of them. Ok when every rank succeeded.
pub fn run_local(ranks: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pipe-ranks-")
        .tempdir()
        .context("cannot create the ranks' hostfile folder")?;
    let hostfile = dir.path().join("hostfile.json");
    fs_err::write(&hostfile, loopback_hostfile(&free_ports(ranks)?))?;
    let exe = std::env::current_exe().context("cannot find this executable to start ranks")?;
    let blas_threads = threads_per_rank(ranks);
    let mut children: Vec<Child> = Vec::with_capacity(ranks);
    for rank in 0..ranks {
        let mut command = Command::new(&exe);
        command
            .args(std::env::args_os().skip(1))
            .env("MLX_RANK", rank.to_string())
            .env("MLX_WORLD_SIZE", ranks.to_string())
            .env("MLX_HOSTFILE", &hostfile)
            .stdin(Stdio::null());
        if let Some(n) = blas_threads {
            command.env(BLAS_THREADS_VAR, n.to_string());
        }
        if rank > 0 {
            // Rank 0 speaks for the run; the others' errors still reach stderr.
            command.stdout(Stdio::null());
        }
        pipe_engine::process::die_with_parent(&mut command);
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children);
                bail!("cannot start rank {rank} of {ranks}: {e}");
            }
        }
    }
    wait_all(&mut children)
}

/// OpenBLAS starts one thread per core in every process; N ranks on one machine would
/// then run N times more threads than cores. Each rank gets its share of the cores, unless
/// the user chose a number.
const BLAS_THREADS_VAR: &str = "OPENBLAS_NUM_THREADS";

fn threads_per_rank(ranks: usize) -> Option<usize> {
    if std::env::var_os(BLAS_THREADS_VAR).is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / ranks).max(1))
}

/// Waits for every rank; at the first failure, stops the rest and names the failed rank.
fn wait_all(children: &mut [Child]) -> anyhow::Result<()> {
    let ranks = children.len();
    let mut done: Vec<Option<ExitStatus>> = vec![None; ranks];
    loop {
        let mut failed: Vec<(usize, ExitStatus)> = Vec::new();
        for (rank, child) in children.iter_mut().enumerate() {
            let status = match child.try_wait() {
                Ok(s) => s,
                Err(e) => {
                    stop(children);
                    bail!("cannot wait for rank {rank}: {e}");
                }
            };
            if done[rank].is_none()
                && let Some(status) = status
            {
                done[rank] = Some(status);
                if !status.success() {
                    failed.push((rank, status));
                }
            }
        }
        // A rank killed by a signal is the cause; peers that then lost it fail after.
        failed.sort_by_key(|(_, s)| s.code().is_some());
        if let Some((rank, status)) = failed.first() {
            // The others usually fail at the same step (a divergence, bad data): let them
            // end on their own, rank 0 finishing its checkpoint rollback, before stopping
            // whatever is left waiting for the failed rank.
            let grace = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < grace
                && children
                    .iter_mut()
                    .any(|c| matches!(c.try_wait(), Ok(None)))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop(children);
            bail!(
                "rank {rank} of {ranks} {}; the other ranks were stopped so none waits for it. {}",
                describe(*status),
                "Its own error, if it printed one, is above"
            );
        }
        if done.iter().all(Option::is_some) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills every rank still running and reaps it.
fn stop(children: &mut [Child]) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".to_owned(),
    }
}

/// `n` loopback ports free right now (the ranks bind them moments later).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<_, _>>()
        .context("cannot find free loopback ports for the ranks")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The ring hostfile for ranks on this machine: one `["127.0.0.1:port"]` per rank.
pub fn loopback_hostfile(ports: &[u16]) -> String {
    let entries: Vec<serde_json::Value> = ports
        .iter()
        .map(|p| serde_json::json!([format!("127.0.0.1:{p}")]))
        .collect();
    serde_json::Value::Array(entries).to_string()
}

/// For a rank started by `srun`: writes the ring hostfile of its step and points MLX at it
/// (`MLX_RANK`, `MLX_HOSTFILE`), before the group is joined.
pub fn prepare_slurm_ring(launched: &Launched, step: &SlurmStep) -> anyhow::Result<()> {
    let var = |k: &str| {
        std::env::var(k).with_context(|| format!("srun did not set {k}; is this a Slurm step?"))
    };
    let nodelist = var("SLURM_STEP_NODELIST")?;
    let tasks =
        expand_tasks_per_node(&var("SLURM_STEP_TASKS_PER_NODE")?).map_err(anyhow::Error::msg)?;
    let output = Command::new("scontrol")
        .args(["show", "hostnames", &nodelist])
        .output()
        .context("cannot run `scontrol show hostnames` to list the step's nodes")?;
    if !output.status.success() {
        bail!(
            "`scontrol show hostnames {nodelist}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut nodes: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    // One node: loopback, whatever its name resolves to.
    if nodes.len() == 1 {
        nodes = vec!["127.0.0.1".to_owned()];
    }
    let text = slurm_hostfile(&nodes, &tasks, slurm_base_port(step));
    let path = std::env::temp_dir().join(format!(
        "pipe-slurm-{}-{}-rank{}.json",
        step.job_id, step.step_id, launched.rank
    ));
    pipe_engine::atomic_write::write_atomic(&path, text.as_bytes())?;
    // SAFETY: called before MLX (or any other thread of ours) reads the environment: the
    // ring backend reads these two variables when the group is initialized, right after.
    unsafe {
        std::env::set_var("MLX_RANK", launched.rank.to_string());
        std::env::set_var("MLX_HOSTFILE", &path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_hostfile_is_the_ring_backends_json_list() {
        assert_eq!(
            loopback_hostfile(&[32323, 32324]),
            r#"[["127.0.0.1:32323"],["127.0.0.1:32324"]]"#
        );
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p > 0));
    }
}
