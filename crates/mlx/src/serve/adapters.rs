//! Several adapters on one base model, chosen per row of the batch.
//!
//! Every linear layer an adapter touches carries one [`AdapterSlot`] in place of a single
//! adapter. The slot holds each loaded adapter's part for that layer and reads, before
//! every forward pass, which rows belong to which adapter ([`Routing`], set by the engine).
//! A layer computes its base product once for the whole batch and adds each adapter's
//! change only on its rows: `y + Σₐ maskₐ · (adaptₐ(y) − y)`. LoRA's change is a rank-r
//! product, so a batch mixing adapters costs little more than one without.
//!
//! Adapters load onto a pristine copy of the base (sharing its weights) through the same
//! loaders training and `pipe eval` use (mlx-lm and PEFT layouts); their per-layer parts
//! are then moved into the serving model's slots. Removing an adapter hides it from new
//! requests at once; its weights go when no row in flight still uses it.

use crate::linear::{Linear, LinearAdapter};
use crate::models::llama::Llama;
use crate::train::adapters;
use crate::train::lora::block_linears;
use mlx_rs::error::Exception;
use mlx_rs::module::{ModuleParamMut, ModuleParamRef, ModuleParameters};
use mlx_rs::nested::NestedHashMap;
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Which adapters act on which rows in the next forward pass: `(name, mask)`, the mask
/// `[B, 1, 1]` (1 on the adapter's rows), or `None` when the adapter has every row.
#[derive(Debug, Default)]
pub struct Routing {
    active: Mutex<Vec<(Arc<str>, Option<Array>)>>,
}

impl Routing {
    fn set(&self, active: Vec<(Arc<str>, Option<Array>)>) {
        *self.active.lock().unwrap_or_else(PoisonError::into_inner) = active;
    }

    fn get(&self) -> Vec<(Arc<str>, Option<Array>)> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The adapters of one linear layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct AdapterSlot {
    parts: BTreeMap<Arc<str>, Box<dyn LinearAdapter>>,
    routing: Arc<Routing>,
}

impl LinearAdapter for AdapterSlot {
    fn adapt(&self, base: &Linear, x: &Array, y: Array) -> Result<Array, Exception> {
        let mut out = y.clone();
        for (name, mask) in self.routing.get() {
            let Some(part) = self.parts.get(&name) else {
                continue;
            };
            let adapted = part.adapt(base, x, y.clone())?;
            out = match mask {
                None => adapted,
                Some(m) => out.add(adapted.subtract(&y)?.multiply(m.as_dtype(y.dtype())?)?)?,
            };
        }
        Ok(out)
    }

    fn delta(&self, _dense_weight: &Array) -> Result<Array, Exception> {
        Err(Exception::custom(
            "a serving slot holds several adapters; fuse one adapter at a time",
        ))
    }

    fn set_training(&mut self, _training: bool) {}

    fn boxed_clone(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}

/// A serving slot exposes no parameters: nothing trains or saves through it.
impl ModuleParameters for AdapterSlot {
    fn num_parameters(&self) -> usize {
        0
    }

    fn parameters(&self) -> ModuleParamRef<'_> {
        NestedHashMap::new()
    }

    fn parameters_mut(&mut self) -> ModuleParamMut<'_> {
        NestedHashMap::new()
    }

    fn trainable_parameters(&self) -> ModuleParamRef<'_> {
        NestedHashMap::new()
    }

    fn freeze_parameters(&mut self, _recursive: bool) {}

    fn unfreeze_parameters(&mut self, _recursive: bool) {}

    fn all_frozen(&self) -> Option<bool> {
        None
    }

    fn any_frozen(&self) -> Option<bool> {
        None
    }
}

/// Why an adapter could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The name is taken (or reserved).
    #[error("an adapter named `{0}` is already loaded; remove it first or pick another name")]
    Exists(String),
    /// No such adapter.
    #[error("no adapter named `{0}` is loaded")]
    Unknown(String),
    /// The name cannot be used.
    #[error("`{0}` cannot name an adapter (use letters, digits, `-`, `_`, `.`, `/` or `:`)")]
    BadName(String),
    /// The directory could not be loaded.
    #[error("cannot load adapter `{name}` from {path}: {message}")]
    Load {
        /// The name asked for.
        name: String,
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What a `/v1/models` entry or the admin route reports about an adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterInfo {
    /// The name requests use as `model`.
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
}

/// The loaded adapters of a serving model, and the routing their slots read.
#[derive(Debug)]
pub struct Registry {
    pristine: Llama,
    routing: Arc<Routing>,
    loaded: BTreeMap<Arc<str>, AdapterInfo>,
    /// Removed while rows still used them: unloaded once none does.
    retiring: BTreeSet<Arc<str>>,
    reserved: Vec<String>,
}

impl Registry {
    /// A registry for `model` (no adapters yet). `reserved` are the names of the base.
    pub fn new(model: &Llama, reserved: Vec<String>) -> Self {
        Self {
            pristine: model.clone(),
            routing: Arc::new(Routing::default()),
            loaded: BTreeMap::new(),
            retiring: BTreeSet::new(),
            reserved,
        }
    }

    /// The adapter a request names, if loaded (retiring ones take no new requests).
    pub fn lookup(&self, name: &str) -> Option<Arc<str>> {
        self.loaded.get_key_value(name).map(|(k, _)| k.clone())
    }

    /// The loaded adapters.
    pub fn list(&self) -> Vec<AdapterInfo> {
        self.loaded.values().cloned().collect()
    }

    /// Loads the adapter in `dir` (mlx-lm or PEFT layout) under `name` into `model`.
    pub fn add(&mut self, model: &mut Llama, name: &str, dir: &Path) -> Result<(), AdapterError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c));
        if !valid {
            return Err(AdapterError::BadName(name.to_owned()));
        }
        if self.loaded.contains_key(name)
            || self.retiring.contains(name)
            || self.reserved.iter().any(|r| r == name)
        {
            return Err(AdapterError::Exists(name.to_owned()));
        }
        let load_error = |message: String| AdapterError::Load {
            name: name.to_owned(),
            path: dir.to_owned(),
            message,
        };
        let mut scratch = self.pristine.clone();
        let peft = dir.join("adapter_model.safetensors").is_file()
            && !dir.join("adapters.safetensors").is_file();
        if peft {
            adapters::load_peft(&mut scratch, dir).map_err(|e| load_error(format!("{e:#}")))?;
        } else {
            let spec = adapters::load_mlx_lm(&mut scratch, dir)
                .map_err(|e| load_error(format!("{e:#}")))?;
            if spec.is_none() {
                return Err(load_error(
                    "it is a full fine-tune, not an adapter; serve it as the base model".into(),
                ));
            }
        }
        let key: Arc<str> = Arc::from(name);
        let mut parts = 0;
        for layer in 0..scratch.model.layers.len() {
            let theirs = block_linears(&mut scratch, layer);
            let ours = block_linears(model, layer);
            for ((_, from), (_, to)) in theirs.into_iter().zip(ours) {
                let Some(part) = from.adapter.take() else {
                    continue;
                };
                let slot = slot_of(to, &self.routing);
                slot.parts.insert(key.clone(), part);
                parts += 1;
            }
        }
        if parts == 0 {
            return Err(load_error("it adapts no layer of this model".into()));
        }
        self.loaded.insert(
            key,
            AdapterInfo {
                name: name.to_owned(),
                path: dir.to_owned(),
            },
        );
        Ok(())
    }

    /// Stops new requests from using `name`; its weights go once `in_use` no longer names
    /// it (see [`Registry::collect`]).
    pub fn remove(&mut self, name: &str) -> Result<(), AdapterError> {
        let (key, _) = self
            .loaded
            .remove_entry(name)
            .ok_or_else(|| AdapterError::Unknown(name.to_owned()))?;
        self.retiring.insert(key);
        Ok(())
    }

    /// Unloads retiring adapters no live row uses.
    pub fn collect(&mut self, model: &mut Llama, in_use: &BTreeSet<Arc<str>>) {
        let gone: Vec<Arc<str>> = self
            .retiring
            .iter()
            .filter(|n| !in_use.contains(*n))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for layer in 0..model.model.layers.len() {
            for (_, linear) in block_linears(model, layer) {
                if let Some(slot) = linear.adapter.as_mut().and_then(as_slot) {
                    for name in &gone {
                        slot.parts.remove(name);
                    }
                }
            }
        }
        for name in gone {
            self.retiring.remove(&name);
        }
    }

    /// Routes the next forward pass: row `b` uses adapter `rows[b]` (`None`: the base).
    pub fn route(&self, rows: &[Option<Arc<str>>]) {
        let mut names: Vec<&Arc<str>> = rows.iter().flatten().collect();
        names.sort();
        names.dedup();
        let active = names
            .into_iter()
            .map(|name| {
                let all = rows.iter().all(|r| r.as_ref() == Some(name));
                let mask = (!all).then(|| {
                    let m: Vec<f32> = rows
                        .iter()
                        .map(|r| f32::from(u8::from(r.as_ref() == Some(name))))
                        .collect();
                    Array::from_slice(&m, &[m.len() as i32, 1, 1]).as_dtype(Dtype::Float32)
                });
                Ok((name.clone(), mask.transpose()?))
            })
            .collect::<Result<Vec<_>, Exception>>();
        // Building a small host array cannot fail short of memory exhaustion; route
        // nothing rather than something wrong if it does.
        self.routing.set(active.unwrap_or_default());
    }
}

/// The slot of `linear`, installing an empty one first.
fn slot_of<'a>(linear: &'a mut Linear, routing: &Arc<Routing>) -> &'a mut AdapterSlot {
    if linear.adapter.as_mut().and_then(as_slot).is_none() {
        linear.adapter = Some(Box::new(AdapterSlot {
            parts: BTreeMap::new(),
            routing: routing.clone(),
        }));
    }
    linear
        .adapter
        .as_mut()
        .and_then(as_slot)
        .expect("a slot was just installed")
}

fn as_slot(adapter: &mut Box<dyn LinearAdapter>) -> Option<&mut AdapterSlot> {
    let any: &mut dyn std::any::Any = adapter.as_mut();
    any.downcast_mut::<AdapterSlot>()
}
