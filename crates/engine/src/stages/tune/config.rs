//! A tune stage's options (`with:`), checked when the pipeline loads, and how a point of
//! the search space becomes a trial to run.

use super::trial::{self, Plan};
use crate::tune::prune::Rule;
use crate::tune::space::{Point, Space, nest};
use crate::tune::suggest::{Direction, Optimizer, default_initial};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most trials one stage may run.
const MAX_TRIALS: usize = 10_000;

pub use pipe_schema::tune::{Budget, Objective, PruneConfig, TrialSpec, TuneConfig};

/// `with:` of a tune stage, checked; what the stage needs to run.
pub(super) struct Tune {
    pub(super) config: TuneConfig,
    pub(super) space: Space,
    /// The `enqueue` points, checked against the space.
    pub(super) enqueued: Vec<Point>,
    pub(super) initial: usize,
    pub(super) prune: Option<(Rule, Direction)>,
}

impl Tune {
    pub(super) fn new(config: TuneConfig) -> Result<Self, String> {
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
        if config.distributed.ranks == 0 {
            return Err("`distributed.ranks` must be at least 1".into());
        }
        if config.distributed.ranks > 1 && config.parallel > 1 {
            return Err(format!(
                "over ranks each rank runs one trial at a time; set `parallel: 1` (not {}) or leave out `distributed`",
                config.parallel
            ));
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
            Some(p) => {
                p.rule.validate()?;
                if let (Rule::Halving(h), Some(iters)) = (&p.rule, config.budget.iters)
                    && h.min_resource > iters
                {
                    return Err(format!(
                        "`prune.min_resource: {}` is above `budget.iters: {iters}`, so no trial would reach a rung and nothing would be pruned; lower `min_resource` (e.g. to {})",
                        h.min_resource,
                        (iters / 4).max(1)
                    ));
                }
                let direction = p.mode.unwrap_or(if t.train.is_some() {
                    Direction::Min
                } else {
                    config.objective.mode
                });
                Some((p.rule.clone(), direction))
            }
        };
        if config.initial.is_some() && config.optimizer == Optimizer::Random {
            return Err(
                "`initial` sizes the design that Bayesian optimisation starts from; `optimizer: random` has none, so remove `initial`".into(),
            );
        }
        let initial = config
            .initial
            .unwrap_or_else(|| default_initial(space.params.len()));
        let mut enqueued: Vec<Point> = Vec::new();
        for (i, named) in config.enqueue.iter().enumerate() {
            let point = space
                .point_of(named)
                .map_err(|e| format!("`enqueue[{i}]`: {e}"))?;
            if enqueued.contains(&point) {
                return Err(format!("`enqueue[{i}]` repeats an earlier point"));
            }
            enqueued.push(point);
        }
        if enqueued.len() > config.budget.n_trials {
            return Err(format!(
                "`enqueue` has {} points but `budget.n_trials` is {}: raise n_trials or enqueue fewer",
                enqueued.len(),
                config.budget.n_trials
            ));
        }
        let tune = Self {
            config,
            space,
            enqueued,
            initial,
            prune,
        };
        // Build one trial from the middle of the space: a misspelt option or placeholder
        // fails now, not when the first trial runs.
        tune.trial_inputs()?;
        Ok(tune)
    }

    /// The files every trial reads: `trial.deps`, and for train trials the data, tokens and
    /// model files of the train and evaluate options, as resolving a trial from the middle
    /// of the space gives them. They are deps of the stage and hashed into every trial key,
    /// so editing the data reruns the search. Errors name a misspelt option or placeholder.
    pub(super) fn trial_inputs(&self) -> Result<Vec<String>, String> {
        // Where a trial's own outputs go: filled in to resolve, never inputs.
        const TRAIN_OUT: &str = "trial/train";
        const EVAL_OUT: &str = "trial/eval.json";
        let sample = self.space.from_unit(&vec![0.5; self.space.params.len()]);
        let mut inputs = self.config.trial.deps.clone();
        let mut add = |deps: Vec<String>| {
            for d in deps {
                if d != TRAIN_OUT && !inputs.contains(&d) {
                    inputs.push(d);
                }
            }
        };
        match self.plan(&sample)? {
            Plan::Cmd(cmd) => {
                let mut vars = self.cmd_vars(&sample);
                vars.insert("trial_dir".into(), "trial-dir".into());
                trial::render_cmd(&cmd, &vars)?;
            }
            Plan::Train {
                mut train,
                evaluate,
            } => {
                train["out_dir"] = Value::from(TRAIN_OUT);
                let resolved = crate::stages::Kind::TRAIN
                    .resolve(&train)
                    .map_err(|e| format!("`trial.train`: {e}"))?;
                add(resolved.deps);
                if let Some(mut evaluate) = evaluate {
                    evaluate["adapter"] = Value::from(TRAIN_OUT);
                    evaluate["out"] = Value::from(EVAL_OUT);
                    let resolved = crate::stages::Kind::EVALUATE
                        .resolve(&evaluate)
                        .map_err(|e| format!("`trial.evaluate`: {e}"))?;
                    add(resolved.deps);
                }
            }
        }
        Ok(inputs)
    }

    /// Parameters by dotted name.
    pub(super) fn flat(&self, point: &[Value]) -> BTreeMap<String, Value> {
        self.space
            .params
            .iter()
            .zip(point)
            .map(|(p, v)| (p.name.clone(), v.clone()))
            .collect()
    }

    /// The point a trial's parameters (by dotted name) stand for: [`Tune::flat`] undone
    /// (a missing name becomes null, which no space contains).
    pub(super) fn point_of(&self, params: &BTreeMap<String, Value>) -> Point {
        self.space
            .params
            .iter()
            .map(|p| params.get(&p.name).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// The values of a command's placeholders for `point` (`trial_dir` is added when the
    /// trial runs).
    pub(super) fn cmd_vars(&self, point: &[Value]) -> BTreeMap<String, String> {
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
    pub(super) fn plan(&self, point: &[Value]) -> Result<Plan, String> {
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

pub(super) fn uses_mlx_config(t: &TrialSpec) -> bool {
    t.train.is_some() || t.mlx
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(trial: Value, extra: Value) -> Value {
        let mut w = json!({
            "out": "tune",
            "space": {"learning_rate": {"float": [1e-5, 1e-3], "log": true}, "lora.rank": {"int": [2, 16]}},
            "objective": {"metric": "train.final_valid_loss"},
            "budget": {"n_trials": 4, "iters": 5},
            "trial": trial,
        });
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        w
    }

    fn train() -> Value {
        json!({"train": {"model": "m", "train_data": "d/train.jsonl", "valid_data": "d/valid.jsonl"}})
    }

    fn error(w: Value) -> String {
        let config: TuneConfig = serde_json::from_value(w).unwrap();
        Tune::new(config).err().expect("should be refused")
    }

    #[test]
    fn train_trials_get_the_point_and_the_budget() {
        let config: TuneConfig = serde_json::from_value(with(train(), json!({}))).unwrap();
        let tune = Tune::new(config).unwrap();
        assert_eq!(tune.initial, 4, "two parameters + 2");
        assert_eq!(tune.config.optimizer, Optimizer::Gp, "the default");
        let Plan::Train {
            train: options,
            evaluate,
        } = tune.plan(&[json!(3e-4), json!(8)]).unwrap()
        else {
            panic!("a train plan");
        };
        assert_eq!(options["learning_rate"], json!(3e-4));
        assert_eq!(options["lora"]["rank"], json!(8));
        assert_eq!(options["iters"], json!(5));
        assert!(evaluate.is_none());
        assert!(super::super::uses_mlx(&with(train(), json!({}))));
        let cmd = json!({"cmd": "python3 f.py {args}"});
        assert!(!super::super::uses_mlx(&with(cmd.clone(), json!({}))));
        let mut mlx_cmd = cmd;
        mlx_cmd["mlx"] = json!(true);
        assert!(super::super::uses_mlx(&with(mlx_cmd, json!({}))));
    }

    #[test]
    fn a_stage_of_train_trials_depends_on_the_files_its_trials_read() {
        let mut trial = train();
        trial["evaluate"] = json!({"data": "d/test.jsonl", "max_examples": 5});
        let resolved = crate::stages::Kind::TUNE
            .resolve(&with(trial, json!({})))
            .unwrap();
        assert_eq!(
            resolved.deps,
            ["d/train.jsonl", "d/valid.jsonl", "d/test.jsonl"]
        );
        assert_eq!(resolved.outs, ["tune"]);
    }

    #[test]
    fn each_mistake_gets_one_clear_error() {
        let e = error(with(train(), json!({"parallel": 2})));
        assert!(e.contains("set `parallel: 1`"), "{e}");
        let e = error(with(train(), json!({"objective": {"metric": "loss"}})));
        assert!(
            e.contains("`train.*`") && e.contains("add `trial.evaluate`"),
            "{e}"
        );
        let mut t = train();
        t["train"]["out_dir"] = json!("x");
        assert!(error(with(t, json!({}))).contains("set by tune"));
        let mut t = train();
        t["train"]["learnin_rate"] = json!(1);
        let e = error(with(t, json!({})));
        assert!(
            e.contains("`trial.train`") && e.contains("learnin_rate"),
            "{e}"
        );
        let e = error(with(json!({"cmd": "f {lr}"}), json!({})));
        assert!(e.contains("unknown placeholder `{lr}`"), "{e}");
        let e = error(with(json!({}), json!({})));
        assert!(e.contains("needs `cmd`"), "{e}");
        let e = error(with(train(), json!({"budget": {"n_trials": 0}})));
        assert!(e.contains("n_trials"), "{e}");
        let e = error(with(train(), json!({"optimizer": "random", "initial": 3})));
        assert!(e.contains("remove `initial`"), "{e}");
        let config: Result<TuneConfig, _> =
            serde_json::from_value(with(train(), json!({"optimizer": "tpe"})));
        let e = config.unwrap_err().to_string();
        assert!(e.contains("`gp`") && e.contains("`random`"), "{e}");
        let e = error(with(
            train(),
            json!({"prune": {"rule": "halving", "eta": 1, "min_resource": 5}}),
        ));
        assert!(e.contains("`prune.eta`"), "{e}");
        let mut halving = with(
            train(),
            json!({"prune": {"rule": "halving", "min_resource": 41}}),
        );
        halving["budget"]["iters"] = json!(40);
        let e = error(halving);
        assert!(e.contains("no trial would reach a rung"), "{e}");
    }

    fn parse_error(w: Value) -> String {
        serde_json::from_value::<TuneConfig>(w)
            .expect_err("should not parse")
            .to_string()
    }

    #[test]
    fn each_rule_takes_only_its_own_fields() {
        let e = parse_error(with(train(), json!({"prune": {"rule": "hyperband"}})));
        assert!(e.contains("`median`") && e.contains("`halving`"), "{e}");
        let e = parse_error(with(
            train(),
            json!({"prune": {"rule": "halving", "min_resource": 5, "min_trials": 3}}),
        ));
        assert!(
            e.contains("unknown field `min_trials`")
                && e.contains("`rule: halving` takes min_resource"),
            "{e}"
        );
        let e = parse_error(with(train(), json!({"prune": {"eta": 3}})));
        assert!(
            e.contains("unknown field `eta`") && e.contains("rule \"median\""),
            "{e}"
        );
        let e = parse_error(with(train(), json!({"prune": {"rule": "halving"}})));
        assert!(e.contains("missing field `min_resource`"), "{e}");
        let e = parse_error(with(train(), json!({"prune": {"mode": "up"}})));
        assert!(e.contains("`prune.mode`"), "{e}");
        // The median rule is the default and serialises as before (the study key).
        let config: TuneConfig = serde_json::from_value(with(
            train(),
            json!({"prune": {"min_trials": 2, "mode": "max"}}),
        ))
        .unwrap();
        let prune = config.prune.unwrap();
        assert_eq!(
            serde_json::to_value(&prune).unwrap(),
            json!({"rule": "median", "min_trials": 2, "warmup_steps": 0, "interval": 1, "mode": "max"})
        );
        let config: TuneConfig = serde_json::from_value(with(
            train(),
            json!({"prune": {"rule": "halving", "min_resource": 5}}),
        ))
        .unwrap();
        let tune = Tune::new(config).unwrap();
        assert_eq!(
            tune.prune,
            Some((
                Rule::Halving(crate::tune::prune::HalvingRule {
                    min_resource: 5,
                    eta: 3,
                    bootstrap_count: 0
                }),
                Direction::Min
            ))
        );
    }
}
