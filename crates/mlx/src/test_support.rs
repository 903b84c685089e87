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

/// Asserts that two gradient sets name the same parameters and agree within 1e-4 of each
/// gradient's own scale (floored at 1e-3): the tolerance of the exactness tests.
pub fn assert_grads_close(
    a: &mlx_rs::module::FlattenedModuleParam,
    b: &mlx_rs::module::FlattenedModuleParam,
) {
    assert_eq!(a.len(), b.len());
    for (name, g) in a {
        let d = max_abs_diff(g, &b[name]);
        let scale = g.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(
            d <= 1e-4 * scale.max(1e-3),
            "{name}: max diff {d} (scale {scale})"
        );
    }
}
