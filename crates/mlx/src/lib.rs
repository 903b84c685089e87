//! The MLX runtime as pipe uses it: start-up checks, which backend and device run the
//! work, and micro-benchmarks of the operations training depends on; and the model core:
//! architectures, loaders, tokenizers, chat templates, generation and evaluation.
//!
//! [`train`] holds the architecture-independent training parts; [`stages`] the stage kinds
//! that run on MLX (`train`, `evaluate`, `tokenize`). The engine (`pipe-engine`) never
//! depends on this crate: `pipe-mlx` runs these stages in a child process.

pub mod bench;
pub mod chat;
pub mod checkpoint;
pub mod distributed;
pub mod eval;
pub mod exit_guard;
pub mod export;
pub mod generate;
pub mod linear;
#[cfg(target_os = "linux")]
mod linux_shim;
pub mod load;
pub mod models;
pub mod openblas;
pub mod runtime;
pub mod serve;
pub mod stages;
#[cfg(test)]
mod test_support;
pub mod tokenizer;
pub mod train;

#[cfg(test)]
mod tests {
    //! These prove the Linux build layer works: MLX computes, differentiates, and moves
    //! half-precision data across the FFI (the x86 half-type shim in tools/mlx-linux).
    use mlx_rs::{Array, ops::indexing::IndexOp, transforms};

    #[test]
    fn arithmetic_gives_known_values() {
        let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
        let b = Array::from_slice(&[5.0f32, 6.0, 7.0, 8.0], &[2, 2]);
        let product = a.matmul(&b).unwrap();
        assert_eq!(product.as_slice::<f32>(), [19.0, 22.0, 43.0, 50.0]);
        let sum = (&a + &b).sum(None).unwrap();
        assert_eq!(sum.item_exact::<f32>(), 36.0);
        let exp = a.exp().unwrap();
        assert!((exp.as_slice::<f32>()[0] - std::f32::consts::E).abs() < 1e-6);
    }

    #[test]
    fn gradient_of_a_cubic() {
        // d/dx sum(x^3) = 3x^2
        let loss = |x: &Array| -> Result<Array, mlx_rs::error::Exception> { (x * x * x).sum(None) };
        let mut grad = transforms::grad(loss);
        let x = Array::from_slice(&[1.0f32, 2.0, -3.0], &[3]);
        let g = grad(&x).unwrap();
        assert_eq!(g.as_slice::<f32>(), [3.0, 12.0, 27.0]);
    }

    #[test]
    fn float16_and_bfloat16_round_trip() {
        use half::{bf16, f16};
        let values = [0.5f32, -2.0, 1024.0, 3.25];
        let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let a = Array::from_slice(&halves, &[4]);
        assert_eq!(a.dtype(), mlx_rs::Dtype::Float16);
        assert_eq!(a.as_slice::<f16>(), halves.as_slice());
        assert_eq!(a.as_type::<f32>().unwrap().as_slice::<f32>(), values);
        assert_eq!(a.index(1).item_exact::<f16>(), f16::from_f32(-2.0));

        let brains: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        let b = Array::from_slice(&brains, &[4]);
        assert_eq!(b.dtype(), mlx_rs::Dtype::Bfloat16);
        assert_eq!(b.as_slice::<bf16>(), brains.as_slice());
        let doubled = (&b + &b).as_type::<f32>().unwrap();
        let expected: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        assert_eq!(doubled.as_slice::<f32>(), expected.as_slice());
    }
}
