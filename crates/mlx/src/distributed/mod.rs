//! Data-parallel training over MLX's own distributed layer: a small safe wrapper over
//! mlx-c's `mlx_distributed_*` ([`group`]), how this process learns it is one rank of many
//! ([`role`]), the launcher of local ranks (`distributed: {ranks: N}`, [`launch`]), and the
//! bucketed gradient average ([`reduce`]).
//!
//! MLX keeps one distributed group per process, initialized once; [`world`] mirrors that:
//! it is set by [`join`] when the process was started as a rank (by `pipe` itself, by
//! `mlx.launch`, by `mpirun` or by `srun`) and is `None` in a single process, so the trainer
//! needs no extra argument and every single-process caller is unchanged.

mod exchange;
pub mod group;
pub mod launch;
pub mod reduce;
pub mod role;

pub use group::Group;
pub use role::Role;

use std::sync::OnceLock;

static WORLD: OnceLock<Group> = OnceLock::new();

/// The group this process trains in, once [`join`]ed; `None` in a single process.
pub fn world() -> Option<&'static Group> {
    WORLD.get().filter(|g| g.size() > 1)
}

/// Whether this process is the one that writes (rank 0, or the only process).
pub fn is_lead() -> bool {
    world().is_none_or(|g| g.rank() == 0)
}

/// Joins the group the environment describes (see [`role::Launched`]). Called once, before
/// training; a second call returns the group already joined.
pub fn join(launched: &role::Launched) -> anyhow::Result<&'static Group> {
    if let Some(g) = WORLD.get() {
        return Ok(g);
    }
    let group = Group::init(launched)?;
    Ok(WORLD.get_or_init(|| group))
}

/// Takes this process's part in a job that asks for `ranks` processes: joins the group a
/// launcher started it in, or starts `ranks` local ranks of this same command and waits
/// for them. Returns whether this process should train (false: its local ranks trained,
/// and all of them succeeded).
pub fn take_part(ranks: usize) -> anyhow::Result<bool> {
    match role::current(ranks)? {
        Role::Single => Ok(true),
        Role::LaunchLocal { ranks } => {
            launch::run_local(ranks)?;
            Ok(false)
        }
        Role::Rank(launched) => {
            if let Some(step) = &launched.slurm {
                launch::prepare_slurm_ring(&launched, step)?;
            }
            join(&launched)?;
            Ok(true)
        }
    }
}
