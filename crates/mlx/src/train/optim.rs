//! AdamW with bias correction, and clipping by global gradient norm.
//!
//! mlx-rs's AdamW (like mlx-lm's) leaves out Adam's bias correction, which makes the first
//! steps far smaller than the learning rate says. This one follows Loshchilov & Hutter
//! (decoupled weight decay, <https://arxiv.org/abs/1711.05101>) as PyTorch implements it,
//! so a learning rate means the same here as in PEFT recipes. Its state (moments and step
//! count) saves to and loads from safetensors, so `--resume` continues exactly.

use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::{Array, array};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use pipe_schema::train::AdamWConfig;

/// The optimizer and its state.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    moments: BTreeMap<String, (Array, Array)>,
}

/// An optimizer state file that does not fit this optimizer.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct StateError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub message: String,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Applies one step to every parameter of `model` that has a gradient in `grads`
    /// (the trainable ones, from `nn::value_and_grad`).
    pub fn update<M: ModuleParameters>(
        &mut self,
        model: &mut M,
        grads: &FlattenedModuleParam,
        lr: f32,
    ) -> Result<(), Exception> {
        let mut params = model.parameters_mut().flatten();
        self.apply(&mut params, grads, lr)
    }

    /// Applies one step to `params` from `grads`, matched by name.
    pub fn apply(
        &mut self,
        params: &mut HashMap<std::rc::Rc<str>, &mut Array>,
        grads: &FlattenedModuleParam,
        lr: f32,
    ) -> Result<(), Exception> {
        self.step += 1;
        let (b1, b2) = self.config.betas;
        let t = self.step as i32;
        let correction1 = 1.0 - b1.powi(t);
        let correction2 = 1.0 - b2.powi(t);
        let decay = array!(1.0 - lr * self.config.weight_decay);
        let step_size = array!(lr / correction1);
        let sqrt_c2 = array!(correction2.sqrt());
        let eps = array!(self.config.eps);
        for (name, grad) in grads {
            let Some(param) = params.get_mut(name) else {
                continue;
            };
            let (m, v) = match self.moments.remove(name.as_ref()) {
                Some(mv) => mv,
                None => (
                    mlx_rs::ops::zeros_like(grad)?,
                    mlx_rs::ops::zeros_like(grad)?,
                ),
            };
            let m = m
                .multiply(array!(b1))?
                .add(grad.multiply(array!(1.0 - b1))?)?;
            let v = v
                .multiply(array!(b2))?
                .add(grad.square()?.multiply(array!(1.0 - b2))?)?;
            let denom = v.sqrt()?.divide(&sqrt_c2)?.add(&eps)?;
            let updated = param
                .multiply(&decay)?
                .subtract(m.divide(&denom)?.multiply(&step_size)?)?;
            **param = updated;
            self.moments.insert(name.to_string(), (m, v));
        }
        Ok(())
    }

    /// The arrays to evaluate together with the parameters after a step.
    pub fn state_arrays(&self) -> impl Iterator<Item = &Array> {
        self.moments.values().flat_map(|(m, v)| [m, v])
    }

    /// Saves the state (moments and step count) as safetensors, atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let arrays = self
            .moments
            .iter()
            .flat_map(|(name, (m, v))| [(format!("{name}.m"), m), (format!("{name}.v"), v)]);
        let metadata = HashMap::from([
            ("step".to_owned(), self.step.to_string()),
            ("optimizer".to_owned(), "adamw".to_owned()),
            (
                "config".to_owned(),
                serde_json::to_string(&self.config).unwrap_or_default(),
            ),
        ]);
        super::safetensors::write(path, arrays, &metadata)
    }

    /// Loads state saved by [`AdamW::save`]; the hyperparameters stay as configured now.
    pub fn load(config: AdamWConfig, path: &Path) -> anyhow::Result<Self> {
        let (arrays, metadata) = crate::load::safetensors_header::load_with_metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read optimizer state {}: {e}", path.display()))?;
        let bad = |message: String| StateError {
            path: path.to_owned(),
            message,
        };
        let step = metadata
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no step count in the metadata".into()))?;
        let mut moments = BTreeMap::new();
        for (key, m) in &arrays {
            let Some(name) = key.strip_suffix(".m") else {
                continue;
            };
            let v = arrays
                .get(&format!("{name}.v"))
                .ok_or_else(|| bad(format!("`{name}` has a first moment but no second")))?;
            moments.insert(name.to_owned(), (m.clone(), v.clone()));
        }
        Ok(Self {
            config,
            step,
            moments,
        })
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the scaled
/// gradients and the norm before clipping.
pub fn clip_grad_norm(
    grads: FlattenedModuleParam,
    max_norm: f32,
) -> Result<(FlattenedModuleParam, Array), Exception> {
    // Summed in key order: the map's own order changes from process to process, and a
    // float sum in another order differs in its last bits, so runs with the same seed
    // would not train bit-identical adapters.
    let mut keys: Vec<_> = grads.keys().collect();
    keys.sort_unstable();
    let mut total = array!(0.0f32);
    for key in keys {
        total = total.add(grads[key].square()?.sum(None)?)?;
    }
    let norm = total.sqrt()?;
    // min(1, max_norm / norm) without a host round-trip; the epsilon avoids 0/0.
    let scale = mlx_rs::ops::minimum(
        array!(1.0f32),
        array!(max_norm).divide(norm.add(array!(1e-6f32))?)?,
    )?;
    let clipped = grads
        .into_iter()
        .map(|(k, g)| g.multiply(&scale).map(|g| (k, g)))
        .collect::<Result<_, _>>()?;
    Ok((clipped, norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn params(values: &[f32]) -> Array {
        Array::from_slice(values, &[values.len() as i32])
    }

    /// AdamW in f64 scalars, PyTorch's formulation, as the reference.
    fn reference(p: &mut [f64], grads: &[Vec<f64>], lr: f64, wd: f64) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..p.len() {
                p[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * mh / (vh.sqrt() + eps);
            }
        }
    }

    fn run(opt: &mut AdamW, p: &mut Array, grads: &[Vec<f64>], lr: f32) {
        for g in grads {
            let g32: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            let grads: FlattenedModuleParam = HashMap::from([(Rc::from("w"), params(&g32))]);
            let mut map: HashMap<Rc<str>, &mut Array> = HashMap::from([(Rc::from("w"), &mut *p)]);
            opt.apply(&mut map, &grads, lr).unwrap();
        }
    }

    #[test]
    fn matches_the_reference_including_bias_correction() {
        let grads = vec![
            vec![0.5, -1.0, 2.0],
            vec![0.1, 0.3, -0.2],
            vec![-0.4, 0.0, 1.0],
        ];
        let mut expected = vec![1.0, 2.0, -3.0];
        reference(&mut expected, &grads, 1e-2, 0.1);
        let mut p = params(&[1.0, 2.0, -3.0]);
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        });
        run(&mut opt, &mut p, &grads, 1e-2);
        for (a, b) in p.as_slice::<f32>().iter().zip(&expected) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
        // With bias correction the first step moves each weight by about lr.
        let mut q = params(&[0.0]);
        let mut fresh = AdamW::new(AdamWConfig::default());
        run(&mut fresh, &mut q, &[vec![123.0]], 1e-2);
        assert!((q.as_slice::<f32>()[0] + 1e-2).abs() < 1e-6);
    }

    #[test]
    fn save_and_load_continue_exactly() {
        let grads = vec![
            vec![0.5, -1.0],
            vec![0.1, 0.3],
            vec![-0.4, 2.0],
            vec![1.0, 1.0],
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");

        let mut straight = params(&[1.0, 2.0]);
        let mut opt = AdamW::new(AdamWConfig::default());
        run(&mut opt, &mut straight, &grads, 1e-2);

        let mut resumed = params(&[1.0, 2.0]);
        let mut first = AdamW::new(AdamWConfig::default());
        run(&mut first, &mut resumed, &grads[..2], 1e-2);
        first.save(&path).unwrap();
        let mut second = AdamW::load(AdamWConfig::default(), &path).unwrap();
        assert_eq!(second.steps(), 2);
        run(&mut second, &mut resumed, &grads[2..], 1e-2);
        assert_eq!(resumed.as_slice::<f32>(), straight.as_slice::<f32>());
    }

    #[test]
    fn clipping_scales_to_the_max_norm_only_when_above() {
        let grads: FlattenedModuleParam = HashMap::from([
            (Rc::from("a"), params(&[3.0])),
            (Rc::from("b"), params(&[4.0])),
        ]);
        let (clipped, norm) = clip_grad_norm(grads.clone(), 1.0).unwrap();
        assert!((norm.item_exact::<f32>() - 5.0).abs() < 1e-6);
        assert!((clipped["a"].as_slice::<f32>()[0] - 0.6).abs() < 1e-5);
        assert!((clipped["b"].as_slice::<f32>()[0] - 0.8).abs() < 1e-5);
        let (unclipped, _) = clip_grad_norm(grads, 10.0).unwrap();
        assert!((unclipped["a"].as_slice::<f32>()[0] - 3.0).abs() < 1e-5);
    }
}
