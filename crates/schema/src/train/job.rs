//! A train stage's `with:` (or a `pipe train --config` file): the job keys beside the
//! trainer options, as written ([`TrainWith`]) and checked ([`TrainSpec`]).

use super::options::{TrainConfig, TrainOptionsAuto};
use crate::{Auto, FieldError, from_value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a run's examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainInputs {
    /// Data files, tokenized when the run starts.
    Files {
        /// Training data.
        train_data: String,
        /// Validation data.
        valid_data: Option<String>,
    },
    /// A tokenize stage's out folder (`train.tokens`, `valid.tokens`).
    Tokens(String),
}

/// The job keys of a train stage's `with:` (everything else is a [`TrainOptions`] key).
pub const JOB_KEYS: [&str; 6] = [
    "model",
    "train_data",
    "valid_data",
    "tokens",
    "out_dir",
    "params_file",
];

/// A train stage's `with:` (or a `pipe train --config` file), as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainWith {
    /// Known model id, GGUF file, Hugging Face directory or hub repo id.
    pub model: Option<String>,
    /// Training data file.
    pub train_data: Option<String>,
    /// Validation data file.
    pub valid_data: Option<String>,
    /// A tokenize stage's out folder, instead of the data files.
    pub tokens: Option<String>,
    /// Where the adapters, checkpoint, step log and metrics go.
    pub out_dir: Option<String>,
    /// A YAML file of options merged over these when the stage runs (e.g. a tune stage's
    /// `best.yaml`).
    pub params_file: Option<String>,
    /// Every trainer option.
    pub options: TrainOptionsAuto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobKeys {
    model: Option<String>,
    train_data: Option<String>,
    valid_data: Option<String>,
    tokens: Option<String>,
    out_dir: Option<String>,
    params_file: Option<String>,
}

impl TrainWith {
    /// Reads `with:` (a JSON value; YAML is converted first). Unknown keys are errors at
    /// their own path, with the job keys and the options both counted as known.
    pub fn from_value(with: &Value) -> Result<Self, FieldError> {
        let empty = serde_json::Map::new();
        let map = match with {
            Value::Null => &empty,
            Value::Object(m) => m,
            _ => {
                return Err(FieldError::at("", "must be a mapping of training options"));
            }
        };
        let (job, options): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
            .clone()
            .into_iter()
            .partition(|(k, _)| JOB_KEYS.contains(&k.as_str()));
        let job: JobKeys = from_value(&Value::Object(job))?;
        let options: TrainOptionsAuto = from_value(&Value::Object(options)).map_err(|mut e| {
            if e.path.len() == 1 && !e.expected.is_empty() {
                e.expected.extend(JOB_KEYS.iter().map(|k| (*k).to_owned()));
            }
            e
        })?;
        Ok(Self {
            model: job.model,
            train_data: job.train_data,
            valid_data: job.valid_data,
            tokens: job.tokens,
            out_dir: job.out_dir,
            params_file: job.params_file,
            options,
        })
    }

    /// Checks every value and gives the spec. With a `params_file`, the file is read when
    /// the stage runs, so keys it may supply are not required yet.
    pub fn resolve(self) -> Result<TrainSpec, FieldError> {
        let deferred = self.params_file.is_some();
        self.options.validate()?;
        let model = match self.model {
            Some(m) if !m.trim().is_empty() => m,
            _ => {
                return Err(FieldError::at(
                    "model",
                    "is missing: name a model id, a GGUF file or a model directory",
                ));
            }
        };
        let inputs = match (self.tokens, self.train_data, self.valid_data) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(FieldError::at(
                    "tokens",
                    "give either `tokens` (a tokenize stage's out) or `train_data`/`valid_data`, not both",
                ));
            }
            (Some(dir), None, None) => TrainInputs::Tokens(dir),
            (None, Some(train_data), valid_data) => TrainInputs::Files {
                train_data,
                valid_data,
            },
            (None, None, _) if deferred => TrainInputs::Files {
                train_data: String::new(),
                valid_data: None,
            },
            (None, None, _) => {
                return Err(FieldError::at(
                    "train_data",
                    "is missing: give `train_data` (a JSONL/CSV/TSV file) or `tokens` (a tokenize stage's out)",
                ));
            }
        };
        let out_dir = match self.out_dir {
            Some(o) if !o.trim().is_empty() => o,
            _ => {
                return Err(FieldError::at(
                    "out_dir",
                    "is missing: where should the adapter go?",
                ));
            }
        };
        Ok(TrainSpec {
            model,
            inputs,
            out_dir,
            params_file: self.params_file,
            options: self.options,
        })
    }

    /// [`Self::from_value`] then [`Self::resolve`].
    pub fn parse(with: &Value) -> Result<TrainSpec, FieldError> {
        Self::from_value(with)?.resolve()
    }
}

impl JsonSchema for TrainWith {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TrainWith".into()
    }

    /// The trainer options and the job keys in one mapping, as written.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TrainOptionsAuto::json_schema(generator);
        let path = |what: &str| serde_json::json!({"type": "string", "description": what});
        if let Some(Value::Object(props)) = schema.get_mut("properties") {
            props.insert(
                "model".into(),
                path("Known model id, GGUF file, Hugging Face directory or hub repo id"),
            );
            props.insert("train_data".into(), path("Training data (JSONL/CSV/TSV)"));
            props.insert("valid_data".into(), path("Validation data"));
            props.insert(
                "tokens".into(),
                path("A tokenize stage's out folder, instead of the data files"),
            );
            props.insert(
                "out_dir".into(),
                path("Where the adapter, checkpoint, step log and metrics go"),
            );
            props.insert(
                "params_file".into(),
                path("A YAML file of options merged over these when the stage runs"),
            );
        }
        schema.insert("required".into(), serde_json::json!(["model", "out_dir"]));
        schema.insert("title".into(), "train".into());
        schema.insert(
            "description".into(),
            "A training job: the model, the data, the out folder and every trainer option".into(),
        );
        schema
    }
}

/// A checked training job: what a train stage's fingerprint hashes and its process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The base model.
    pub model: String,
    /// The examples.
    pub inputs: TrainInputs,
    /// The out folder, relative to the workspace.
    pub out_dir: String,
    /// Options merged over these when the stage runs.
    pub params_file: Option<String>,
    /// The options; `auto` values are chosen when the stage runs.
    pub options: TrainOptionsAuto,
}

impl TrainSpec {
    /// The trainer's options once `auto` values are chosen: `rank` and `batch_size` are
    /// used where the spec says `auto` and ignored otherwise.
    /// A chosen batch is split by the memory probe (`micro_batch: auto`).
    pub fn config(&self, rank: i32, batch_size: usize) -> TrainConfig {
        let rank = self.options.lora.rank.value().unwrap_or(rank);
        let mut config = match self.options.batch_size {
            Auto::Value(batch) => self.options.clone().with_sizes(batch, rank),
            Auto::Auto => {
                let mut config = self.options.clone().with_sizes(batch_size, rank);
                config.micro_batch = Some(Auto::Auto);
                config
            }
        };
        config.lora.rank = rank;
        config
    }

    /// The spec with a params file's options merged over its own (the file wins, mapping
    /// by mapping), checked again: `file` is the file's content as JSON.
    pub fn with_params(&self, file: &Value) -> Result<TrainSpec, FieldError> {
        let mut with = serde_json::to_value(&self.options).expect("options serialize");
        let map = with.as_object_mut().expect("options are a mapping");
        map.insert("model".into(), self.model.clone().into());
        map.insert("out_dir".into(), self.out_dir.clone().into());
        match &self.inputs {
            TrainInputs::Tokens(dir) => {
                map.insert("tokens".into(), dir.clone().into());
            }
            TrainInputs::Files {
                train_data,
                valid_data,
            } => {
                if !train_data.is_empty() {
                    map.insert("train_data".into(), train_data.clone().into());
                }
                if let Some(v) = valid_data {
                    map.insert("valid_data".into(), v.clone().into());
                }
            }
        }
        if file.get("tokens").is_some() {
            map.remove("train_data");
            map.remove("valid_data");
        }
        overlay(&mut with, file.clone());
        TrainWith::parse(&with)
    }

    /// The trainer's options when nothing is `auto`.
    pub fn fixed_config(&self) -> Option<TrainConfig> {
        let batch = self.options.batch_size.value()?;
        let rank = self.options.lora.rank.value()?;
        Some(self.options.clone().with_sizes(batch, rank))
    }

    /// The paths the stage reads (data, tokens, params file).
    pub fn deps(&self) -> Vec<String> {
        let mut deps = match &self.inputs {
            TrainInputs::Files {
                train_data,
                valid_data,
            } => std::iter::once(train_data.clone())
                .filter(|p| !p.is_empty())
                .chain(valid_data.clone())
                .collect(),
            TrainInputs::Tokens(dir) => vec![dir.clone()],
        };
        deps.extend(self.params_file.clone());
        deps
    }
}

/// Merges `over` into `base`, mapping by mapping; `over` wins elsewhere.
fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}
