//! LoRA and DoRA adapters, and attaching them to a model's linear layers.
//!
//! LoRA (Hu et al., <https://arxiv.org/abs/2106.09685>): `y = W x + scale · (dropout(x) A) B`
//! with `A: [in, r]` drawn uniform in ±1/√in and `B: [r, out]` zero, so an attached adapter
//! starts as the identity; `scale = alpha / r`. The base `W` stays frozen and may be
//! quantized (QLoRA, Dettmers et al., <https://arxiv.org/abs/2305.14314>).
//!
//! DoRA (Liu et al., <https://arxiv.org/abs/2402.09353>) adds a learned magnitude per output
//! row: `y = m / ‖W + scale·(AB)ᵀ‖ · (W x + scale · (x A) B)`, with the norm detached from the
//! graph as the paper recommends, and `m` initialised to `‖W‖` so it too starts as the
//! identity.
//!
//! An [`Adapter`] is attached to a model's [`Linear`] through [`LinearAdapter`], the one
//! interface the layer knows, as its child module `adapter`. Parameter names therefore
//! follow mlx-lm's layout (`…q_proj.adapter.lora_a`, `lora_b`, `m`), and
//! [`super::adapters`] maps them to mlx-lm's and PEFT's files.

use crate::linear::{Linear, LinearAdapter};
use crate::models::llama::Llama;
use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{ModuleParameters as _, Param};
use mlx_rs::{Array, array, random};
use serde::{Deserialize, Serialize};
use std::any::Any;

pub use pipe_schema::train::{ALL_TARGETS, LoraConfig, Method};

/// A LoRA or DoRA adapter on one linear layer.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Adapter {
    /// `[in, rank]`.
    #[param]
    pub lora_a: Param<Array>,
    /// `[rank, out]`.
    #[param]
    pub lora_b: Param<Array>,
    /// DoRA's magnitude `[out]`; `None` for plain LoRA.
    #[param]
    pub m: Param<Option<Array>>,
    /// `alpha / rank`.
    pub scale: f32,
    /// Dropout probability on the adapter's input.
    pub dropout: f32,
    /// Dropout is active only while training.
    pub training: bool,
}

impl Adapter {
    /// A fresh adapter for a `[out, in]` layer: `A` uniform in ±1/√in from `key`, `B` zero.
    /// `dense_weight` is needed for DoRA's initial magnitude.
    pub fn new(
        out: i32,
        inp: i32,
        spec: &AdapterSpec,
        key: &Array,
        dense_weight: Option<&Array>,
    ) -> Result<Self, Exception> {
        let bound = 1.0 / (inp as f32).sqrt();
        let lora_a = random::uniform::<_, f32>(-bound, bound, &[inp, spec.rank], key)?;
        let lora_b = mlx_rs::ops::zeros::<f32>(&[spec.rank, out])?;
        let m = match (spec.dora, dense_weight) {
            (true, Some(w)) => Some(row_norms(&w.as_dtype(mlx_rs::Dtype::Float32)?)?),
            (true, None) => {
                return Err(Exception::custom(
                    "DoRA needs the base weight to initialise",
                ));
            }
            (false, _) => None,
        };
        Ok(Self {
            lora_a: Param::new(lora_a),
            lora_b: Param::new(lora_b),
            m: Param::new(m),
            scale: spec.scale,
            dropout: spec.dropout,
            training: false,
        })
    }

    /// The rank.
    pub fn rank(&self) -> i32 {
        self.lora_a.shape()[1]
    }

    /// The LoRA or DoRA adapter attached to `linear`, if it has one.
    pub fn of_mut(linear: &mut Linear) -> Option<&mut Adapter> {
        let adapter: &mut dyn Any = linear.adapter.as_deref_mut()?;
        adapter.downcast_mut()
    }
}

impl LinearAdapter for Adapter {
    /// Adds the adapter to the base product `y = x Wᵀ` (bias not yet added).
    fn adapt(&self, base: &Linear, x: &Array, y: Array) -> Result<Array, Exception> {
        let input = if self.training && self.dropout > 0.0 {
            let p = array!(1.0 - self.dropout);
            let keep = random::bernoulli(&p, x.shape(), None)?;
            x.multiply(keep.as_dtype(x.dtype())?)?
                .multiply(array!(1.0 / (1.0 - self.dropout)))?
        } else {
            x.clone()
        };
        // The adapter trains in float32; its contribution joins the base product in the
        // base's dtype (bfloat16 on a GPU), as mlx-lm's LoRALinear does, so activations stay
        // in the compute dtype.
        let low_rank = input
            .matmul(&*self.lora_a)?
            .matmul(&*self.lora_b)?
            .multiply(array!(self.scale))?
            .as_dtype(y.dtype())?;
        let y = y.add(&low_rank)?;
        match &self.m.value {
            None => Ok(y),
            Some(m) => {
                let w = base.dense_weight()?.as_dtype(mlx_rs::Dtype::Float32)?;
                let delta = self
                    .lora_a
                    .matmul(&*self.lora_b)?
                    .t()
                    .multiply(array!(self.scale))?;
                let norm = mlx_rs::stop_gradient(row_norms(&w.add(&delta)?)?)?;
                y.multiply(m.divide(&norm)?.as_dtype(y.dtype())?)
            }
        }
    }

    /// The weight change this adapter makes, `[out, in]`, for fusing.
    fn delta(&self, dense_weight: &Array) -> Result<Array, Exception> {
        let low_rank = self
            .lora_a
            .matmul(&*self.lora_b)?
            .t()
            .multiply(array!(self.scale))?;
        match &self.m.value {
            None => Ok(low_rank),
            Some(m) => {
                let w = dense_weight.as_dtype(mlx_rs::Dtype::Float32)?;
                let adapted = w.add(&low_rank)?;
                let norm = row_norms(&adapted)?;
                let fused = adapted.multiply(m.divide(&norm)?.reshape(&[-1, 1])?)?;
                fused.subtract(&w)
            }
        }
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn boxed_clone(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}

fn row_norms(w: &Array) -> Result<Array, Exception> {
    w.square()?.sum_axis(1, false)?.sqrt()
}

/// What [`attach`] builds, resolved from the user's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterSpec {
    /// Rank `r`.
    pub rank: i32,
    /// `alpha / r`.
    pub scale: f32,
    /// Dropout on the adapter input.
    pub dropout: f32,
    /// Adapt only the last this-many blocks (`None`: all).
    pub num_layers: Option<i32>,
    /// Projection names to adapt (see [`ALL_TARGETS`]).
    pub targets: Vec<String>,
    /// DoRA instead of LoRA.
    pub dora: bool,
}

/// What [`attach`] builds from the user's options (already checked when the config was
/// resolved: see `pipe_schema::train::TrainOptions::validate`).
pub fn adapter_spec(lora: &LoraConfig, method: Method) -> AdapterSpec {
    AdapterSpec {
        rank: lora.rank,
        scale: lora.scale(),
        dropout: lora.dropout,
        num_layers: lora.num_layers,
        targets: lora.targets.clone(),
        dora: method == Method::Dora,
    }
}

/// The linear layers of block `layer` by name.
pub fn block_linears(model: &mut Llama, layer: usize) -> Vec<(&'static str, &mut Linear)> {
    let block = &mut model.model.layers[layer];
    let attn = &mut block.self_attn;
    let mlp = &mut block.mlp;
    vec![
        ("q_proj", &mut attn.q_proj),
        ("k_proj", &mut attn.k_proj),
        ("v_proj", &mut attn.v_proj),
        ("o_proj", &mut attn.o_proj),
        ("gate_proj", &mut mlp.gate_proj),
        ("up_proj", &mut mlp.up_proj),
        ("down_proj", &mut mlp.down_proj),
    ]
}

/// Freezes the whole model and attaches fresh adapters to the targeted projections of the
/// last `num_layers` blocks. Returns how many adapters were attached. Deterministic in
/// `seed`.
pub fn attach(model: &mut Llama, spec: &AdapterSpec, seed: u64) -> Result<usize, Exception> {
    model.freeze_parameters(true);
    let n = model.model.layers.len();
    let first = n.saturating_sub(spec.num_layers.map_or(n, |k| k.max(0) as usize));
    let mut key = random::key(seed)?;
    let mut attached = 0;
    for layer in first..n {
        for (name, linear) in block_linears(model, layer) {
            if !spec.targets.iter().any(|t| t == name) {
                continue;
            }
            let (sub, rest) = random::split(&key, 2)?;
            key = rest;
            let (out, inp) = linear.shape();
            let dense = if spec.dora {
                Some(linear.dense_weight()?)
            } else {
                None
            };
            let mut adapter = Adapter::new(out, inp, spec, &sub, dense.as_ref())?;
            adapter.unfreeze_parameters(true);
            linear.adapter = Some(Box::new(adapter));
            attached += 1;
        }
    }
    Ok(attached)
}

/// Turns adapter dropout on or off across the model, and the recomputation of dequantized
/// weights in the backward pass (see [`Linear::training`]).
pub fn set_training(model: &mut Llama, training: bool) {
    // The LM head (or the tied embedding acting as one) is in every backward pass.
    model.model.embed_tokens.training = training;
    if let Some(head) = &mut model.lm_head {
        head.training = training;
    }
    for layer in 0..model.model.layers.len() {
        for (_, linear) in block_linears(model, layer) {
            linear.training = training;
            if let Some(a) = &mut linear.adapter {
                a.set_training(training);
            }
        }
    }
}

#[cfg(test)]
mod tests;
