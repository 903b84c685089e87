//! Unit tests of the Llama model on tiny random weights.

use super::*;
use mlx_rs::module::ModuleParameters;

/// What training (the next issue) relies on: `nn::value_and_grad` over the model gives a
/// gradient per trainable parameter under its checkpoint name, frozen quantized layers
/// take none, and the head can be computed from hidden states at chosen positions.
#[test]
fn value_and_grad_sees_named_trainable_parameters() {
    let mut model = tiny_random(11, 32, 2, false).unwrap();
    let spec = crate::linear::QuantSpec {
        group_size: 32,
        bits: 4,
    };
    model.model.layers[1].mlp.up_proj = model.model.layers[1].mlp.up_proj.quantize(spec).unwrap();
    let x = Array::from_slice(&[1i32, 5, 7, 9], &[1, 4]);
    let y = Array::from_slice(&[5i32, 7, 9, 2], &[1, 4]);
    let loss = |m: &mut Llama, (x, y): (&Array, &Array)| -> Result<Array, Exception> {
        let h = m.hidden_states(x, None, None)?;
        let logits = m.logits(&h)?;
        let picked = logits
            .take_along_axis(y.expand_dims(-1)?, -1)?
            .squeeze_axes(&[-1])?;
        logits
            .logsumexp_axis(-1, None)?
            .subtract(picked)?
            .mean(None)
    };
    let mut vg = mlx_rs::nn::value_and_grad(loss);
    let (value, grads) = vg(&mut model, (&x, &y)).unwrap();
    assert!(value.item_exact::<f32>() > 0.0);
    assert!(grads.contains_key("model.layers.0.self_attn.q_proj.weight"));
    assert!(grads.contains_key("model.embed_tokens.weight"));
    assert!(grads.contains_key("model.norm.weight"));
    assert!(!grads.contains_key("model.layers.1.mlp.up_proj.weight"));
    assert!(!grads.contains_key("model.layers.1.mlp.up_proj.scales"));
    let trainable = model.trainable_parameters().flatten().len();
    assert_eq!(grads.len(), trainable);
}

#[test]
fn llama3_rope_scaling_keeps_high_and_stretches_low_frequencies() {
    let s = RopeScaling {
        rope_type: "llama3".into(),
        factor: Some(8.0),
        low_freq_factor: Some(1.0),
        high_freq_factor: Some(4.0),
        original_max_position_embeddings: Some(8192),
    };
    let p = llama3_rope_periods(500_000.0, 128, &s);
    assert_eq!(p.len(), 64);
    assert_eq!(p[0], 1.0, "the fastest frequency is untouched");
    let plain = 500_000f32.powf(126.0 / 128.0);
    assert!(
        (p[63] / plain - 8.0).abs() < 1e-4,
        "the slowest is stretched by the factor"
    );
    assert!(p.windows(2).all(|w| w[1] > w[0]), "periods stay increasing");
}
