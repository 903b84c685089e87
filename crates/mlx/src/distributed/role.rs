//! How a process learns its part in a distributed run, from its environment alone, so
//! `mlx.launch … -- pipe train …`, `mpirun … pipe train …` and `srun pipe train …` work
//! without any pipe-specific flag:
//!
//! - `MLX_RANK` (with `MLX_HOSTFILE`): MLX's ring backend, set by `mlx.launch` and by
//!   pipe's own launcher for `distributed: {ranks: N}`;
//! - `OMPI_COMM_WORLD_RANK`: OpenMPI's `mpirun`, MLX's MPI backend;
//! - `SLURM_PROCID` with `SLURM_STEP_NUM_TASKS` > 1: a task of an `srun` step; pipe writes
//!   the ring hostfile from the step's nodes (see [`slurm_hostfile`]). A batch script's own
//!   process has no step variables, so a job of several tasks does not make it a rank.
//!
//! The logic is a pure function of the variables, tested here on both platforms.

use std::collections::HashMap;

/// Which MLX backend a launched rank joins through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// TCP ring (`MLX_RANK`, `MLX_HOSTFILE`).
    Ring,
    /// MPI (the launcher's variables).
    Mpi,
}

impl Backend {
    /// MLX's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ring => "ring",
            Backend::Mpi => "mpi",
        }
    }
}

/// A process started as one rank of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// Its rank, from 0.
    pub rank: usize,
    /// The group's size when the launcher says it.
    pub size: Option<usize>,
    /// The backend to join.
    pub backend: Backend,
    /// Who started it (for messages).
    pub launcher: &'static str,
    /// For a Slurm step: the ring hostfile pipe must write before joining.
    pub slurm: Option<SlurmStep>,
}

impl Launched {
    /// "rank 1 of 2, started by mlx.launch"-style words for messages.
    pub fn describe(&self) -> String {
        let of = self.size.map(|n| format!(" of {n}")).unwrap_or_default();
        format!(
            "rank {}{of}, started by {}, {} backend",
            self.rank,
            self.launcher,
            self.backend.name()
        )
    }
}

/// What a Slurm step says about its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmStep {
    /// `SLURM_JOB_ID`.
    pub job_id: u64,
    /// `SLURM_STEP_ID` (0 when absent).
    pub step_id: u64,
    /// `SLURM_NODEID`: this task's node index.
    pub node_id: usize,
    /// `SLURM_LOCALID`: this task's index on its node.
    pub local_id: usize,
}

/// What this process should do for a run that asks for `ranks` processes (1 when the
/// job file has no `distributed:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Train alone.
    Single,
    /// Start `ranks` local processes of this same command, then wait for them.
    LaunchLocal {
        /// How many.
        ranks: usize,
    },
    /// Already one rank of a group: join it and train on this rank's rows.
    Rank(Launched),
}

/// The role of a process whose environment is `env`, for a job asking for `ranks`.
/// A launcher's variables win over `ranks`: the job then runs as the launcher arranged.
pub fn role(env: &HashMap<String, String>, ranks: usize) -> Result<Role, String> {
    let number = |key: &str| -> Result<Option<usize>, String> {
        env.get(key)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{key}={v:?} is not a rank number"))
            })
            .transpose()
    };
    if let Some(rank) = number("MLX_RANK")? {
        if !env.contains_key("MLX_HOSTFILE") {
            return Err(format!(
                "MLX_RANK={rank} is set but MLX_HOSTFILE is not: the ring backend needs the hostfile (a JSON list with one [\"ip:port\"] per rank)"
            ));
        }
        return Ok(Role::Rank(Launched {
            rank,
            size: number("MLX_WORLD_SIZE")?,
            backend: Backend::Ring,
            launcher: "mlx.launch or pipe",
            slurm: None,
        }));
    }
    // OpenMPI's own variables only: `PMI_RANK` is also set by Slurm's pmi2 plugin in every
    // srun task and by MPICH, neither of which MLX's MPI backend (OpenMPI) joins.
    if let Some(rank) = number("OMPI_COMM_WORLD_RANK")? {
        let size = number("OMPI_COMM_WORLD_SIZE")?;
        if size.is_some_and(|n| n > 1) {
            return Ok(Role::Rank(Launched {
                rank,
                size,
                backend: Backend::Mpi,
                launcher: "mpirun (OpenMPI)",
                slurm: None,
            }));
        }
    }
    if let (Some(rank), Some(size)) = (number("SLURM_PROCID")?, number("SLURM_STEP_NUM_TASKS")?)
        && size > 1
    {
        return Ok(Role::Rank(Launched {
            rank,
            size: Some(size),
            backend: Backend::Ring,
            launcher: "srun",
            slurm: Some(SlurmStep {
                job_id: number("SLURM_JOB_ID")?.unwrap_or(0) as u64,
                step_id: number("SLURM_STEP_ID")?.unwrap_or(0) as u64,
                node_id: number("SLURM_NODEID")?.unwrap_or(0),
                local_id: number("SLURM_LOCALID")?.unwrap_or(0),
            }),
        }));
    }
    Ok(match ranks {
        0 | 1 => Role::Single,
        ranks => Role::LaunchLocal { ranks },
    })
}

/// The role of this process (its real environment).
pub fn current(ranks: usize) -> anyhow::Result<Role> {
    let env: HashMap<String, String> = std::env::vars().collect();
    role(&env, ranks).map_err(anyhow::Error::msg)
}

/// The first port of a Slurm step's ring: spread over 20000-59999 by job and step, so two
/// steps on one node rarely collide, and every task computes the same value.
pub fn slurm_base_port(step: &SlurmStep) -> u16 {
    let spread = (step
        .job_id
        .wrapping_mul(131)
        .wrapping_add(step.step_id * 17))
        % 4000;
    20000 + (spread as u16) * 10
}

/// The ring hostfile of a Slurm step: `nodes` are the step's host names in node order and
/// `tasks_per_node` how many tasks each runs; rank r listens on its node at the base port
/// plus its local index.
pub fn slurm_hostfile(nodes: &[String], tasks_per_node: &[usize], base_port: u16) -> String {
    let entries: Vec<serde_json::Value> = nodes
        .iter()
        .zip(tasks_per_node)
        .flat_map(|(node, &n)| {
            (0..n).map(move |local| {
                serde_json::json!([format!("{node}:{}", base_port + local as u16)])
            })
        })
        .collect();
    serde_json::Value::Array(entries).to_string()
}

/// Expands Slurm's `SLURM_STEP_TASKS_PER_NODE` form, e.g. `2(x3),1` → [2, 2, 2, 1].
pub fn expand_tasks_per_node(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("cannot read SLURM_STEP_TASKS_PER_NODE part {part:?}");
        match part.split_once("(x") {
            Some((n, times)) => {
                let n: usize = n.parse().map_err(|_| bad())?;
                let times: usize = times.trim_end_matches(')').parse().map_err(|_| bad())?;
                out.extend(std::iter::repeat_n(n, times));
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_plain_process_trains_alone_or_launches_the_ranks_the_job_asks_for() {
        assert_eq!(role(&env(&[]), 1), Ok(Role::Single));
        assert_eq!(role(&env(&[]), 2), Ok(Role::LaunchLocal { ranks: 2 }));
        // One Slurm task (a plain sbatch job) is a single process, and so is the batch
        // script of a job of several tasks (it has no step variables).
        let one_task = env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]);
        assert_eq!(role(&one_task, 1), Ok(Role::Single));
        let batch_script = env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]);
        assert_eq!(role(&batch_script, 1), Ok(Role::Single));
    }

    #[test]
    fn a_launchers_variables_make_a_rank_whatever_the_job_says() {
        let ring = env(&[("MLX_RANK", "1"), ("MLX_HOSTFILE", "/tmp/h.json")]);
        let Ok(Role::Rank(l)) = role(&ring, 1) else {
            panic!("ring rank")
        };
        assert_eq!((l.rank, l.backend), (1, Backend::Ring));
        let mpi = env(&[("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_SIZE", "4")]);
        let Ok(Role::Rank(l)) = role(&mpi, 2) else {
            panic!("mpi rank")
        };
        assert_eq!((l.rank, l.size, l.backend), (3, Some(4), Backend::Mpi));
        let srun = env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_NODELIST", "node1"),
            ("SLURM_JOB_ID", "42"),
            ("SLURM_LOCALID", "1"),
        ]);
        let Ok(Role::Rank(l)) = role(&srun, 1) else {
            panic!("srun rank")
        };
        assert_eq!((l.rank, l.size), (1, Some(2)));
        assert_eq!(
            l.slurm.as_ref().map(|s| (s.job_id, s.local_id)),
            Some((42, 1))
        );
    }

    #[test]
    fn slurm_pmi_variables_do_not_make_an_mpi_rank() {
        let pmi2_task = env(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_STEP_NUM_TASKS", "2"),
        ]);
        let Ok(Role::Rank(l)) = role(&pmi2_task, 1) else {
            panic!("a Slurm rank")
        };
        assert_eq!((l.backend, l.launcher), (Backend::Ring, "srun"));
    }

    #[test]
    fn a_rank_without_its_hostfile_or_with_a_bad_number_is_refused_with_the_fix() {
        let err = role(&env(&[("MLX_RANK", "0")]), 1).unwrap_err();
        assert!(err.contains("MLX_HOSTFILE"), "{err}");
        let err = role(&env(&[("MLX_RANK", "x"), ("MLX_HOSTFILE", "h")]), 1).unwrap_err();
        assert!(err.contains("MLX_RANK=\"x\""), "{err}");
    }

    #[test]
    fn a_slurm_steps_hostfile_lists_every_task_on_its_node_in_rank_order() {
        assert_eq!(expand_tasks_per_node("2(x2),1"), Ok(vec![2, 2, 1]));
        assert!(expand_tasks_per_node("two").is_err());
        let nodes = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            slurm_hostfile(&nodes, &[2, 1], 30000),
            r#"[["a:30000"],["a:30001"],["b:30000"]]"#
        );
        let step = SlurmStep {
            job_id: 7,
            step_id: 0,
            node_id: 0,
            local_id: 0,
        };
        let port = slurm_base_port(&step);
        assert!((20000..60000).contains(&port));
        assert_eq!(port, slurm_base_port(&step.clone()), "every task agrees");
    }
}
