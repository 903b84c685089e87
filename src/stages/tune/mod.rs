//! The `tune` kind: Bayesian hyperparameter search (see [`crate::tune`]) over a command or
//! a train (+ evaluate) run, with every trial cached so none ever runs twice.
//!
//! ```yaml
//! with:
//!   out: tune/lr                          # trials.jsonl, best.yaml, metrics.json
//!   space:
//!     learning_rate: {float: [1.0e-5, 1.0e-3], log: true}
//!     lora.rank: {int: [4, 32], log: true}
//!   objective: {metric: eval.tuned.exact_match, mode: max}
//!   budget: {n_trials: 12, max_minutes: 60, iters: 40}
//!   prune: {min_trials: 3, warmup_steps: 10}   # median rule on intermediate values
//!   trial:
//!     train: {model: smollm2-135m-instruct, train_data: ..., valid_data: ..., valid_every: 10}
//!     evaluate: {data: data/clean/test.jsonl, max_examples: 50}
//!     # or: cmd: python objective.py --lr {learning_rate}   (see `trial`)
//! ```
//!
//! Outputs in `out`: `trials.jsonl` (one [`TrialRecord`] per trial, in trial order),
//! `best.yaml` (the best trial's parameters, nested by their dotted names, for a train
//! stage's `params_file`), and `metrics.json` (the best value and trial counts).
//!
//! Trials are cached in the workspace ([`store`]): a rerun with a larger `n_trials`, or
//! after an interruption, reuses every finished trial. Trials that use MLX (train trials,
//! or commands marked `mlx: true`) make the stage take the `mlx` slot and run one at a
//! time; command trials otherwise run `parallel` at a time.

pub mod store;
pub mod trial;

use crate::spec::Cmd;
use crate::tune::prune::MedianRule;
use crate::tune::space::{Point, Space, get_dotted, nest};
use crate::tune::suggest::{Direction, Observation, Origin, Settings, Suggester};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use store::{Store, key_of};
use trial::{Children, Job, Outcome, Plan, Pruning, Status};

/// Implementation version (part of every tune stage's fingerprint and trial key).
pub const IMPL_VERSION: u32 = 1;

/// Most trials one stage may run.
const MAX_TRIALS: usize = 10_000;

/// The tune options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// The folder written (`trials.jsonl`, `best.yaml`, `metrics.json`).
    pub out: PathBuf,
    /// The search space (see [`crate::tune::space`]).
    pub space: Value,
    /// What to optimise.
    pub objective: Objective,
    /// How much to spend.
    pub budget: Budget,
    /// Trials run at once (command trials that do not use MLX only).
    #[serde(default = "one")]
    pub parallel: usize,
    /// Seed of the initial design and every proposal.
    #[serde(default)]
    pub seed: u64,
    /// Trials from the Latin hypercube before the GP is used (default: the number of
    /// parameters plus 2, between 3 and 10).
    #[serde(default)]
    pub initial: Option<usize>,
    /// Stop unpromising trials early (the median rule).
    #[serde(default)]
    pub prune: Option<PruneConfig>,
    /// What a trial runs.
    pub trial: TrialSpec,
}

fn one() -> usize {
    1
}

/// The objective: a number in the trial's metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Dotted path into the metrics (`loss`, `eval.tuned.exact_match`,
    /// `train.best_valid.1`).
    pub metric: String,
    /// `min` (default) or `max`.
    #[serde(default = "minimise")]
    pub mode: Direction,
}

fn minimise() -> Direction {
    Direction::Min
}

/// The budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Trials in all (finished trials from earlier runs count).
    pub n_trials: usize,
    /// Start no new trial after this many minutes of this run.
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// Iterations per trial: a train trial's `iters`; `{iters}` and `PIPE_TRIAL_ITERS` for
    /// a command.
    #[serde(default)]
    pub iters: Option<u64>,
}

/// Pruning options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// The rule; only `median` exists.
    #[serde(default = "median")]
    pub rule: String,
    /// Completed trials needed before anything is pruned.
    #[serde(default = "three")]
    pub min_trials: usize,
    /// Steps before the first check.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Check every this many steps.
    #[serde(default = "one_u64")]
    pub interval: u64,
    /// Whether intermediate values are minimised or maximised (default: `min` for train
    /// trials, whose values are validation losses; the objective's mode for commands).
    #[serde(default)]
    pub mode: Option<Direction>,
}

fn median() -> String {
    "median".into()
}
fn three() -> usize {
    3
}
fn one_u64() -> u64 {
    1
}

/// What a trial runs: exactly one of `cmd` and `train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// A command (shell line or argv list) with `{param}` placeholders.
    #[serde(default)]
    pub cmd: Option<Cmd>,
    /// Files the command reads (hashed into every trial key, and deps of the stage).
    #[serde(default)]
    pub deps: Vec<String>,
    /// The command uses the accelerator: take the `mlx` slot, one trial at a time.
    #[serde(default)]
    pub mlx: bool,
    /// A train stage's `with:` (without `out_dir`); parameters are set into it.
    #[serde(default)]
    pub train: Option<Value>,
    /// An evaluate stage's `with:` (without `adapter` and `out`; `model` defaults to the
    /// train model).
    #[serde(default)]
    pub evaluate: Option<Value>,
}

impl<'de> Deserialize<'de> for Cmd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Shell(String),
            Argv(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Shell(s) => Ok(Cmd::Shell(s)),
            Raw::Argv(v) if !v.is_empty() => Ok(Cmd::Argv(v)),
            Raw::Argv(_) => Err(serde::de::Error::custom("an argv `cmd` cannot be empty")),
        }
    }
}

/// One line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Position in the study (0-based).
    pub index: usize,
    /// Parameters by dotted name.
    pub params: BTreeMap<String, Value>,
    /// The objective (complete trials only).
    pub value: Option<f64>,
    /// complete, pruned or failed.
    pub status: Status,
    /// Whether the pruning rule stopped it.
    pub pruned: bool,
    /// Why it was pruned or failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Wall time of the trial when it ran.
    pub seconds: f64,
    /// Peak memory, when known.
    pub peak_memory_bytes: Option<u64>,
    /// Intermediate `(step, value)` reports.
    pub intermediate: Vec<(u64, f64)>,
    /// How its point was chosen.
    pub origin: Option<Origin>,
    /// Taken from the trial cache instead of run.
    pub reused: bool,
    /// Its trial key (its folder under `cache/tune/v1/trials/`).
    pub key: String,
}

/// `with:` of a tune stage, checked; what the stage needs to run.
struct Tune {
    config: TuneConfig,
    space: Space,
    initial: usize,
    prune: Option<(MedianRule, Direction)>,
}

impl Tune {
    fn new(config: TuneConfig) -> Result<Self, String> {
        let space = Space::from_json(&config.space)?;
        let t = &config.trial;
        match (&t.cmd, &t.train) {
            (Some(_), Some(_)) => return Err("`trial` takes `cmd` or `train`, not both".into()),
            (None, None) => {
                return Err(
                    "`trial` needs `cmd` (a command that writes metrics.json) or `train` (a train stage's options)"
                        .into(),
                );
            }
            _ => {}
        }
        if t.evaluate.is_some() && t.train.is_none() {
            return Err(
                "`trial.evaluate` needs `trial.train` (it scores the trained adapter)".into(),
            );
        }
        if !t.deps.is_empty() && t.cmd.is_none() {
            return Err(
                "`trial.deps` is for commands; a train trial's data files are deps already".into(),
            );
        }
        if config.budget.n_trials == 0 || config.budget.n_trials > MAX_TRIALS {
            return Err(format!(
                "`budget.n_trials` must be between 1 and {MAX_TRIALS}, not {}",
                config.budget.n_trials
            ));
        }
        if let Some(m) = config.budget.max_minutes
            && !(m > 0.0 && m.is_finite())
        {
            return Err(format!("`budget.max_minutes` must be positive, not {m}"));
        }
        if config.parallel == 0 {
            return Err("`parallel` must be at least 1".into());
        }
        if uses_mlx_config(t) && config.parallel > 1 {
            return Err(format!(
                "these trials use MLX, which runs one job at a time (the `mlx` slot); set `parallel: 1` (not {})",
                config.parallel
            ));
        }
        if config.objective.metric.trim().is_empty() {
            return Err("`objective.metric` is empty; name a number in the trial's metrics".into());
        }
        if t.train.is_some() {
            let m = &config.objective.metric;
            let ok = m.starts_with("train.") || (m.starts_with("eval.") && t.evaluate.is_some());
            if !ok {
                return Err(format!(
                    "`objective.metric: {m}`: a train trial's metrics are `train.*` (the train metrics.json, e.g. train.final_valid_loss){}",
                    if t.evaluate.is_some() {
                        " and `eval.*` (the evaluate output, e.g. eval.tuned.exact_match)"
                    } else {
                        "; add `trial.evaluate` for `eval.*`"
                    }
                ));
            }
        }
        let prune = match &config.prune {
            None => None,
            Some(p) if p.rule != "median" => {
                return Err(format!(
                    "`prune.rule: {}` is not known; the rule is `median`",
                    p.rule
                ));
            }
            Some(p) => {
                let direction = p.mode.unwrap_or(if t.train.is_some() {
                    Direction::Min
                } else {
                    config.objective.mode
                });
                Some((
                    MedianRule {
                        min_trials: p.min_trials,
                        warmup_steps: p.warmup_steps,
                        interval: p.interval,
                    },
                    direction,
                ))
            }
        };
        let initial = config
            .initial
            .unwrap_or_else(|| (space.params.len() + 2).clamp(3, 10));
        let tune = Self {
            config,
            space,
            initial,
            prune,
        };
        // Build one trial from the middle of the space: a misspelt option or placeholder
        // fails now, not when the first trial runs.
        let sample = tune.space.from_unit(&vec![0.5; tune.space.params.len()]);
        match tune.plan(&sample)? {
            Plan::Cmd(cmd) => {
                let mut vars = tune.cmd_vars(&sample);
                vars.insert("trial_dir".into(), "trial-dir".into());
                trial::render_cmd(&cmd, &vars)?;
            }
            Plan::Train {
                mut train,
                evaluate,
            } => {
                train["out_dir"] = Value::from("trial/train");
                super::Kind::Train
                    .check_with(&train)
                    .map_err(|e| format!("`trial.train`: {e}"))?;
                if let Some(mut evaluate) = evaluate {
                    evaluate["adapter"] = Value::from("trial/train");
                    evaluate["out"] = Value::from("trial/eval.json");
                    super::Kind::Evaluate
                        .check_with(&evaluate)
                        .map_err(|e| format!("`trial.evaluate`: {e}"))?;
                }
            }
        }
        Ok(tune)
    }

    /// Parameters by dotted name.
    fn flat(&self, point: &[Value]) -> BTreeMap<String, Value> {
        self.space
            .params
            .iter()
            .zip(point)
            .map(|(p, v)| (p.name.clone(), v.clone()))
            .collect()
    }

    /// The values of a command's placeholders for `point` (`trial_dir` is added when the
    /// trial runs).
    fn cmd_vars(&self, point: &[Value]) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .flat(point)
            .into_iter()
            .map(|(k, v)| (k, trial::scalar_text(&v)))
            .collect();
        let args: Vec<String> = vars
            .iter()
            .map(|(k, v)| trial::shell_quote(&format!("--{k}={v}")))
            .collect();
        vars.insert("args".into(), args.join(" "));
        vars.insert("index".into(), "0".into());
        if let Some(iters) = self.config.budget.iters {
            vars.insert("iters".into(), iters.to_string());
        }
        vars
    }

    /// What trial `point` runs.
    fn plan(&self, point: &[Value]) -> Result<Plan, String> {
        let t = &self.config.trial;
        if let Some(cmd) = &t.cmd {
            return Ok(Plan::Cmd(cmd.clone()));
        }
        let mut train = t.train.clone().unwrap_or(Value::Null);
        if !train.is_object() {
            return Err("`trial.train` must be a mapping of train options".into());
        }
        if train.get("out_dir").is_some() {
            return Err(
                "`trial.train.out_dir` is set by tune (each trial gets its own); remove it".into(),
            );
        }
        if let Some(iters) = self.config.budget.iters {
            train["iters"] = Value::from(iters);
        }
        nest(&self.space, point, &mut train);
        let evaluate = match &t.evaluate {
            None => None,
            Some(e) => {
                let mut e = e.clone();
                if !e.is_object() {
                    return Err("`trial.evaluate` must be a mapping of evaluate options".into());
                }
                for key in ["adapter", "out"] {
                    if e.get(key).is_some() {
                        return Err(format!("`trial.evaluate.{key}` is set by tune; remove it"));
                    }
                }
                if e.get("model").is_none() {
                    e["model"] = train.get("model").cloned().unwrap_or(Value::Null);
                }
                Some(e)
            }
        };
        Ok(Plan::Train { train, evaluate })
    }
}

fn uses_mlx_config(t: &TrialSpec) -> bool {
    t.train.is_some() || t.mlx
}

/// Whether a tune stage with this `with:` takes the `mlx` slot (its trials use MLX).
pub fn uses_mlx(with: &Value) -> bool {
    let trial = with.get("trial");
    trial.is_some_and(|t| t.get("train").is_some() || t.get("mlx") == Some(&Value::Bool(true)))
}

/// The files a tune stage reads (trial deps, train and evaluation data, a model given as a
/// path) and the folder it writes.
pub fn implicit_paths(with: &Value) -> (Vec<String>, Vec<String>) {
    (
        trial_deps(with),
        with.get("out")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect(),
    )
}

fn trial_deps(with: &Value) -> Vec<String> {
    let Some(trial) = with.get("trial") else {
        return Vec::new();
    };
    let mut deps: Vec<String> = trial
        .get("deps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    for (section, kind) in [
        ("train", super::Kind::Train),
        ("evaluate", super::Kind::Evaluate),
    ] {
        if let Some(w) = trial.get(section) {
            for d in kind.implicit_paths(w).0 {
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
    }
    deps
}

/// Checks a tune stage's `with:` when the pipeline loads.
pub fn check(with: &Value) -> Result<(), String> {
    let config: TuneConfig = super::parse_with("tune", with).map_err(|e| format!("{e:#}"))?;
    Tune::new(config).map(drop)
}

/// Runs a tune stage.
pub fn run(with: &Value, root: &Path) -> anyhow::Result<()> {
    let config: TuneConfig = super::parse_with("tune", with)?;
    let tune = Tune::new(config).map_err(|e| anyhow::anyhow!("tune stage `with`: {e}"))?;
    let store = Store::open(root);
    store.clear_staging();
    let cache = crate::cache::Store::open(root);
    let mut deps = BTreeMap::new();
    for dep in trial_deps(with) {
        let hash = cache
            .hash_path(&dep)
            .with_context(|| format!("cannot hash trial dep `{dep}`"))?
            .with_context(|| format!("trial dep `{dep}` does not exist"))?;
        deps.insert(dep, hash);
    }
    let template = serde_json::json!({
        "impl": IMPL_VERSION,
        "trial": tune.config.trial,
        "iters": tune.config.budget.iters,
        "deps": deps,
    });
    let study = key_of(&serde_json::json!({
        "template": template,
        "space": tune.config.space,
        "objective": tune.config.objective,
        "seed": tune.config.seed,
        "initial": tune.initial,
        "prune": tune.config.prune,
    }));
    let trial_key = |point: &Point| {
        key_of(&serde_json::json!({"template": template, "params": tune.flat(point)}))
    };

    let started = Instant::now();
    let n_trials = tune.config.budget.n_trials;
    let mut records: Vec<TrialRecord> = Vec::new();
    for key in store.study_trials(&study).into_iter().take(n_trials) {
        if let Some(r) = load_record(&tune, &store, &key, records.len()) {
            eprintln!("{}", progress(&tune, &r, &records, n_trials));
            records.push(r);
        }
    }
    let suggester = Suggester::new(
        tune.space.clone(),
        Settings::new(tune.config.objective.mode, tune.config.seed, tune.initial),
    );
    let completed = Mutex::new(
        records
            .iter()
            .filter(|r| r.status == Status::Complete)
            .map(|r| r.intermediate.clone())
            .collect::<Vec<_>>(),
    );
    let children = Arc::new(Children::default());
    {
        let children = Arc::clone(&children);
        // Forward an interrupt to the trials' process groups, then end like a killed stage.
        let _ = ctrlc::set_handler(move || {
            children.signal_all(libc::SIGINT);
            std::thread::sleep(Duration::from_millis(200));
            std::process::exit(130);
        });
    }
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
        completed: &completed,
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
                    records.iter().map(|r| observation(&tune, r)).collect();
                let pending: Vec<Point> = running.values().map(|r| r.0.clone()).collect();
                let Some((point, origin)) = suggester.suggest(next, &observations, &pending) else {
                    stopped_by = "exhausted";
                    break;
                };
                let key = trial_key(&point);
                if store.trial_dir(&key).join("trial.json").is_file()
                    && let Some(mut r) = load_record(&tune, &store, &key, next)
                {
                    r.origin = Some(origin);
                    if let Err(e) = store.record(&study, &key) {
                        failure = Some(e.into());
                        break;
                    }
                    if r.status == Status::Complete {
                        completed
                            .lock()
                            .expect("completed")
                            .push(r.intermediate.clone());
                    }
                    eprintln!("{}", progress(&tune, &r, &records, n_trials));
                    records.push(r);
                    next += 1;
                    continue;
                }
                let plan = match tune.plan(&point) {
                    Ok(p) => p,
                    Err(e) => {
                        failure = Some(anyhow::anyhow!(e));
                        break;
                    }
                };
                let job = Job {
                    index: next,
                    key: key.clone(),
                    params: {
                        let mut nested = Value::Object(Default::default());
                        nest(&tune.space, &point, &mut nested);
                        nested
                    },
                    iters: tune.config.budget.iters,
                    vars: {
                        let mut vars = tune.cmd_vars(&point);
                        vars.insert("index".into(), next.to_string());
                        vars
                    },
                    plan,
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
            match result.and_then(|(dir, outcome)| {
                store.record(&study, &key)?;
                Ok(record_of(
                    &tune,
                    index,
                    &point,
                    &key,
                    &dir,
                    outcome,
                    Some(origin),
                    false,
                ))
            }) {
                Ok(r) => {
                    if r.status == Status::Complete {
                        completed
                            .lock()
                            .expect("completed")
                            .push(r.intermediate.clone());
                    }
                    eprintln!("{}", progress(&tune, &r, &records, n_trials));
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
        &tune,
        root,
        &records,
        stopped_by,
        started.elapsed().as_secs_f64(),
    )
}

fn observation(tune: &Tune, r: &TrialRecord) -> Observation {
    Observation {
        point: tune
            .space
            .params
            .iter()
            .map(|p| r.params.get(&p.name).cloned().unwrap_or(Value::Null))
            .collect(),
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
    // A trial pruned under a pruning rule that is now off runs again in full.
    if outcome.status == Status::Pruned && tune.prune.is_none() {
        return None;
    }
    Some(record_of(
        tune, index, &point, key, &dir, outcome, None, true,
    ))
}

#[allow(clippy::too_many_arguments)] // one call site each; a struct would only rename them
fn record_of(
    tune: &Tune,
    index: usize,
    point: &[Value],
    key: &str,
    dir: &Path,
    outcome: Outcome,
    origin: Option<Origin>,
    reused: bool,
) -> TrialRecord {
    let (mut status, mut reason) = (outcome.status, outcome.reason);
    let mut value = None;
    if status == Status::Complete {
        let metric = &tune.config.objective.metric;
        let metrics: Option<Value> = std::fs::read_to_string(dir.join("metrics.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match metrics
            .as_ref()
            .map(|m| (m, get_dotted(m, metric).and_then(Value::as_f64)))
        {
            Some((_, Some(v))) if v.is_finite() => value = Some(v),
            Some((_, Some(v))) => {
                status = Status::Failed;
                reason = Some(format!("its `{metric}` is {v}"));
            }
            Some((m, None)) => {
                status = Status::Failed;
                let keys: Vec<String> = m
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                reason = Some(format!(
                    "its metrics.json has no number at `{metric}` (top-level keys: {})",
                    keys.join(", ")
                ));
            }
            None => {
                status = Status::Failed;
                reason = Some("its metrics.json is missing or not JSON".into());
            }
        }
    }
    TrialRecord {
        index,
        params: tune.flat(point),
        value,
        status,
        pruned: status == Status::Pruned,
        reason,
        seconds: outcome.seconds,
        peak_memory_bytes: outcome.peak_memory_bytes,
        intermediate: outcome.intermediate,
        origin,
        reused,
        key: key.to_owned(),
    }
}

fn best<'a>(tune: &Tune, records: &'a [TrialRecord]) -> Option<&'a TrialRecord> {
    let mode = tune.config.objective.mode;
    records.iter().filter(|r| r.value.is_some()).reduce(|a, b| {
        if mode.better(b.value.unwrap_or(f64::NAN), a.value.unwrap_or(f64::NAN)) {
            b
        } else {
            a
        }
    })
}

fn progress(tune: &Tune, r: &TrialRecord, before: &[TrialRecord], n_trials: usize) -> String {
    let params: Vec<String> = r
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", trial::scalar_text(v)))
        .collect();
    let how = if r.reused {
        "reused".to_owned()
    } else {
        format!("{:.1}s", r.seconds)
    };
    let result = match (r.status, r.value) {
        (Status::Complete, Some(v)) => format!("{} = {v:.6}", tune.config.objective.metric),
        (status, _) => format!(
            "{} ({})",
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.reason.as_deref().unwrap_or("")
        ),
    };
    let mut all: Vec<TrialRecord> = before.to_vec();
    all.push(r.clone());
    let best = best(tune, &all)
        .and_then(|b| {
            b.value
                .map(|v| format!("; best {v:.6} (trial {})", b.index))
        })
        .unwrap_or_default();
    format!(
        "trial {}/{n_trials} [{how}] {}: {result}{best}",
        r.index + 1,
        params.join(" ")
    )
}

/// Counts and the best trial, written to `out/metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneMetrics {
    /// The objective's metric.
    pub objective: String,
    /// min or max.
    pub mode: Direction,
    /// The best objective value.
    pub best_value: Option<f64>,
    /// Index of the best trial.
    pub best_trial: Option<usize>,
    /// Its parameters, nested.
    pub best_params: Value,
    /// Trials in `trials.jsonl`.
    pub trials: usize,
    /// Of which complete.
    pub complete: usize,
    /// Of which pruned.
    pub pruned: usize,
    /// Of which failed.
    pub failed: usize,
    /// Of which were taken from the trial cache.
    pub reused: usize,
    /// What ended the search: `n_trials`, `max_minutes` or `exhausted`.
    pub stopped_by: String,
    /// Wall time of this run.
    pub seconds: f64,
}

fn write_outputs(
    tune: &Tune,
    root: &Path,
    records: &[TrialRecord],
    stopped_by: &str,
    seconds: f64,
) -> anyhow::Result<()> {
    let out = root.join(&tune.config.out);
    fs_err::create_dir_all(&out)?;
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    crate::atomic_write::write_atomic(&out.join("trials.jsonl"), lines.as_bytes())?;
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let best = best(tune, records);
    let mut best_params = Value::Object(Default::default());
    if let Some(b) = best {
        for (k, v) in &b.params {
            crate::tune::space::set_dotted(&mut best_params, k, v.clone());
        }
    }
    let metrics = TuneMetrics {
        objective: tune.config.objective.metric.clone(),
        mode: tune.config.objective.mode,
        best_value: best.and_then(|b| b.value),
        best_trial: best.map(|b| b.index),
        best_params: best_params.clone(),
        trials: records.len(),
        complete: count(Status::Complete),
        pruned: count(Status::Pruned),
        failed: count(Status::Failed),
        reused: records.iter().filter(|r| r.reused).count(),
        stopped_by: stopped_by.to_owned(),
        seconds,
    };
    super::write_json(&out.join("metrics.json"), &metrics)?;
    let Some(b) = best else {
        let first = records.iter().find_map(|r| {
            r.reason
                .as_ref()
                .map(|why| format!("trial {} {why}", r.index))
        });
        bail!(
            "no trial completed (of {}); {}; trial folders are under cache/tune/v1/trials/",
            records.len(),
            first.unwrap_or_else(|| "none ran".into())
        );
    };
    let header = format!(
        "# best of {} trials: trial {} with {} = {} ({}), written by pipe's tune stage\n",
        records.len(),
        b.index,
        tune.config.objective.metric,
        b.value.unwrap_or(f64::NAN),
        if tune.config.objective.mode == Direction::Min {
            "min"
        } else {
            "max"
        },
    );
    let yaml = serde_yaml::to_string(&best_params)?;
    crate::atomic_write::write_atomic(
        &out.join("best.yaml"),
        format!("{header}{yaml}").as_bytes(),
    )?;
    eprintln!(
        "best: trial {} with {} = {} after {} trials ({} reused, {} pruned, {} failed); stopped by {stopped_by}",
        b.index,
        tune.config.objective.metric,
        b.value.unwrap_or(f64::NAN),
        records.len(),
        metrics.reused,
        metrics.pruned,
        metrics.failed
    );
    Ok(())
}
