//! The executor: decides which stages are stale ([`plan`]), runs them in dependency order
//! with parallel workers and resource tokens ([`scheduler`]), and records results in the
//! lock file ([`lockfile`]) and the cache.
//!
//! Guarantees:
//! - a stage is done only once its entry is in the lock file, which is rewritten
//!   atomically after each stage; a `kill -9` at any moment therefore leaves the
//!   interrupted stage (and what depends on it) stale for the next run;
//! - before a stage runs its old outs are deleted; when it fails or is interrupted its
//!   partial outs are deleted;
//! - one run per workspace at a time ([`lock`]); a second run waits;
//! - SIGINT/SIGTERM stop the running commands (SIGINT to their process group, SIGKILL
//!   3 s later), remove their partial outs and end the run with "interrupted";
//! - a command's process group ends with it: what it left running is killed when it
//!   exits, and what a killed run left is killed by the next run ([`groups`]).

pub mod events;
pub mod fingerprint;
pub mod groups;
pub mod journal;
pub mod launch;
pub mod lock;
pub mod lockfile;
pub mod plan;
pub mod progress;
mod reason;
pub mod scheduler;
pub mod slurm;
pub mod worker;

pub use events::Event;
pub use reason::{DirtyReason, describe};
pub use scheduler::{RunOptions, Summary, run};
pub use slurm::{Executor, SlurmOptions};

/// Why the executor could not do its job (as opposed to a stage failing, which is an
/// event).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A cache operation failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The lock file could not be read or written.
    #[error(transparent)]
    LockFile(#[from] lockfile::LockFileError),
    /// Other I/O (log directories, out parents).
    #[error(transparent)]
    Io(std::io::Error),
}
