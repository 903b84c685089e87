//! Helpers shared by the MLX unit tests.

use mlx_rs::Array;

/// The largest absolute elementwise difference of two arrays.
pub fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    a.subtract(b)
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap()
        .item_exact::<f32>()
}
