//! The `tune` kind's options: the search space, the objective, the budget, the pruning
//! rule and what a trial runs; and the command type `cmd:` stages share. How points are
//! proposed, trials run and rules judge reports is the engine's (`pipe_engine::tune`,
//! `pipe_engine::stages::tune`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// Whether smaller or larger objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Direction {
    /// `value` turned into something to minimise.
    pub fn to_min(self, value: f64) -> f64 {
        match self {
            Direction::Min => value,
            Direction::Max => -value,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.to_min(a) < self.to_min(b)
    }
}

/// How points are chosen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// A Latin hypercube, then the maximiser of expected improvement under a Gaussian
    /// process.
    #[default]
    Gp,
    /// Uniformly random points, independent of results: a baseline.
    Random,
}

/// A command to run: a shell line or an argv list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Cmd {
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly, no shell.
    Argv(Vec<String>),
}

/// A pruning rule (`prune:` in a tune stage, chosen by `rule:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum Rule {
    /// The median stopping rule.
    Median(MedianRule),
    /// Asynchronous successive halving.
    Halving(HalvingRule),
}

impl Rule {
    /// Settings that cannot work, as a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Rule::Median(_) => Ok(()),
            Rule::Halving(h) => h.validate(),
        }
    }
}

/// The median rule's settings (`prune:` in a tune stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedianRule {
    /// Completed trials needed before anything is pruned.
    #[serde(default = "default_min_trials")]
    pub min_trials: usize,
    /// Steps before the first check.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Check every this many steps after the warmup.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_min_trials() -> usize {
    3
}
fn default_interval() -> u64 {
    1
}

impl Default for MedianRule {
    fn default() -> Self {
        Self {
            min_trials: default_min_trials(),
            warmup_steps: 0,
            interval: default_interval(),
        }
    }
}

/// Asynchronous successive halving's settings (`prune: {rule: halving, ...}`).
///
/// Rung `k` is at step `min_resource × eta^k`. A trial's value at a rung is the value of
/// its first report at or after the rung's step (so reports every N steps need not land
/// on the rungs exactly; one report may reach several rungs). When it reaches a rung its
/// value is recorded there, and it continues only when that value is among the best
/// `max(1, ⌊n / eta⌋)` of the `n` values recorded at the rung so far, its own included:
/// the rule of Optuna's `SuccessiveHalvingPruner`, where with fewer than `eta` values only
/// a new best continues. Trials of earlier runs of the study count, so a rerun with a
/// larger `n_trials` keeps raising the bar. Each rung is judged once per trial: a trial
/// that passed a rung is not stopped there later by better newcomers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalvingRule {
    /// The step of the first rung (a trial's first judgement).
    pub min_resource: u64,
    /// The reduction factor: rungs are `eta` times apart, and the top `1/eta` continues.
    #[serde(default = "default_eta")]
    pub eta: u64,
    /// Values a rung needs before it stops anything (0: judge from the first value on,
    /// as ASHA does).
    #[serde(default)]
    pub bootstrap_count: usize,
}

/// Hyperband's reduction factor (Li et al. 2018): a third of the trials go on at each rung.
fn default_eta() -> u64 {
    3
}

impl HalvingRule {
    /// Settings that cannot work, as a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_resource == 0 {
            return Err(
                "`prune.min_resource` must be at least 1 (the step of the first rung)".into(),
            );
        }
        if self.eta < 2 {
            return Err(format!(
                "`prune.eta` must be at least 2 (the top 1/eta of a rung continues), not {}",
                self.eta
            ));
        }
        Ok(())
    }

    /// The step of rung `k` (`None` past `u64`).
    pub fn rung_step(&self, k: u32) -> Option<u64> {
        self.min_resource.checked_mul(self.eta.checked_pow(k)?)
    }

    /// The rungs `(k, step)` that a report at `step` reaches first, after a report at
    /// `previous` (the trial's report before it, if any).
    pub fn rungs_reached(&self, previous: Option<u64>, step: u64) -> Vec<(u32, u64)> {
        (0..)
            .map_while(|k| self.rung_step(k).map(|s| (k, s)))
            .take_while(|&(_, s)| s <= step)
            .filter(|&(_, s)| previous.is_none_or(|p| s > p))
            .collect()
    }

    /// A trial's value at the rung at `rung_step`: its first report at or after it.
    pub fn value_at(reports: &[(u64, f64)], rung_step: u64) -> Option<f64> {
        reports.iter().find(|(s, _)| *s >= rung_step).map(|r| r.1)
    }
}

/// The tune options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// The folder written (`trials.jsonl`, `best.yaml`, `metrics.json`).
    pub out: PathBuf,
    /// The search space (see `pipe_engine::tune::space`).
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
    /// Trials from the Latin hypercube before the GP is used (default: twice the number
    /// of parameters, between 3 and 12).
    #[serde(default)]
    pub initial: Option<usize>,
    /// Points tried first, in order, before the initial design: each maps every parameter
    /// of `space` to a value in its range. Put the configuration you already have here (a
    /// default recipe) and the study starts from it, so its best is never a trial that
    /// scored worse than that configuration did.
    #[serde(default)]
    pub enqueue: Vec<serde_json::Map<String, Value>>,
    /// `gp` (Bayesian optimisation, the default) or `random` (random search, a baseline).
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Stop unpromising trials early (the median rule or successive halving).
    #[serde(default)]
    pub prune: Option<PruneConfig>,
    /// What a trial runs.
    pub trial: TrialSpec,
    /// Ranks that each run one trial at a time, proposed in batches (`ranks: N` starts N
    /// local processes; under `mlx.launch`, `mpirun` or `srun` the launcher's are used).
    #[serde(default)]
    pub distributed: crate::train::DistributedOptions,
}

fn one() -> usize {
    1
}

/// The objective: a number in the trial's metrics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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

/// Pruning options: a rule (`rule: median`, the default, or `rule: halving`) with its own
/// fields, and `mode`. A field of the other rule is refused (`min_trials` with `rule:
/// halving`, `eta` with `rule: median`), so a setting can never be silently ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneConfig {
    /// The rule and its settings.
    pub rule: Rule,
    /// Whether intermediate values are minimised or maximised (default: `min` for train
    /// trials, whose values are validation losses; the objective's mode for commands).
    pub mode: Option<Direction>,
}

impl JsonSchema for PruneConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PruneConfig".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let count = serde_json::json!({"type": "integer", "minimum": 0});
        schemars::json_schema!({
            "description": "`rule: median` (default; min_trials, warmup_steps, interval) or `rule: halving` (min_resource, eta, bootstrap_count); both take `mode`",
            "type": "object",
            "properties": {
                "rule": {"enum": ["median", "halving"]},
                "mode": {"enum": ["min", "max"]},
                "min_trials": count, "warmup_steps": count, "interval": count,
                "min_resource": count, "eta": count, "bootstrap_count": count
            },
            "additionalProperties": false
        })
    }
}

impl<'de> Deserialize<'de> for PruneConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, Value>::deserialize(d)
            .map_err(|e| D::Error::custom(format!("`prune` must be a mapping: {e}")))?;
        let mode = match map.remove("mode") {
            None | Some(Value::Null) => None,
            Some(m) => Some(
                serde_json::from_value(m)
                    .map_err(|e| D::Error::custom(format!("`prune.mode`: {e}")))?,
            ),
        };
        map.entry("rule").or_insert_with(|| Value::from("median"));
        let named = map.get("rule").cloned().unwrap_or(Value::Null);
        let rule = serde_json::from_value(Value::Object(map)).map_err(|e| {
            D::Error::custom(format!(
                "`prune` (rule {named}): {e}; `rule: median` takes min_trials, warmup_steps and interval, `rule: halving` takes min_resource, eta and bootstrap_count (both take mode)"
            ))
        })?;
        Ok(Self { rule, mode })
    }
}

impl Serialize for PruneConfig {
    // Flat, as written (`{rule: median, min_trials: 3, ...}`): this is hashed into the
    // study key, which must not change for studies that predate `rule: halving`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut value = serde_json::to_value(&self.rule).map_err(S::Error::custom)?;
        value["mode"] = serde_json::to_value(self.mode).map_err(S::Error::custom)?;
        value.serialize(s)
    }
}

/// What a trial runs: exactly one of `cmd` and `train`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
