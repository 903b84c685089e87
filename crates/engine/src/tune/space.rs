//! The search space: named parameters, each a float range (uniform or log), an integer
//! range (uniform or log) or a categorical set, and how points map to and from the unit
//! cube the Gaussian process works in.
//!
//! ```yaml
//! space:
//!   learning_rate: {float: [1.0e-5, 1.0e-3], log: true}
//!   lora.rank: {int: [4, 64], log: true}
//!   lora.dropout: {float: [0.0, 0.2]}
//!   method: {choice: [lora, dora]}
//! ```
//!
//! Two coordinate systems:
//! - *unit coordinates* (`unit`): one number in `[0, 1]` per parameter, used by the initial
//!   design and the quasi-random candidates; [`Space::from_unit`] maps them to a valid
//!   point (an integer is rounded in its own, possibly log, scale; a categorical takes the
//!   `floor(u * k)`-th choice, so every choice is equally likely);
//! - *features* (`encode`): what the GP sees. Floats and integers are one feature each,
//!   scaled to `[0, 1]` (after `ln` where `log: true`); a categorical with `k` choices is `k`
//!   one-hot features. The acquisition is only ever evaluated at encoded *valid* points, so
//!   a one-hot vector is never rounded and an integer is never half-way.

use serde::Deserialize;
use serde_json::Value;

/// Most parameters a space may have (the quasi-random sequence uses one prime per
/// parameter, and a GP over more dimensions needs far more trials than a sweep runs).
pub const MAX_PARAMS: usize = 20;

/// What values a parameter takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A real number in `[low, high]`.
    Float {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Search in `ln` space (needs `low > 0`).
        log: bool,
    },
    /// An integer in `[low, high]`.
    Int {
        /// Lower bound.
        low: i64,
        /// Upper bound.
        high: i64,
        /// Search in `ln` space (needs `low >= 1`).
        log: bool,
    },
    /// One of a list of values (strings, numbers, booleans).
    Choice(Vec<Value>),
}

impl Domain {
    /// The range in words, for errors.
    fn describe(&self) -> String {
        match self {
            Domain::Float { low, high, .. } => format!("a number in [{low}, {high}]"),
            Domain::Int { low, high, .. } => format!("an integer in [{low}, {high}]"),
            Domain::Choice(choices) => {
                let listed: Vec<String> = choices.iter().map(Value::to_string).collect();
                format!("one of {}", listed.join(", "))
            }
        }
    }
}

/// A named parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The dotted option it sets (`lora.rank`), as written.
    pub name: String,
    /// Its values.
    pub domain: Domain,
}

/// A point: one value per parameter, in the space's order.
pub type Point = Vec<Value>;

/// A validated search space.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// Parameters, sorted by name.
    pub params: Vec<Param>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(default)]
    float: Option<[f64; 2]>,
    #[serde(default)]
    int: Option<[i64; 2]>,
    #[serde(default)]
    choice: Option<Vec<Value>>,
    #[serde(default)]
    log: bool,
}

impl Space {
    /// Parses `space:` (a mapping from parameter name to `{float: [lo, hi], log}`,
    /// `{int: [lo, hi], log}` or `{choice: [...]}`). Errors name the parameter and the fix.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let map = value
            .as_object()
            .ok_or("`space` must be a mapping from parameter name to its range")?;
        if map.is_empty() {
            return Err("`space` is empty: give at least one parameter".into());
        }
        if map.len() > MAX_PARAMS {
            return Err(format!(
                "`space` has {} parameters; at most {MAX_PARAMS} are supported",
                map.len()
            ));
        }
        let mut params = Vec::new();
        for (name, raw) in map {
            let raw: RawParam = serde_json::from_value(raw.clone()).map_err(|e| {
                format!(
                    "space `{name}`: {e} (write {{float: [lo, hi]}}, {{int: [lo, hi]}} or {{choice: [a, b]}}, with optional `log: true`)"
                )
            })?;
            params.push(Param {
                name: name.clone(),
                domain: domain(name, raw)?,
            });
        }
        // Sorted by name whatever the map's order, so proposals never depend on it.
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { params })
    }

    /// Number of GP features (one per number, `k` per categorical).
    pub fn features(&self) -> usize {
        self.params
            .iter()
            .map(|p| match &p.domain {
                Domain::Choice(c) => c.len(),
                _ => 1,
            })
            .sum()
    }

    /// Maps unit coordinates (one per parameter) to a valid point.
    pub fn from_unit(&self, unit: &[f64]) -> Point {
        self.params
            .iter()
            .zip(unit)
            .map(|(p, &u)| {
                let u = u.clamp(0.0, 1.0);
                match &p.domain {
                    Domain::Float { low, high, log } => {
                        Value::from(clean(unscale(u, *low, *high, *log)))
                    }
                    Domain::Int { low, high, log } => {
                        let v = if *log {
                            unscale(u, *low as f64, *high as f64, true).round() as i64
                        } else {
                            // Equal-width bins, so the end values are as likely as the rest.
                            low + ((u * (high - low + 1) as f64).floor() as i64)
                        };
                        Value::from(v.clamp(*low, *high))
                    }
                    Domain::Choice(choices) => {
                        let i = ((u * choices.len() as f64) as usize).min(choices.len() - 1);
                        choices[i].clone()
                    }
                }
            })
            .collect()
    }

    /// The GP features of a point (see the module doc).
    pub fn encode(&self, point: &[Value]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.features());
        for (p, v) in self.params.iter().zip(point) {
            match &p.domain {
                Domain::Float { low, high, log } => {
                    out.push(scale(v.as_f64().unwrap_or(*low), *low, *high, *log));
                }
                Domain::Int { low, high, log } => {
                    let x = v.as_f64().unwrap_or(*low as f64);
                    out.push(scale(x, *low as f64, *high as f64, *log));
                }
                Domain::Choice(choices) => {
                    out.extend(choices.iter().map(|c| f64::from(u8::from(c == v))));
                }
            }
        }
        out
    }

    /// The point a mapping from parameter name to value names (an `enqueue` entry):
    /// every parameter must be given, with a value in its range; errors name the
    /// parameter.
    pub fn point_of(&self, named: &serde_json::Map<String, Value>) -> Result<Point, String> {
        if let Some(unknown) = named
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "`{unknown}` is not a parameter of `space` (it has {})",
                known.join(", ")
            ));
        }
        self.params
            .iter()
            .map(|p| {
                let value = named
                    .get(&p.name)
                    .ok_or_else(|| format!("`{}` is missing: give every parameter", p.name))?;
                // Stored as sampled points are: an integer written `8.0` is 8, a float
                // written `1` is 1.0.
                let value = match (&p.domain, value.as_f64()) {
                    (Domain::Int { .. }, Some(x)) if x.fract() == 0.0 => Value::from(x as i64),
                    (Domain::Float { .. }, Some(x)) => Value::from(x),
                    _ => value.clone(),
                };
                if self.contains_value(p, &value) {
                    Ok(value)
                } else {
                    Err(format!(
                        "`{}: {value}` is outside its range ({})",
                        p.name,
                        p.domain.describe()
                    ))
                }
            })
            .collect()
    }

    fn contains_value(&self, p: &Param, v: &Value) -> bool {
        match &p.domain {
            Domain::Float { low, high, .. } => v
                .as_f64()
                .is_some_and(|x| x >= *low - 1e-12 * low.abs() && x <= *high + 1e-12 * high.abs()),
            Domain::Int { low, high, .. } => {
                v.as_i64().is_some_and(|x| (*low..=*high).contains(&x))
            }
            Domain::Choice(choices) => choices.contains(v),
        }
    }

    /// Whether `point` holds a valid value for every parameter (used on points read back
    /// from a trial store, which a person may have edited).
    pub fn contains(&self, point: &[Value]) -> bool {
        point.len() == self.params.len()
            && self
                .params
                .iter()
                .zip(point)
                .all(|(p, v)| self.contains_value(p, v))
    }

    /// Points one move away from `point` in parameter `index`: a float moved by `step`
    /// (in unit scale) either way, an integer by one and by `step` of its range either way,
    /// a categorical switched to each other choice. Local refinement searches these, so it
    /// stays on the valid (discrete) set.
    pub fn neighbours(&self, point: &[Value], index: usize, step: f64) -> Vec<Point> {
        let p = &self.params[index];
        let mut out = Vec::new();
        let mut with = |v: Value| {
            if v != point[index] {
                let mut q = point.to_vec();
                q[index] = v;
                if !out.contains(&q) {
                    out.push(q);
                }
            }
        };
        match &p.domain {
            Domain::Float { low, high, log } => {
                let u = scale(point[index].as_f64().unwrap_or(*low), *low, *high, *log);
                for d in [-step, step] {
                    let x = unscale((u + d).clamp(0.0, 1.0), *low, *high, *log);
                    with(Value::from(clean(x)));
                }
            }
            Domain::Int { low, high, log } => {
                let v = point[index].as_i64().unwrap_or(*low);
                let u = scale(v as f64, *low as f64, *high as f64, *log);
                let mut moves = vec![v - 1, v + 1];
                for d in [-step, step] {
                    let x = unscale((u + d).clamp(0.0, 1.0), *low as f64, *high as f64, *log);
                    moves.push(x.round() as i64);
                }
                for m in moves {
                    with(Value::from(m.clamp(*low, *high)));
                }
            }
            Domain::Choice(choices) => {
                for c in choices {
                    with(c.clone());
                }
            }
        }
        out
    }

    /// Number of distinct points, when finite and small (`None` when a float is involved or
    /// the count overflows).
    pub fn size(&self) -> Option<u64> {
        self.params.iter().try_fold(1u64, |acc, p| {
            let n = match &p.domain {
                Domain::Float { low, high, .. } if low == high => 1,
                Domain::Float { .. } => return None,
                Domain::Int { low, high, .. } => (high - low + 1) as u64,
                Domain::Choice(c) => c.len() as u64,
            };
            acc.checked_mul(n)
        })
    }
}

/// Sets `point`'s values into a nested mapping by their dotted names
/// (`lora.rank: 8` -> `{lora: {rank: 8}}`), over `base`.
pub fn nest(space: &Space, point: &[Value], base: &mut Value) {
    for (p, v) in space.params.iter().zip(point) {
        set_dotted(base, &p.name, v.clone());
    }
}

/// Sets `value` at a dotted path in a JSON mapping, creating mappings on the way.
pub fn set_dotted(target: &mut Value, path: &str, value: Value) {
    let mut node = target;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// Reads a dotted path (`tuned.exact_match`) from a JSON value.
pub fn get_dotted<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

fn domain(name: &str, raw: RawParam) -> Result<Domain, String> {
    let given = [raw.float.is_some(), raw.int.is_some(), raw.choice.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(format!(
            "space `{name}`: give exactly one of `float: [lo, hi]`, `int: [lo, hi]`, `choice: [...]`"
        ));
    }
    if let Some([low, high]) = raw.float {
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Err(format!(
                "space `{name}`: the range [{low}, {high}] must be finite with low <= high"
            ));
        }
        if raw.log && low <= 0.0 {
            return Err(format!(
                "space `{name}`: `log: true` needs a positive lower bound, not {low}"
            ));
        }
        return Ok(Domain::Float {
            low,
            high,
            log: raw.log,
        });
    }
    if let Some([low, high]) = raw.int {
        if low > high {
            return Err(format!(
                "space `{name}`: the range [{low}, {high}] needs low <= high"
            ));
        }
        if raw.log && low < 1 {
            return Err(format!(
                "space `{name}`: `log: true` needs a lower bound of at least 1, not {low}"
            ));
        }
        return Ok(Domain::Int {
            low,
            high,
            log: raw.log,
        });
    }
    let choices = raw.choice.unwrap_or_default();
    if raw.log {
        return Err(format!(
            "space `{name}`: `log` applies to float and int only"
        ));
    }
    if choices.is_empty() {
        return Err(format!("space `{name}`: `choice` needs at least one value"));
    }
    for (i, c) in choices.iter().enumerate() {
        if c.is_object() || c.is_array() || c.is_null() {
            return Err(format!(
                "space `{name}`: choice {c} must be a string, number or boolean"
            ));
        }
        if choices[..i].contains(c) {
            return Err(format!("space `{name}`: choice {c} is listed twice"));
        }
    }
    Ok(Domain::Choice(choices))
}

fn scale(x: f64, low: f64, high: f64, log: bool) -> f64 {
    if high <= low {
        return 0.5;
    }
    let u = if log {
        (x.ln() - low.ln()) / (high.ln() - low.ln())
    } else {
        (x - low) / (high - low)
    };
    u.clamp(0.0, 1.0)
}

fn unscale(u: f64, low: f64, high: f64, log: bool) -> f64 {
    let x = if log {
        (low.ln() + u * (high.ln() - low.ln())).exp()
    } else {
        low + u * (high - low)
    };
    x.clamp(low, high)
}

/// Rounds to 6 significant digits: a trial's parameters are shown, stored and templated
/// into commands, and `3.1622776601683795e-4` helps no one (the GP loses nothing at 1e-6).
fn clean(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.5e}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space() -> Space {
        Space::from_json(&json!({
            "lr": {"float": [1e-5, 1e-1], "log": true},
            "rank": {"int": [1, 4]},
            "method": {"choice": ["lora", "dora", "full"]},
        }))
        .unwrap()
    }

    #[test]
    fn parses_and_encodes_one_hot_and_log_scale() {
        let s = space();
        assert_eq!(
            s.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["lr", "method", "rank"]
        );
        assert_eq!(s.features(), 5);
        let x = s.encode(&[json!(1e-3), json!("dora"), json!(4)]);
        assert!((x[0] - 0.5).abs() < 1e-12, "1e-3 is half-way in log scale");
        assert_eq!(&x[1..4], &[0.0, 1.0, 0.0]);
        assert_eq!(x[4], 1.0);
    }

    #[test]
    fn unit_coordinates_give_valid_points_with_even_odds() {
        let s = space();
        let mut ranks = [0usize; 4];
        let mut methods = [0usize; 3];
        for i in 0..1200 {
            let u = (i as f64 + 0.5) / 1200.0;
            let p = s.from_unit(&[u, u, u]);
            assert!(s.contains(&p), "{p:?}");
            ranks[(p[2].as_i64().unwrap() - 1) as usize] += 1;
            let m = ["lora", "dora", "full"].iter().position(|m| p[1] == *m);
            methods[m.unwrap()] += 1;
        }
        assert_eq!(ranks, [300; 4]);
        assert_eq!(methods, [400; 3]);
        assert_eq!(s.from_unit(&[0.0, 0.0, 0.0])[0], json!(1e-5));
        assert_eq!(s.from_unit(&[1.0, 1.0, 1.0])[0], json!(1e-1));
    }

    #[test]
    fn neighbours_stay_on_the_discrete_set() {
        let s = space();
        let p = vec![json!(1e-3), json!("lora"), json!(1)];
        let ranks = s.neighbours(&p, 2, 0.5);
        assert!(ranks.iter().all(|q| s.contains(q) && q[2] != json!(1)));
        assert!(ranks.contains(&vec![json!(1e-3), json!("lora"), json!(2)]));
        let methods: Vec<Value> = s
            .neighbours(&p, 1, 0.1)
            .into_iter()
            .map(|q| q[1].clone())
            .collect();
        assert_eq!(methods, [json!("dora"), json!("full")]);
        assert_eq!(s.size(), None);
    }

    #[test]
    fn bad_ranges_are_named() {
        for (raw, want) in [
            (json!({"lr": {"float": [1.0, 0.1]}}), "low <= high"),
            (
                json!({"lr": {"float": [0.0, 0.1], "log": true}}),
                "positive lower bound",
            ),
            (json!({"r": {"int": [0, 8], "log": true}}), "at least 1"),
            (json!({"m": {"choice": []}}), "at least one value"),
            (json!({"m": {"choice": ["a", "a"]}}), "twice"),
            (
                json!({"m": {"int": [1, 2], "float": [1, 2]}}),
                "exactly one",
            ),
            (json!({"m": {"flaot": [1, 2]}}), "unknown field"),
            (json!({}), "empty"),
        ] {
            let err = Space::from_json(&raw).unwrap_err();
            assert!(err.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn dotted_paths_nest() {
        let s = Space::from_json(&json!({"lora.rank": {"int": [1, 8]}, "iters": {"int": [1, 9]}}))
            .unwrap();
        let mut base = json!({"lora": {"alpha": 16}});
        nest(&s, &[json!(9), json!(4)], &mut base);
        assert_eq!(base, json!({"lora": {"alpha": 16, "rank": 4}, "iters": 9}));
        assert_eq!(get_dotted(&base, "lora.rank"), Some(&json!(4)));
        assert_eq!(get_dotted(&base, "lora.nope"), None);
    }

    #[test]
    fn a_named_point_needs_every_parameter_in_its_range() {
        let space = Space::from_json(&json!({
            "lr": {"float": [1e-5, 1e-2], "log": true},
            "lora.rank": {"int": [2, 32]},
            "opt": {"choice": ["adam", "sgd"]},
        }))
        .unwrap();
        let named = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            space
                .point_of(&named(json!({"lr": 2e-4, "lora.rank": 8.0, "opt": "adam"})))
                .unwrap(),
            vec![json!(8), json!(2e-4), json!("adam")]
        );
        let err = |v: Value| space.point_of(&named(v)).unwrap_err();
        assert!(err(json!({"lr": 2e-4, "lora.rank": 8})).contains("`opt` is missing"));
        assert!(
            err(json!({"lr": 2e-4, "lora.rank": 8, "opt": "adam", "rank": 8}))
                .contains("`rank` is not a parameter of `space` (it has lora.rank, lr, opt)")
        );
        assert!(
            err(json!({"lr": 1.0, "lora.rank": 8, "opt": "adam"}))
                .contains("`lr: 1.0` is outside its range (a number in [0.00001, 0.01])")
        );
        assert!(err(json!({"lr": 2e-4, "lora.rank": 8.5, "opt": "adam"})).contains("an integer"));
        assert!(err(json!({"lr": 2e-4, "lora.rank": 8, "opt": "lion"})).contains("one of"));
    }
}
