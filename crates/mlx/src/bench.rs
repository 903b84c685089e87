//! Micro-benchmarks of the MLX operations training depends on. Their figures are the
//! "physical limit" that training throughput is compared against.

use anyhow::Context;
use mlx_rs::{Array, random};
use serde::Serialize;
use std::time::Instant;

/// The result of [`matmul_gflops`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MatmulBench {
    /// Square matrix size.
    pub n: i32,
    /// Timed repetitions (after one warm-up).
    pub reps: u32,
    /// Best observed rate in GFLOP/s (2·n³ floating-point operations per product).
    pub gflops: f64,
}

/// Measures float32 n×n matmul throughput on the default device: one warm-up, then `reps`
/// timed products, reporting the best (the least disturbed by other processes).
pub fn matmul_gflops(n: i32, reps: u32) -> anyhow::Result<MatmulBench> {
    let key = random::key(0)?;
    let a = random::normal::<f32>(&[n, n], None, None, &key)?;
    let b = random::normal::<f32>(&[n, n], None, None, &key)?;
    mlx_rs::transforms::eval([&a, &b])?;
    let run = |a: &Array, b: &Array| -> anyhow::Result<f64> {
        let start = Instant::now();
        let c = a.matmul(b)?;
        c.eval()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run(&a, &b).context("matmul warm-up failed")?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(run(&a, &b)?);
    }
    let flops = 2.0 * f64::from(n).powi(3);
    Ok(MatmulBench {
        n,
        reps: reps.max(1),
        gflops: flops / best / 1e9,
    })
}
