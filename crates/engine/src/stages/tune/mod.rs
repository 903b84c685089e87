//! The `tune` kind: Bayesian hyperparameter search (see [`crate::tune`]) over a command or
//! a train (+ evaluate) run, with every trial cached so none ever runs twice.
//!
//! ```yaml
//! with:
//!   out: tune/lr                          # trials.jsonl, best.yaml, importance.json, metrics.json
//!   space:
//!     learning_rate: {float: [1.0e-5, 1.0e-3], log: true}
//!     lora.rank: {int: [4, 32], log: true}
//!   objective: {metric: eval.tuned.exact_match, mode: max}
//!   budget: {n_trials: 12, max_minutes: 60, iters: 40}
//!   prune: {min_trials: 3, warmup_steps: 10}   # median rule on intermediate values, or
//!   # prune: {rule: halving, min_resource: 10, eta: 3}   # asynchronous successive halving
//!   trial:
//!     train: {model: smollm2-135m-instruct, train_data: ..., valid_data: ..., valid_every: 10}
//!     evaluate: {data: data/clean/test.jsonl, max_examples: 50}
//!     # or: cmd: python objective.py --lr {learning_rate}   (see `trial`)
//! ```
//!
//! Outputs in `out`: `trials.jsonl` (one [`TrialRecord`] per trial, in trial order),
//! `best.yaml` (the best trial's parameters, nested by their dotted names, for a train
//! stage's `params_file`), `importance.json` (each parameter's importance, see
//! [`crate::tune::importance`]) and `metrics.json` (the best value, trial counts, the
//! space and the importance by name).
//!
//! Trials are cached in the workspace ([`store`]): a rerun with a larger `n_trials`, or
//! after an interruption, reuses every finished trial. Trials that use MLX (train trials,
//! or commands marked `mlx: true`) make the stage take the `mlx` slot and run one at a
//! time; command trials otherwise run `parallel` at a time.

mod config;
mod output;
mod ranks;
pub mod store;
pub mod trial;

pub use config::{Budget, Objective, PruneConfig, TrialSpec, TuneConfig};
pub use output::{TrialRecord, TuneMetrics};
pub use ranks::{Exchange, run_ranked};

use crate::tune::prune::Peer;
use crate::tune::space::{Point, get_dotted, nest};
use crate::tune::suggest::{Observation, Optimizer, Origin, Settings, Suggester};
use anyhow::Context;
use config::Tune;
use output::{progress, record_of, write_outputs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use store::{Store, key_of};
use trial::{Children, Job, Outcome, Pruning, Status};

/// The `tune` kind.
pub struct TuneKind;

impl super::StageKind for TuneKind {
    fn name(&self) -> &'static str {
        "tune"
    }
    /// Bumped when the outputs change (2: `importance.json`, and `space` and `importance`
    /// in `metrics.json`), which reruns the stage; its trials come back from the trial
    /// store. 3: the objective's 95% interval on each trial and the best
    /// (`interval`, `best_interval`) when the evaluation gives one. 4: the best trial
    /// paired against the starting configuration (`best_vs_start`).
    fn impl_version(&self) -> u32 {
        4
    }
    fn summary(&self) -> &'static str {
        "search hyperparameters with Bayesian optimisation over cached trials"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, pipe_schema::FieldError> {
        let config: TuneConfig = super::parse_with(with)?;
        let tune = Tune::new(config).map_err(|e| pipe_schema::FieldError::at("", e))?;
        Ok(super::Resolved {
            deps: tune
                .trial_inputs()
                .map_err(|e| pipe_schema::FieldError::at("", e))?,
            outs: vec![tune.config.out.display().to_string()],
            config: with.clone(),
            uses_mlx: uses_mlx(with),
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<TuneConfig>()
    }
    fn outcome(&self, config: &Value, root: &Path) -> crate::history::outcome::Outcome {
        use crate::history::record::{ArtifactRole, Trial};
        let mut o = crate::history::outcome::Outcome::default();
        let Ok(config) = serde_json::from_value::<TuneConfig>(config.clone()) else {
            return o;
        };
        let out = config.out.display().to_string();
        o.add_metrics_file(root, &format!("{out}/metrics.json"), "");
        o.add_artifact(root, &format!("{out}/best.yaml"), ArtifactRole::Other);
        o.add_artifact(root, &format!("{out}/trials.jsonl"), ArtifactRole::Other);
        let text =
            std::fs::read_to_string(root.join(&out).join("trials.jsonl")).unwrap_or_default();
        o.trials = text
            .lines()
            .filter_map(|l| serde_json::from_str::<TrialRecord>(l).ok())
            .map(|t| Trial {
                index: t.index,
                params: t.params,
                status: serde_json::to_value(t.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                value: t.value,
                reason: t.reason,
                intermediate: t.intermediate,
                seconds: t.seconds,
            })
            .collect();
        o
    }
}

/// Version of what a trial computes (part of every trial and study key): bumped only
/// when a trial's result would differ, since it makes every stored trial run again.
const TRIAL_VERSION: u32 = 2;

/// Whether a tune stage with this `with:` takes the `mlx` slot (its trials use MLX).
pub fn uses_mlx(with: &Value) -> bool {
    let trial = with.get("trial");
    trial.is_some_and(|t| t.get("train").is_some() || t.get("mlx") == Some(&Value::Bool(true)))
}

/// A study ready to run: its config, trial store, key, the finished trials of its journal
/// (up to `n_trials`) and the suggester. Shared by a local run and a run over ranks.
pub(super) struct Study {
    tune: Tune,
    store: Store,
    key: String,
    template: Value,
    records: Vec<TrialRecord>,
    suggester: Suggester,
}

impl Study {
    /// Reads `with`, hashes the trial deps and loads the trials the journal already has.
    /// `quiet` leaves out the progress lines of the loaded trials.
    fn open(with: &Value, root: &Path, quiet: bool) -> anyhow::Result<Self> {
        let config: TuneConfig = super::parse_with(with)?;
        let tune = Tune::new(config).map_err(|e| anyhow::anyhow!("tune stage `with`: {e}"))?;
        let store = Store::open(root);
        store.clear_staging();
        let cache = crate::cache::Store::open(root);
        let mut deps = BTreeMap::new();
        for dep in tune.trial_inputs().map_err(anyhow::Error::msg)? {
            let hash = cache
                .hash_path(&dep)
                .with_context(|| format!("cannot hash trial dep `{dep}`"))?
                .with_context(|| format!("trial dep `{dep}` does not exist"))?;
            deps.insert(dep, hash);
        }
        let template = serde_json::json!({
            "impl": TRIAL_VERSION,
            "trial": tune.config.trial,
            "iters": tune.config.budget.iters,
            "deps": deps,
        });
        let mut study = serde_json::json!({
            "template": template,
            "space": tune.config.space,
            "objective": tune.config.objective,
            "seed": tune.config.seed,
            "initial": tune.initial,
            "prune": tune.config.prune,
        });
        // Random search is another study; a `gp` study keeps the key it had before the
        // option existed, so its journal is still found. The same for `enqueue`.
        if tune.config.optimizer != Optimizer::Gp {
            study["optimizer"] = serde_json::json!(tune.config.optimizer);
        }
        if !tune.enqueued.is_empty() {
            study["enqueue"] = serde_json::json!(tune.enqueued);
        }
        let key = key_of(&study);
        let n_trials = tune.config.budget.n_trials;
        let mut records: Vec<TrialRecord> = Vec::new();
        for (trial, origin) in store.study_trials(&key) {
            if records.len() == n_trials {
                break;
            }
            if let Some(mut r) = load_record(&tune, &store, &trial, records.len()) {
                r.origin = serde_json::from_value(origin).ok();
                if !quiet {
                    eprintln!("{}", progress(&tune, &r, &records, n_trials));
                }
                records.push(r);
            }
        }
        let suggester = Suggester::new(
            tune.space.clone(),
            Settings::new(tune.config.objective.mode, tune.config.seed, tune.initial)
                .with_optimizer(tune.config.optimizer)
                .with_enqueued(tune.enqueued.clone()),
        );
        Ok(Self {
            tune,
            store,
            key,
            template,
            records,
            suggester,
        })
    }
}

/// The key of the trial at `point` (its folder in the trial store).
fn trial_key(tune: &Tune, template: &Value, point: &Point) -> String {
    key_of(&serde_json::json!({"template": template, "params": tune.flat(point)}))
}

/// The job of trial `index` at `point`.
fn job_of(tune: &Tune, index: usize, point: &Point, key: String) -> anyhow::Result<Job> {
    let plan = tune.plan(point).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Job {
        index,
        key,
        params: {
            let mut nested = Value::Object(Default::default());
            nest(&tune.space, point, &mut nested);
            nested
        },
        iters: tune.config.budget.iters,
        vars: {
            let mut vars = tune.cmd_vars(point);
            vars.insert("index".into(), index.to_string());
            vars
        },
        plan,
    })
}

/// Forwards an interrupt to the trials' process groups, then ends like a killed stage.
fn forward_interrupts(children: &Arc<Children>) {
    let children = Arc::clone(children);
    let _ = ctrlc::set_handler(move || {
        trial::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        children.signal_all(crate::process::Signal::Interrupt);
        std::thread::sleep(Duration::from_millis(200));
        std::process::exit(130);
    });
}

/// Runs a tune stage.
pub fn run(with: &Value, root: &Path) -> anyhow::Result<()> {
    let mut study = Study::open(with, root, false)?;
    let started = Instant::now();
    let (tune, store) = (&study.tune, &study.store);
    let n_trials = tune.config.budget.n_trials;
    let records = &mut study.records;
    let peers = Mutex::new(
        records
            .iter()
            .map(|r| (r.index, peer_of(r)))
            .collect::<BTreeMap<_, _>>(),
    );
    let children = Arc::new(Children::default());
    forward_interrupts(&children);
    let deadline = tune
        .config
        .budget
        .max_minutes
        .map(|m| started + Duration::from_secs_f64(m * 60.0));
    let mut stopped_by = "n_trials";
    let mut failure: Option<anyhow::Error> = None;
    let pruning = tune.prune.as_ref().map(|(rule, direction)| Pruning {
        rule,
        direction: *direction,
        peers: &peers,
    });
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        let mut running: BTreeMap<usize, (Point, Origin, String)> = BTreeMap::new();
        let mut next = records.len();
        loop {
            while failure.is_none() && running.len() < tune.config.parallel && next < n_trials {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    stopped_by = "max_minutes";
                    break;
                }
                let observations: Vec<Observation> =
                    records.iter().map(|r| observation(tune, r)).collect();
                let pending: Vec<Point> = running.values().map(|r| r.0.clone()).collect();
                let Some((point, origin)) = study.suggester.suggest(next, &observations, &pending)
                else {
                    stopped_by = "exhausted";
                    break;
                };
                let key = trial_key(tune, &study.template, &point);
                if store.trial_dir(&key).join("trial.json").is_file()
                    && let Some(mut r) = load_record(tune, store, &key, next)
                {
                    if let Err(e) = store.record(&study.key, &key, &origin) {
                        failure = Some(e.into());
                        break;
                    }
                    r.origin = Some(origin);
                    peers.lock().expect("peers").insert(r.index, peer_of(&r));
                    eprintln!("{}", progress(tune, &r, records, n_trials));
                    records.push(r);
                    next += 1;
                    continue;
                }
                let job = match job_of(tune, next, &point, key.clone()) {
                    Ok(job) => job,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                running.insert(next, (point, origin, key));
                let tx = tx.clone();
                let (store, children, pruning) = (&store, &children, pruning.as_ref());
                scope.spawn(move || {
                    let result = trial::run(root, store, &job, pruning, children);
                    let _ = tx.send((job.index, result));
                });
                next += 1;
            }
            if running.is_empty() {
                break;
            }
            let Ok((index, result)) = rx.recv() else {
                break;
            };
            let Some((point, origin, key)) = running.remove(&index) else {
                continue;
            };
            match result.and_then(|finished| {
                store.record(&study.key, &key, &origin)?;
                Ok(record_of(
                    tune,
                    index,
                    &point,
                    &key,
                    &finished.dir,
                    finished.outcome,
                    Some(origin),
                    finished.reused,
                ))
            }) {
                Ok(r) => {
                    peers.lock().expect("peers").insert(r.index, peer_of(&r));
                    eprintln!("{}", progress(tune, &r, records, n_trials));
                    records.push(r);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    records.sort_by_key(|r| r.index);
    write_outputs(
        tune,
        root,
        records,
        stopped_by,
        started.elapsed().as_secs_f64(),
    )
}

/// What the pruning rules see of a finished trial.
fn peer_of(r: &TrialRecord) -> Peer {
    Peer {
        complete: r.status == Status::Complete,
        reports: r.intermediate.clone(),
    }
}

fn observation(tune: &Tune, r: &TrialRecord) -> Observation {
    Observation {
        point: tune.point_of(&r.params),
        value: r.value,
    }
}

/// Reads a stored trial back as record `index`; `None` when it is unreadable or its
/// parameters are not in the current space (then it runs again).
fn load_record(tune: &Tune, store: &Store, key: &str, index: usize) -> Option<TrialRecord> {
    let dir = store.trial_dir(key);
    let outcome: Outcome =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trial.json")).ok()?).ok()?;
    let params: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("params.json")).ok()?).ok()?;
    let point: Point = tune
        .space
        .params
        .iter()
        .map(|p| get_dotted(&params, &p.name).cloned())
        .collect::<Option<_>>()?;
    if !tune.space.contains(&point) {
        return None;
    }
    // A trial pruned under another pruning rule, or none now, runs again; one killed by a
    // signal (out of memory, a person) may well succeed next time.
    if !outcome.stands_under(
        tune.prune
            .as_ref()
            .map(|(rule, direction)| (rule, *direction)),
    ) {
        return None;
    }
    if outcome.status == Status::Failed
        && outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("it was killed by signal"))
    {
        return None;
    }
    Some(record_of(
        tune, index, &point, key, &dir, outcome, None, true,
    ))
}
