//! A tune stage over ranks (`distributed: {ranks: N}`, or a stage started by `mlx.launch`,
//! `mpirun` or `srun`): N processes, each running one trial at a time, in rounds.
//!
//! Each round, rank 0 proposes a batch of N points (the suggester's kriging believer: each
//! point is chosen with the ones before it in the batch counted as pending at the model's
//! own prediction, so the batch spreads out) and shares it; rank r runs point r; the
//! finished trials are gathered to every rank, in trial order, so every rank learns from the
//! same study. Rank 0 alone writes the study journal and the outputs, so an interrupted
//! study resumes as a local one does, with any number of ranks or none.
//!
//! The engine knows nothing of MLX: the exchange is a trait ([`Exchange`]) that the MLX
//! crate implements over MLX distributed's `all_gather`.

use super::output::{progress, record_of, write_outputs};
use super::trial::{self, Children, Pruning};
use super::{Study, TrialRecord, job_of, peer_of, trial_key};
use crate::tune::space::Point;
use crate::tune::suggest::Origin;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the ranks of a group can do together.
pub trait Exchange {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// How many ranks there are.
    fn size(&self) -> usize;
    /// Every rank's `mine`, in rank order (every rank gets the same list).
    fn all_gather_bytes(&self, mine: &[u8]) -> anyhow::Result<Vec<Vec<u8>>>;
}

/// What a rank reports of its round: its trial's record, or why the stage must stop.
#[derive(Serialize, Deserialize)]
enum Report {
    /// No trial this round (the batch was shorter than the ranks).
    Idle,
    /// The trial finished (completed, pruned or failed as a trial).
    Done(Box<TrialRecord>),
    /// The stage itself failed on this rank (a folder it could not write).
    Error(String),
}

/// Rank 0's word for a round: the points to run, or the reason to stop.
#[derive(Serialize, Deserialize)]
enum Round {
    Run(Vec<(Point, Origin)>),
    Stop(String),
}

/// Every rank's value of `mine`, decoded as `T`. YAML, not JSON: a trial's numbers may
/// be NaN or infinite (a log-EI of -inf, a non-numeric report), which JSON cannot carry.
fn gather<T: for<'de> Deserialize<'de>>(
    ex: &dyn Exchange,
    mine: &impl Serialize,
) -> anyhow::Result<Vec<T>> {
    ex.all_gather_bytes(serde_yaml::to_string(mine)?.as_bytes())?
        .iter()
        .map(|b| Ok(serde_yaml::from_slice(b)?))
        .collect()
}

/// Rank 0's value of `mine` on every rank.
fn from_lead<T: Serialize + for<'de> Deserialize<'de>>(
    ex: &dyn Exchange,
    mine: Option<&T>,
) -> anyhow::Result<T> {
    let all: Vec<Option<T>> = gather(ex, &mine)?;
    all.into_iter()
        .next()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("rank 0 sent nothing"))
}

/// Runs a tune stage as one rank of `ex`.
pub fn run_ranked(with: &Value, root: &Path, ex: &dyn Exchange) -> anyhow::Result<()> {
    let lead = ex.rank() == 0;
    let mut study = Study::open(with, root, !lead)?;
    // The lead's journal is the study (other ranks may not share its disk).
    let loaded = from_lead(ex, lead.then_some(&study.records))?;
    study.records = loaded;
    let started = Instant::now();
    let n_trials = study.tune.config.budget.n_trials;
    let deadline = study
        .tune
        .config
        .budget
        .max_minutes
        .map(|m| started + Duration::from_secs_f64(m * 60.0));
    let children = Arc::new(Children::default());
    super::forward_interrupts(&children);
    let stopped_by;
    loop {
        let next = study.records.len();
        let proposal = lead.then(|| propose(&study, ex.size(), next, deadline));
        match from_lead(ex, proposal.as_ref())? {
            Round::Stop(why) => {
                stopped_by = why;
                break;
            }
            Round::Run(batch) => {
                let mine = match batch.get(ex.rank()) {
                    None => Report::Idle,
                    Some((point, origin)) => {
                        let index = next + ex.rank();
                        match run_one(&study, root, index, point, origin, &children) {
                            Ok(r) => Report::Done(Box::new(r)),
                            Err(e) => Report::Error(format!("{e:#}")),
                        }
                    }
                };
                for (rank, report) in gather(ex, &mine)?.into_iter().enumerate() {
                    match report {
                        Report::Idle => {}
                        Report::Error(e) => anyhow::bail!("rank {rank}: {e}"),
                        Report::Done(r) => {
                            if lead {
                                let origin = r.origin.as_ref().ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "trial {} came back without its origin",
                                        r.index
                                    )
                                })?;
                                study.store.record(&study.key, &r.key, origin)?;
                                eprintln!(
                                    "{}",
                                    progress(&study.tune, &r, &study.records, n_trials)
                                );
                            }
                            study.records.push(*r);
                        }
                    }
                }
            }
        }
    }
    if !lead {
        return Ok(());
    }
    study.records.sort_by_key(|r| r.index);
    write_outputs(
        &study.tune,
        root,
        &study.records,
        &stopped_by,
        started.elapsed().as_secs_f64(),
    )
}

/// The lead's next round: up to `ranks` points, or why the study ends.
fn propose(study: &Study, ranks: usize, next: usize, deadline: Option<Instant>) -> Round {
    let n_trials = study.tune.config.budget.n_trials;
    if next >= n_trials {
        return Round::Stop("n_trials".into());
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Round::Stop("max_minutes".into());
    }
    let observations: Vec<_> = study
        .records
        .iter()
        .map(|r| super::observation(&study.tune, r))
        .collect();
    let mut batch: Vec<(Point, Origin)> = Vec::with_capacity(ranks);
    for index in next..(next + ranks).min(n_trials) {
        let pending: Vec<Point> = batch.iter().map(|(p, _)| p.clone()).collect();
        match study.suggester.suggest(index, &observations, &pending) {
            Some(proposal) => batch.push(proposal),
            None => break,
        }
    }
    if batch.is_empty() {
        return Round::Stop("exhausted".into());
    }
    Round::Run(batch)
}

/// Runs (or takes from the trial cache) trial `index` at `point`.
fn run_one(
    study: &Study,
    root: &Path,
    index: usize,
    point: &Point,
    origin: &Origin,
    children: &Children,
) -> anyhow::Result<TrialRecord> {
    let tune = &study.tune;
    let key = trial_key(tune, &study.template, point);
    let job = job_of(tune, index, point, key.clone())?;
    let peers = Mutex::new(
        study
            .records
            .iter()
            .map(|r| (r.index, peer_of(r)))
            .collect::<BTreeMap<_, _>>(),
    );
    let pruning = tune.prune.as_ref().map(|(rule, direction)| Pruning {
        rule,
        direction: *direction,
        peers: &peers,
    });
    let finished = trial::run(root, &study.store, &job, pruning.as_ref(), children)?;
    Ok(record_of(
        tune,
        index,
        point,
        &key,
        &finished.dir,
        finished.outcome,
        Some(origin.clone()),
        finished.reused,
    ))
}
