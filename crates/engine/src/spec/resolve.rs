//! Turning parsed YAML into a resolved [`Pipeline`], collecting every problem on the way.
//!
//! The resolver keeps going after an error so that one `pipe run` lists all the problems
//! of a pipeline, each at its own `file:line:col`.

use super::diag::{Diagnostic, Diagnostics, Pos};
use super::locate::Locator;
use super::values::{
    apply_set, dotted_keys, key_str, list_presets, lookup, merge, merge_yaml, scalar_name, to_json,
};
use super::{Cmd, LoadOptions, PIPELINE_KEYS, Pipeline, STAGE_KEYS, Stage, normalize_path};
use crate::stages::{Kind, all_kind_names};

use serde_json::{Map, Value};
use serde_yaml::{Mapping, Value as Yaml};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Most stages one matrix may expand into: more is almost always a mistake.
const MAX_MATRIX: usize = 1024;

pub(super) struct Resolver<'a> {
    pub(super) file: &'a Path,
    pub(super) source: &'a str,
    pub(super) loc: Locator<'a>,
    pub(super) root: &'a Path,
    pub(super) env: minijinja::Environment<'static>,
    pub(super) diags: Vec<Diagnostic>,
    pub(super) check_deps: bool,
}

/// Where a stage's list entries were written, for errors found after resolution.
#[derive(Default)]
pub(super) struct Spots {
    pub(super) deps: Vec<Pos>,
    pub(super) outs: Vec<Pos>,
    pub(super) needs: Vec<(String, Pos)>,
}

pub(super) fn resolve(
    file: &Path,
    source: String,
    opts: &LoadOptions,
) -> Result<Pipeline, Diagnostics> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let mut r = Resolver {
        file,
        source: &source,
        loc: Locator::new(&source),
        root: &opts.root,
        env,
        diags: Vec::new(),
        check_deps: !opts.skip_dep_check,
    };
    let pipeline = r.pipeline(opts);
    let diags = r.diags;
    match pipeline {
        Some(mut p) if diags.is_empty() => {
            p.source = source;
            Ok(p)
        }
        _ => Err(Diagnostics(diags)),
    }
}

impl Resolver<'_> {
    pub(super) fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(self.file, self.source, pos, message));
        self.diags.last_mut().expect("just pushed")
    }

    fn pipeline(&mut self, opts: &LoadOptions) -> Option<Pipeline> {
        let doc: Yaml = match serde_yaml::from_str(self.source) {
            Ok(doc) => doc,
            Err(e) => {
                let pos = e.location().map_or(Pos::default(), |l| Pos {
                    line: l.line(),
                    col: l.column(),
                });
                // serde_yaml appends "at line L column C"; the diagnostic shows it better.
                let text = e.to_string();
                let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
                self.error(pos, format!("invalid YAML: {text}"));
                return None;
            }
        };
        let Yaml::Mapping(top) = doc else {
            self.error(
                Pos { line: 1, col: 1 },
                "a pipeline must be a mapping with a `stages:` key",
            );
            return None;
        };
        for key in top.keys() {
            let k = key_str(key);
            if !PIPELINE_KEYS.contains(&k.as_str()) {
                let pos = self.loc.key(&[&k]);
                let d = self.error(pos, format!("unknown key `{k}` in the pipeline"));
                *d = d.clone().suggest(&k, PIPELINE_KEYS.iter().copied());
            }
        }
        let name = match top.get("name") {
            Some(Yaml::String(s)) => s.clone(),
            _ => self
                .file
                .file_stem()
                .map_or("pipeline".into(), |s| s.to_string_lossy().into_owned()),
        };
        let params = self.params(&top, &opts.sets);
        let vars = match top.get("vars") {
            Some(v) => {
                let pos = self.loc.key(&["vars"]);
                let v = to_json(v);
                self.render_value(&v, &serde_json::json!({ "params": params }), pos)
            }
            None => Value::Object(Map::new()),
        };
        let stages_raw = match top.get("stages") {
            Some(Yaml::Mapping(m)) => m.clone(),
            Some(_) => {
                let pos = self.loc.key(&["stages"]);
                self.error(pos, "`stages` must be a mapping of stage names to stages");
                return None;
            }
            None => {
                self.error(Pos { line: 1, col: 1 }, "the pipeline has no `stages:`");
                return None;
            }
        };
        let mut stages = Vec::new();
        let mut spots = Vec::new();
        for (key, raw) in &stages_raw {
            let base = key_str(key);
            for (stage, spot) in self.stage(&base, raw, &params, &vars) {
                stages.push(stage);
                spots.push(spot);
            }
        }
        // Compare stages' globs match the other stages' outs, known only now.
        for (i, outcome) in crate::stages::compare::expand_globs(&mut stages) {
            match outcome {
                Ok(added) => spots[i]
                    .deps
                    .extend(std::iter::repeat_n(stages[i].pos, added)),
                Err(why) => {
                    let pos = stages[i].pos;
                    self.error(pos, format!("stage `{}`: {why}", stages[i].base));
                }
            }
        }
        self.cross_checks(&mut stages, &spots);
        let tracking = self.section(
            "tracking",
            &top,
            |t: &pipe_schema::tracking::TrackingConfig| t.check(),
        );
        let notify = self.section("notify", &top, |n: &pipe_schema::notify::NotifyConfig| {
            n.check()
        });
        let remote = self.section("remote", &top, |r: &pipe_schema::remote::RemoteConfig| {
            r.check()
        });
        Some(Pipeline {
            name,
            file: self.file.to_owned(),
            root: self.root.to_owned(),
            params,
            stages,
            source: String::new(),
            tracking,
            notify,
            remote,
        })
    }

    /// A typed top-level section (`tracking:`, `notify:`, `remote:`), checked; errors point at the key.
    fn section<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &'static str,
        top: &Mapping,
        check: impl Fn(&T) -> Result<(), (&'static str, String)>,
    ) -> Option<T> {
        let raw = to_json(top.get(key)?);
        let at = self.loc.key(&[key]);
        let checked = pipe_schema::from_value::<T>(&raw).and_then(|t| {
            check(&t)
                .map_err(|(field, message)| pipe_schema::FieldError {
                    path: if field.is_empty() {
                        vec![]
                    } else {
                        vec![field.to_owned()]
                    },
                    message,
                    expected: Vec::new(),
                })
                .map(|()| t)
        });
        match checked {
            Ok(t) => Some(t),
            Err(e) => {
                self.diags.push(Diagnostic::at_field(
                    self.file,
                    self.source,
                    &[key],
                    at,
                    &format!("`{key}`: "),
                    &e,
                ));
                None
            }
        }
    }

    /// `params_file`, then inline `params`, then `--set` overrides.
    fn params(&mut self, top: &Mapping, sets: &[String]) -> Value {
        let mut params = Value::Object(Map::new());
        if let Some(raw) = top.get("params_file") {
            let pos = self.loc.key(&["params_file"]);
            match raw.as_str().map(normalize_path) {
                Some(Ok(rel)) => {
                    let path = self.root.join(&rel);
                    match fs_err::read_to_string(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_yaml::from_str::<Yaml>(&t).map_err(|e| e.to_string()))
                    {
                        Ok(v @ Yaml::Mapping(_)) => merge(&mut params, to_json(&v)),
                        Ok(_) => {
                            self.error(pos, format!("params file `{rel}` must be a mapping"));
                        }
                        Err(e) => {
                            self.error(pos, format!("cannot load params file `{rel}`: {e}"))
                                .hints
                                .push("params_file is relative to the workspace root".into());
                        }
                    }
                }
                _ => {
                    self.error(pos, "`params_file` must be a relative path");
                }
            }
        }
        match top.get("params") {
            Some(v @ Yaml::Mapping(_)) => merge(&mut params, to_json(v)),
            Some(_) => {
                let pos = self.loc.key(&["params"]);
                self.error(pos, "`params` must be a mapping");
            }
            None => {}
        }
        for set in sets {
            if let Err(d) = apply_set(&mut params, set) {
                self.diags.push(d);
            }
        }
        params
    }

    fn stage(
        &mut self,
        base: &str,
        raw: &Yaml,
        params: &Value,
        vars: &Value,
    ) -> Vec<(Stage, Spots)> {
        let at = self.loc.key(&["stages", base]);
        if base.is_empty()
            || !base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            self.error(at, format!("invalid stage name `{base}`"))
                .hints
                .push("use letters, digits, `_`, `-` and `.`".into());
            return Vec::new();
        }
        let Yaml::Mapping(own) = raw else {
            self.error(at, format!("stage `{base}` must be a mapping"));
            return Vec::new();
        };
        let map = self.extends(base, own);
        for key in map.keys() {
            let k = key_str(key);
            if !STAGE_KEYS.contains(&k.as_str()) {
                let pos = self.loc.key(&["stages", base, &k]);
                let d = self.error(pos, format!("unknown key `{k}` in stage `{base}`"));
                *d = d.clone().suggest(&k, STAGE_KEYS.iter().copied());
            }
        }
        let kind = self.kind(base, &map);
        let Some(combos) = self.matrix(base, map.get("matrix")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for combo in combos {
            let name = if combo.is_empty() {
                base.to_owned()
            } else {
                let parts: Vec<String> = combo.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
                format!("{base}@{}", parts.join(","))
            };
            let matrix: BTreeMap<String, Value> = combo
                .iter()
                .map(|(k, _, v)| (k.clone(), v.clone()))
                .collect();
            let ctx = serde_json::json!({
                "params": params, "vars": vars, "matrix": matrix,
                "stage": { "name": name, "base": base },
            });
            if let Some(stage) = self.expansion(base, name, &map, kind, matrix, &ctx, params, at) {
                out.push(stage);
            }
        }
        out
    }

    /// The stage's mapping with `extends` presets merged underneath it.
    fn extends(&mut self, base: &str, own: &Mapping) -> Mapping {
        let names: Vec<String> = match own.get("extends") {
            None => return own.clone(),
            Some(Yaml::String(s)) => vec![s.clone()],
            Some(Yaml::Sequence(seq)) => seq
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(_) => {
                let pos = self.loc.key(&["stages", base, "extends"]);
                self.error(pos, "`extends` must be a preset name or a list of them");
                return own.clone();
            }
        };
        let mut merged = Yaml::Mapping(Mapping::new());
        for preset in &names {
            let pos = self.loc.value(&["stages", base, "extends"], preset);
            let path = self.root.join("stages").join(format!("{preset}.yaml"));
            match fs_err::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_yaml::from_str::<Yaml>(&t).map_err(|e| e.to_string()))
            {
                Ok(v @ Yaml::Mapping(_)) => merge_yaml(&mut merged, v),
                Ok(_) => {
                    self.error(
                        pos,
                        format!("preset `stages/{preset}.yaml` must be a mapping"),
                    );
                }
                Err(e) => {
                    let available = list_presets(self.root);
                    let d = self.error(pos, format!("cannot load preset `{preset}`: {e}"));
                    *d = d
                        .clone()
                        .suggest(preset, available.iter().map(String::as_str));
                    d.hints.push(
                        "presets live in `stages/<name>.yaml` under the workspace root".into(),
                    );
                }
            }
        }
        let mut own = own.clone();
        own.remove("extends");
        merge_yaml(&mut merged, Yaml::Mapping(own));
        match merged {
            Yaml::Mapping(m) => m,
            _ => unreachable!("merging mappings yields a mapping"),
        }
    }

    fn kind(&mut self, base: &str, map: &Mapping) -> Option<Kind> {
        let name = match map.get("kind") {
            Some(Yaml::String(k)) => k.clone(),
            Some(_) => {
                let pos = self.loc.key(&["stages", base, "kind"]);
                self.error(pos, "`kind` must be a string");
                return None;
            }
            None if map.contains_key("cmd") => "cmd".into(),
            None => {
                let pos = self.loc.key(&["stages", base]);
                self.error(pos, format!("stage `{base}` has neither `kind` nor `cmd`"))
                    .hints
                    .push("add `cmd: <shell command>` or `kind: <built-in kind>`".into());
                return None;
            }
        };
        match Kind::parse(&name) {
            Ok(k) => Some(k),
            Err(e) => {
                let pos = self.loc.value(&["stages", base, "kind"], &name);
                let d = self.error(pos, e.to_string());
                *d = d.clone().suggest(&name, all_kind_names());
                None
            }
        }
    }

    /// Matrix combinations in file order: `(key, value as named, value for templates)`.
    fn matrix(
        &mut self,
        base: &str,
        raw: Option<&Yaml>,
    ) -> Option<Vec<Vec<(String, String, Value)>>> {
        let Some(raw) = raw else {
            return Some(vec![Vec::new()]);
        };
        let pos = self.loc.key(&["stages", base, "matrix"]);
        let Yaml::Mapping(m) = raw else {
            self.error(
                pos,
                "bad matrix: `matrix` must map names to lists of values",
            )
            .hints
            .push("e.g. `matrix: {rank: [8, 16], lr: [1e-4, 3e-4]}`".into());
            return None;
        };
        if m.is_empty() {
            self.error(pos, "bad matrix: it is empty");
            return None;
        }
        let mut combos: Vec<Vec<(String, String, Value)>> = vec![Vec::new()];
        for (k, values) in m {
            let key = key_str(k);
            let kpos = self.loc.key(&["stages", base, "matrix", &key]);
            let list = match values {
                Yaml::Sequence(seq) if !seq.is_empty() => seq,
                _ => {
                    self.error(
                        kpos,
                        format!("bad matrix: `{key}` must be a non-empty list of values"),
                    );
                    return None;
                }
            };
            let mut seen = BTreeSet::new();
            let mut named = Vec::new();
            for v in list {
                let Some(text) = scalar_name(v) else {
                    self.error(
                        kpos,
                        format!(
                            "bad matrix: values of `{key}` must be strings, numbers or booleans"
                        ),
                    );
                    return None;
                };
                if !seen.insert(text.clone()) {
                    self.error(kpos, format!("bad matrix: `{key}` lists `{text}` twice"));
                    return None;
                }
                named.push((text, to_json(v)));
            }
            if combos.len() * named.len() > MAX_MATRIX {
                self.error(
                    pos,
                    format!("bad matrix: more than {MAX_MATRIX} combinations"),
                );
                return None;
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    let key = key.clone();
                    named.iter().map(move |(text, json)| {
                        let mut c = c.clone();
                        c.push((key.clone(), text.clone(), json.clone()));
                        c
                    })
                })
                .collect();
        }
        Some(combos)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; a struct adds nothing"
    )]
    fn expansion(
        &mut self,
        base: &str,
        name: String,
        map: &Mapping,
        kind: Option<Kind>,
        matrix: BTreeMap<String, Value>,
        ctx: &Value,
        params: &Value,
        at: Pos,
    ) -> Option<(Stage, Spots)> {
        let before = self.diags.len();
        let mut spots = Spots::default();
        let cmd = match map.get("cmd") {
            None => None,
            Some(Yaml::Sequence(seq)) if !seq.is_empty() => {
                let pos = self.loc.key(&["stages", base, "cmd"]);
                let argv: Vec<String> = seq
                    .iter()
                    .map(|v| scalar_name(v).unwrap_or_default())
                    .map(|a| self.render(&a, ctx, pos))
                    .collect();
                Some(Cmd::Argv(argv))
            }
            Some(Yaml::String(s)) if !s.trim().is_empty() => {
                let pos = self.loc.key(&["stages", base, "cmd"]);
                Some(Cmd::Shell(self.render(s, ctx, pos)))
            }
            Some(_) => {
                let pos = self.loc.key(&["stages", base, "cmd"]);
                self.error(pos, "`cmd` must be a non-empty string or list of strings");
                None
            }
        };
        if let Some(k) = kind.filter(|k| *k != Kind::CMD)
            && map.contains_key("cmd")
        {
            let pos = self.loc.key(&["stages", base, "cmd"]);
            self.error(
                pos,
                format!(
                    "stage `{base}` has `kind: {}`; `cmd` belongs to command stages",
                    k.name()
                ),
            )
            .hints
            .push(format!(
                "drop `cmd`, or drop `kind: {}` to run the command",
                k.name()
            ));
        }
        if kind == Some(Kind::CMD) && cmd.is_none() && !map.contains_key("cmd") {
            self.error(at, format!("stage `{base}` is a `cmd` stage without `cmd`"));
        }
        let paths = |r: &mut Self, field: &str, spots: &mut Vec<Pos>| -> Vec<String> {
            let mut out = Vec::new();
            for raw in r.strings(base, field, map) {
                let pos = r.loc.value(&["stages", base, field], &raw);
                let rendered = r.render(&raw, ctx, pos);
                match normalize_path(&rendered) {
                    Ok(p) if !out.contains(&p) => {
                        out.push(p);
                        spots.push(pos);
                    }
                    Ok(_) => {}
                    Err(why) => {
                        r.error(pos, format!("bad path `{rendered}` in `{field}`: {why}"));
                    }
                }
            }
            out
        };
        let mut deps = paths(self, "deps", &mut spots.deps);
        let mut outs = paths(self, "outs", &mut spots.outs);
        let mut metric_spots = Vec::new();
        let metrics = paths(self, "metrics", &mut metric_spots);
        for (m, pos) in metrics.iter().zip(metric_spots) {
            if !outs.contains(m) {
                spots.outs.push(pos);
            }
        }
        let mut stage_params = BTreeMap::new();
        for key in self.strings(base, "params", map) {
            match lookup(params, &key) {
                Some(v) => {
                    stage_params.insert(key, v.clone());
                }
                None => {
                    let pos = self.loc.value(&["stages", base, "params"], &key);
                    let all = dotted_keys(params);
                    let d = self.error(
                        pos,
                        format!("stage `{base}` reads param `{key}`, which is not defined"),
                    );
                    *d = d.clone().suggest(&key, all.iter().map(String::as_str));
                }
            }
        }
        for need in self.strings(base, "needs", map) {
            let pos = self.loc.value(&["stages", base, "needs"], &need);
            spots.needs.push((need, pos));
        }
        let (config, uses_mlx) =
            self.with(base, map, kind, ctx, at, &mut deps, &mut outs, &mut spots);
        // A kind acting on state outside the workspace (a server) always runs.
        let always_run = self.flag(base, "always_run", map)
            || kind
                .as_ref()
                .is_some_and(|k| k.reads_external_state_of(&config));
        let frozen = self.flag(base, "frozen", map);
        let mut resources = BTreeMap::new();
        match map.get("resources") {
            None => {}
            Some(Yaml::Mapping(m)) => {
                for (k, v) in m {
                    let key = key_str(k);
                    match v.as_u64() {
                        Some(n) => {
                            resources.insert(key, n);
                        }
                        None => {
                            let pos = self.loc.key(&["stages", base, "resources", &key]);
                            self.error(
                                pos,
                                format!("resource `{key}` must be a non-negative integer"),
                            );
                        }
                    }
                }
            }
            Some(_) => {
                let pos = self.loc.key(&["stages", base, "resources"]);
                self.error(
                    pos,
                    "`resources` must map names to counts, e.g. `{mlx: 1, mem_gb: 8}`",
                );
            }
        }
        if self.diags.len() > before {
            return None;
        }
        let stage = Stage {
            name,
            base: base.to_owned(),
            kind: kind?,
            cmd,
            deps,
            outs,
            params: stage_params,
            config,
            uses_mlx,
            needs: Vec::new(),
            metrics,
            matrix,
            always_run,
            frozen,
            resources,
            pos: at,
        };
        Some((stage, spots))
    }
}
