//! A linear layer whose weight is either a plain float matrix or an MLX affine-quantized
//! triple (packed `weight`, `scales`, `biases`), with the same parameter names that
//! mlx-community checkpoints use (`q_proj.weight`, `q_proj.scales`, `q_proj.biases`).
//!
//! Why not `mlx_rs::nn::QuantizedLinear`: it nests the packed weight as `inner.weight`,
//! which matches no checkpoint on disk. One struct with optional quantization fields keeps
//! the checkpoint key names and lets a loader decide per tensor.
//!
//! How a quantized layer multiplies depends on the device. On Metal, MLX's
//! `quantized_matmul` is the fast path. On the CPU backend it runs at about 3 GFLOP/s,
//! 30–80x slower than dequantizing the weight per call and using a float32 BLAS matmul
//! (measured on a 2-core x86 CPU with MLX 0.32.2; `pipe doctor` prints this machine's
//! float32 figure, BENCHMARKS.md the QLoRA step times), so there we dequantize per call:
//! the float copy lives only for the duration of the matmul, which keeps a 4-bit base
//! model's memory saving (QLoRA).
//!
//! The same type serves as the token embedding ([`Linear::embed`] gathers rows, then
//! dequantizes only those), so a tied LM head is just [`Linear::forward`] on it.
//!
//! A layer may carry an adapter that training attaches beside its frozen weight (LoRA or
//! DoRA, in `train::lora`). The layer sees it only through [`LinearAdapter`], so the model
//! code depends on no training type; the adapter is the child module `adapter`, which keeps
//! its parameters under the layer's names (`q_proj.adapter.lora_a`).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, ModuleParameters as _, Param};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{dequantize, quantized_matmul};
use mlx_rs::{Array, Device, DeviceType, Dtype};
use std::any::Any;
use std::sync::OnceLock;

/// MLX affine quantization parameters of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuantSpec {
    /// Elements that share one scale and bias (32 or 64 in practice).
    pub group_size: i32,
    /// Bits per element (4 or 8 in practice).
    pub bits: i32,
}

/// How quantized layers multiply: MLX's `quantized_matmul`, or dequantize + float matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKernel {
    /// `quantized_matmul` (fast on Metal).
    QuantizedMatmul,
    /// Dequantize the weight per call and use a float matmul (fast on the CPU backend).
    Dequantize,
}

impl QuantKernel {
    /// The right kernel for MLX's default device: see the module documentation.
    pub fn for_default_device() -> Self {
        if default_device_is_gpu() {
            QuantKernel::QuantizedMatmul
        } else {
            QuantKernel::Dequantize
        }
    }
}

/// Whether MLX's default device is the GPU (Metal), looked up once.
fn default_device_is_gpu() -> bool {
    static GPU: OnceLock<bool> = OnceLock::new();
    *GPU.get_or_init(|| {
        Device::try_default()
            .ok()
            .and_then(|d| d.get_type().ok())
            .is_some_and(|t| matches!(t, DeviceType::Gpu))
    })
}

/// A trained change to a layer's product, kept beside its frozen weight (see the module
/// documentation). `Any` lets the code that attached an adapter get its own type back;
/// `Send` keeps a model movable between threads, as it is without adapters.
pub trait LinearAdapter: mlx_rs::module::ModuleParameters + std::fmt::Debug + Any + Send {
    /// The adapted product, from `base`'s product `y = x Wᵀ` before its bias is added
    /// (DoRA rescales the product, so the bias must come after).
    fn adapt(&self, base: &Linear, x: &Array, y: Array) -> Result<Array, Exception>;

    /// The change `[out, in]` fusing adds to the weight, given the weight in float32.
    fn delta(&self, dense_weight: &Array) -> Result<Array, Exception>;

    /// Turns training-only behaviour (dropout) on or off.
    fn set_training(&mut self, training: bool);

    /// A boxed copy (a layer, and so a model, can be cloned).
    fn boxed_clone(&self) -> Box<dyn LinearAdapter>;
}

impl Clone for Box<dyn LinearAdapter> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// `y = x Wᵀ + b` with `W` plain or affine-quantized. See the module documentation.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Linear {
    /// The weight `[out, in]`, or when quantized the packed `uint32` `[out, in·bits/32]`.
    #[param]
    pub weight: Param<Array>,
    /// The optional bias `[out]` (Qwen2's q/k/v projections have one).
    #[param]
    pub bias: Param<Option<Array>>,
    /// Per-group scales `[out, in/group_size]` when quantized.
    #[param]
    pub scales: Param<Option<Array>>,
    /// Per-group offsets `[out, in/group_size]` when quantized.
    #[param]
    pub biases: Param<Option<Array>>,
    /// Quantization parameters, `None` for a plain layer.
    pub quant: Option<QuantSpec>,
    /// The dtype of the dequantized weight (the compute dtype).
    pub compute_dtype: Dtype,
    /// An adapter trained beside the (frozen) weight, when attached.
    #[param]
    pub adapter: Option<Box<dyn LinearAdapter>>,
    /// Set while training: a quantized weight dequantized for a float matmul is recomputed
    /// in the backward pass instead of being kept alive from the forward (see
    /// [`Linear::forward_with`]).
    pub training: bool,
}

impl Linear {
    /// A plain layer from a `[out, in]` weight.
    pub fn plain(weight: Array, bias: Option<Array>) -> Self {
        let compute_dtype = weight.dtype();
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Param::new(None),
            biases: Param::new(None),
            quant: None,
            compute_dtype,
            adapter: None,
            training: false,
        }
    }

    /// A quantized layer from an MLX affine triple. Its parameters start frozen: packed
    /// integers cannot take gradients (QLoRA trains adapters beside them).
    pub fn quantized(
        weight: Array,
        scales: Array,
        biases: Array,
        bias: Option<Array>,
        spec: QuantSpec,
    ) -> Self {
        let compute_dtype = scales.dtype();
        let mut layer = Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Param::new(Some(scales)),
            biases: Param::new(Some(biases)),
            quant: Some(spec),
            compute_dtype,
            adapter: None,
            training: false,
        };
        layer.freeze_parameters(true);
        layer
    }

    /// Quantizes a plain layer (for tests and for `--quantize` style loading).
    pub fn quantize(&self, spec: QuantSpec) -> Result<Self, Exception> {
        let (w, s, b) = mlx_rs::ops::quantize(&*self.weight, spec.group_size, spec.bits)?;
        Ok(Self::quantized(w, s, b, self.bias.value.clone(), spec))
    }

    /// Whether the weight is quantized.
    pub fn is_quantized(&self) -> bool {
        self.quant.is_some()
    }

    /// `(out, in)` in unpacked elements.
    pub fn shape(&self) -> (i32, i32) {
        let s = self.weight.shape();
        match self.quant {
            Some(q) => (s[0], s[1] * 32 / q.bits),
            None => (s[0], s[1]),
        }
    }

    /// The weight as a float matrix in the compute dtype (dequantized when needed).
    pub fn dense_weight(&self) -> Result<Array, Exception> {
        match (self.quant, &self.scales.value, &self.biases.value) {
            (Some(q), Some(s), Some(b)) => {
                dequantize(&*self.weight, s, b, q.group_size, q.bits)?.as_dtype(self.compute_dtype)
            }
            _ => Ok(self.weight.value.clone()),
        }
    }

    /// A plain copy with the weight dequantized to `dtype` (load-time dequantization).
    pub fn to_plain(&self, dtype: Dtype) -> Result<Self, Exception> {
        let w = self.dense_weight()?.as_dtype(dtype)?;
        let bias = match &self.bias.value {
            Some(b) => Some(b.as_dtype(dtype)?),
            None => None,
        };
        Ok(Self::plain(w, bias))
    }

    /// Casts the float parts (plain weight, bias, scales, biases) to `dtype`; packed
    /// integers stay as they are.
    pub fn cast(&mut self, dtype: Dtype) -> Result<(), Exception> {
        if self.quant.is_none() {
            self.weight.value = self.weight.as_dtype(dtype)?;
        }
        for p in [
            &mut self.bias.value,
            &mut self.scales.value,
            &mut self.biases.value,
        ]
        .into_iter()
        .flatten()
        {
            *p = p.as_dtype(dtype)?;
        }
        self.compute_dtype = dtype;
        Ok(())
    }

    /// Embedding lookup: rows `ids` of the weight, dequantizing only the gathered rows.
    pub fn embed(&self, ids: &Array) -> Result<Array, Exception> {
        let rows = self.weight.take_axis(ids, 0)?;
        match (self.quant, &self.scales.value, &self.biases.value) {
            (Some(q), Some(s), Some(b)) => dequantize(
                &rows,
                s.take_axis(ids, 0)?,
                &b.take_axis(ids, 0)?,
                q.group_size,
                q.bits,
            )?
            .as_dtype(self.compute_dtype),
            _ => Ok(rows),
        }
    }

    /// The product with an explicit kernel choice (tests compare the two).
    pub fn forward_with(&self, x: &Array, kernel: QuantKernel) -> Result<Array, Exception> {
        let rows: i32 = x.shape()[..x.ndim().saturating_sub(1)].iter().product();
        // Dequantizing a whole weight to multiply a few rows costs far more than the
        // product (decoding one token: about 4 ms per SmolLM2 projection against 0.8 ms for
        // `quantized_matmul`), so below a few rows the quantized kernel wins on the CPU too.
        let small = rows <= SMALL_ROWS;
        let y = match (self.quant, &self.scales.value, &self.biases.value) {
            (Some(q), Some(s), Some(b)) if kernel == QuantKernel::QuantizedMatmul || small => {
                quantized_matmul(x, &*self.weight, s, b, true, q.group_size, q.bits)?
            }
            (Some(q), Some(s), Some(b)) if self.training => {
                recomputed_dequantized_matmul(x, q, [&self.weight, s, b], self.compute_dtype)?
            }
            (Some(_), Some(_), Some(_)) => dense_matmul(x, &self.dense_weight()?, rows)?,
            _ => dense_matmul(x, &self.weight, rows)?,
        };
        // The adapter acts on the product before the bias, as DoRA's rescaling requires.
        let y = match &self.adapter {
            Some(adapter) => adapter.adapt(self, x, y)?,
            None => y,
        };
        match &self.bias.value {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

/// `x Wᵀ` with `W` dequantized inside a checkpointed function: a gradient through it
/// recomputes the dequantization instead of keeping the float weight from the forward.
/// Without this, every adapted block's float weights stay alive until the backward pass
/// reaches them, and a 4-bit base costs as much memory as a float one (QLoRA's point).
/// The float copy of one weight lives only while its product (or its input gradient) is
/// computed; the extra cost is one dequantization per layer in the backward.
fn recomputed_dequantized_matmul(
    x: &Array,
    q: QuantSpec,
    [w, s, b]: [&Array; 3],
    dtype: Dtype,
) -> Result<Array, Exception> {
    let (w, s, b) = (w.clone(), s.clone(), b.clone());
    let mut out = crate::checkpoint::checkpoint(std::slice::from_ref(x), move |args| {
        let dense = dequantize(&w, &s, &b, q.group_size, q.bits)?.as_dtype(dtype)?;
        Ok(vec![args[0].matmul(dense.t())?])
    })?;
    out.pop()
        .ok_or_else(|| Exception::custom("checkpointed matmul returned nothing"))
}

/// Largest output width computed as `W x` in one product for a single row (see
/// [`dense_matmul`]).
const MATVEC_MAX_OUT: i32 = 16_384;

/// At most this many rows count as "a few" (see [`Linear::forward_with`]).
const SMALL_ROWS: i32 = 4;

/// OpenBLAS (x86-64) multiplies `M·N·K ≤ 100³` with its small-matrix kernel, which reads
/// the matrix once; above that, `sgemm` first copies ("packs") the matrix, which for a
/// matrix-vector product doubles the memory traffic.
const SMALL_GEMM_MNK: i32 = 1_000_000;

/// Fewest rows per chunk worth splitting a wide single-row product for (see
/// [`dense_matmul`]); narrower chunks would mean hundreds of ops per product.
const MIN_CHUNK_ROWS: i32 = 512;

/// `x Wᵀ`. For a single row and a projection-sized `W` it is computed as `W x` on a
/// contiguous column, a plain matrix-vector product over `W`'s rows: measured on the CPU
/// backend (2-core EPYC, OpenBLAS) over SmolLM2's 210 projections, 38 ms against 80–100 ms
/// for the transposed form. MLX's CPU backend calls `cblas_sgemm` for every product, never
/// `sgemv`; OpenBLAS then takes its small-matrix kernel up to [`SMALL_GEMM_MNK`].
///
/// A vocabulary-sized `W` (the LM head, 49152×576 for SmolLM2) is far above that limit, so
/// on the CPU a single row is multiplied in row blocks that each stay under it, and the
/// pieces are concatenated (issue #4): the 113 MB matrix is read once instead of packed and
/// read again, in about half the time of either unsplit form (measured on the same machine,
/// MLX 0.32.2, OpenBLAS 0.3.21), and no OpenBLAS worker thread is woken to spin between
/// decode steps. Results agree with `x Wᵀ` to float rounding. On Metal one product is best.
fn dense_matmul(x: &Array, w: &Array, rows: i32) -> Result<Array, Exception> {
    if rows == 1 {
        let (out, inp) = (w.shape()[0], w.shape()[1]);
        let mut out_shape = x.shape().to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = out;
        }
        let column = || x.reshape(&[inp, 1]);
        if out <= MATVEC_MAX_OUT {
            return w.matmul(column()?)?.reshape(&out_shape);
        }
        let chunk = SMALL_GEMM_MNK / inp.max(1);
        if chunk >= MIN_CHUNK_ROWS && !default_device_is_gpu() {
            let column = column()?;
            let pieces = (0..out)
                .step_by(chunk as usize)
                .map(|start| {
                    w.index((start..(start + chunk).min(out), ..))
                        .matmul(&column)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return mlx_rs::ops::concatenate(&pieces, 0)?.reshape(&out_shape);
        }
    }
    x.matmul(w.t())
}

impl Module<&Array> for Linear {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        self.forward_with(x, QuantKernel::for_default_device())
    }

    fn training_mode(&mut self, mode: bool) {
        if let Some(adapter) = &mut self.adapter {
            adapter.set_training(mode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use mlx_rs::random;

    #[test]
    fn quantized_linear_matches_its_dequantized_twin() {
        let key = random::key(7).unwrap();
        let (k1, k2) = random::split(&key, 2).unwrap();
        let w = random::normal::<f32>(&[96, 128], None, None, &k1).unwrap();
        let x = random::normal::<f32>(&[2, 5, 128], None, None, &k2).unwrap();
        for (group_size, bits) in [(32, 4), (64, 4), (32, 8), (64, 8)] {
            let q = Linear::plain(w.clone(), None)
                .quantize(QuantSpec { group_size, bits })
                .unwrap();
            assert_eq!(q.shape(), (96, 128));
            let twin = q.to_plain(Dtype::Float32).unwrap();
            let reference = twin.forward_with(&x, QuantKernel::Dequantize).unwrap();
            for kernel in [QuantKernel::QuantizedMatmul, QuantKernel::Dequantize] {
                let y = q.forward_with(&x, kernel).unwrap();
                assert_eq!(y.shape(), &[2, 5, 96]);
                let d = max_abs_diff(&y, &reference);
                assert!(d < 1e-3, "{kernel:?} g{group_size} b{bits}: {d}");
            }
            // And the quantization error itself is what affine quantization promises.
            let exact = Linear::plain(w.clone(), None)
                .forward_with(&x, QuantKernel::Dequantize)
                .unwrap();
            let err = max_abs_diff(&reference, &exact);
            let bound = if bits == 8 { 0.5 } else { 8.0 };
            assert!(
                err < bound,
                "g{group_size} b{bits}: quantization error {err}"
            );
        }
    }

    #[test]
    fn wide_single_row_products_match_the_transposed_form() {
        let key = random::key(11).unwrap();
        let (k1, k2) = random::split(&key, 2).unwrap();
        // 20000 outputs over 64 inputs: above MATVEC_MAX_OUT, so split into row blocks.
        let w = random::normal::<f32>(&[20_000, 64], None, None, &k1).unwrap();
        let x = random::normal::<f32>(&[1, 1, 64], None, None, &k2).unwrap();
        let y = dense_matmul(&x, &w, 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 20_000]);
        let reference = x.matmul(w.t()).unwrap();
        let d = max_abs_diff(&y, &reference);
        assert!(d < 1e-4, "{d}");
        // A projection-sized weight (one block) agrees too.
        let small = w.index((..300, ..));
        let d = max_abs_diff(
            &dense_matmul(&x, &small, 1).unwrap(),
            &x.matmul(small.t()).unwrap(),
        );
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn quantized_embedding_gathers_dequantized_rows() {
        let key = random::key(3).unwrap();
        let w = random::normal::<f32>(&[10, 64], None, None, &key).unwrap();
        let q = Linear::plain(w, None)
            .quantize(QuantSpec {
                group_size: 32,
                bits: 8,
            })
            .unwrap();
        let ids = Array::from_slice(&[3i32, 7, 3], &[1, 3]);
        let e = q.embed(&ids).unwrap();
        assert_eq!(e.shape(), &[1, 3, 64]);
        let dense = q.dense_weight().unwrap().take_axis(&ids, 0).unwrap();
        assert!(max_abs_diff(&e, &dense) < 1e-6);
    }

    #[test]
    fn parameter_names_match_checkpoint_keys() {
        let w = Array::zeros::<f32>(&[64, 64]).unwrap();
        let q = Linear::plain(w, None)
            .quantize(QuantSpec {
                group_size: 64,
                bits: 4,
            })
            .unwrap();
        let mut names: Vec<String> = q
            .parameters()
            .flatten()
            .keys()
            .map(|k| k.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["biases", "scales", "weight"]);
        assert!(q.trainable_parameters().flatten().is_empty());
    }
}
