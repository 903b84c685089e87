use super::*;
use crate::models::llama::tiny_random;
use crate::test_support::max_abs_diff;
use crate::train::batch::{BatchSpec, TokenizedExample, pad_batch};
use crate::train::loss::{LossBatch, masked_lm_loss};
use mlx_rs::module::ModuleParameters;

fn tokens() -> Array {
    Array::from_slice(&[1i32, 5, 7, 9, 3, 2, 8, 4], &[2, 4])
}

fn spec(dora: bool, num_layers: Option<i32>) -> AdapterSpec {
    adapter_spec(
        &LoraConfig {
            rank: 4,
            num_layers,
            ..LoraConfig::default()
        },
        if dora { Method::Dora } else { Method::Lora },
    )
}

#[test]
fn fresh_adapters_leave_the_output_unchanged() {
    for dora in [false, true] {
        let mut model = tiny_random(1, 40, 2, false).unwrap();
        let before = model.forward_tokens(&tokens(), None, None).unwrap();
        let n = attach(&mut model, &spec(dora, None), 0).unwrap();
        assert_eq!(n, 14);
        let after = model.forward_tokens(&tokens(), None, None).unwrap();
        assert!(max_abs_diff(&before, &after) < 1e-5, "dora={dora}");
    }
}

/// The model holds its adapters behind `LinearAdapter`: a clone carries copies of them, and
/// the concrete adapter is still reachable.
#[test]
fn a_cloned_adapted_model_computes_the_same() {
    let mut model = tiny_random(1, 40, 2, false).unwrap();
    attach(&mut model, &spec(true, None), 0).unwrap();
    let key = random::key(3).unwrap();
    for (_, linear) in block_linears(&mut model, 1) {
        let a = Adapter::of_mut(linear).unwrap();
        let shape = a.lora_b.shape().to_vec();
        a.lora_b.value = random::normal::<f32>(&shape, None, 0.05, &key).unwrap();
    }
    let mut copy = model.clone();
    let expected = model.forward_tokens(&tokens(), None, None).unwrap();
    let got = copy.forward_tokens(&tokens(), None, None).unwrap();
    assert_eq!(max_abs_diff(&expected, &got), 0.0);
    assert_eq!(
        copy.trainable_parameters().flatten().len(),
        model.trainable_parameters().flatten().len()
    );
    assert!(Adapter::of_mut(&mut copy.model.layers[0].mlp.up_proj).is_some());
}

#[test]
fn only_adapters_train_and_num_layers_is_respected() {
    let mut model = tiny_random(1, 40, 3, false).unwrap();
    let n = attach(&mut model, &spec(false, Some(1)), 0).unwrap();
    assert_eq!(n, 7);
    let trainable = model.trainable_parameters().flatten();
    assert_eq!(trainable.len(), 14);
    for key in trainable.keys() {
        assert!(
            key.starts_with("model.layers.2.") && key.contains(".adapter.lora_"),
            "{key}"
        );
    }
}

#[test]
fn scale_comes_from_alpha_or_mlx_lms_scale_key() {
    let c = LoraConfig {
        rank: 8,
        alpha: Some(16.0),
        ..LoraConfig::default()
    };
    assert_eq!(adapter_spec(&c, Method::Lora).scale, 2.0);
    let c = LoraConfig {
        scale: Some(10.0),
        alpha: Some(16.0),
        ..c
    };
    assert_eq!(adapter_spec(&c, Method::Lora).scale, 10.0);
}

fn batch() -> LossBatch {
    let rows = [
        TokenizedExample {
            ids: vec![1, 5, 7, 9, 11, 2],
            loss_mask: vec![false, false, true, true, true, true],
        },
        TokenizedExample {
            ids: vec![1, 4, 6, 2],
            loss_mask: vec![false, true, true, true],
        },
    ];
    let spec = BatchSpec {
        batch_size: 2,
        max_seq_len: 64,
        pad_multiple: 1,
        keep_partial: true,
    };
    LossBatch::from_padded(&pad_batch(&rows.iter().collect::<Vec<_>>(), &spec, 0))
}

/// Central finite differences agree with MLX's gradients for LoRA and DoRA parameters.
#[test]
fn adapter_gradients_match_finite_differences() {
    for dora in [false, true] {
        let mut model = tiny_random(2, 30, 2, false).unwrap();
        attach(&mut model, &spec(dora, None), 5).unwrap();
        // Give B non-zero values so A's gradient is non-zero too.
        let key = random::key(11).unwrap();
        for layer in 0..2 {
            for (_, linear) in block_linears(&mut model, layer) {
                let a = Adapter::of_mut(linear).unwrap();
                let shape = a.lora_b.shape().to_vec();
                a.lora_b.value = random::normal::<f32>(&shape, None, 0.05, &key).unwrap();
            }
        }
        let b = batch();
        let mut vg = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
            masked_lm_loss(m, b).map(|l| vec![l])
        });
        let (_, grads) = vg(&mut model, &b).unwrap();
        // DoRA detaches the norm on purpose (the paper's memory-saving choice), so A and B
        // follow a deliberately approximate gradient; its magnitude `m` is exact.
        let names: &[&str] = if dora {
            &[
                "model.layers.0.self_attn.q_proj.adapter.m",
                "model.layers.1.mlp.down_proj.adapter.m",
            ]
        } else {
            &[
                "model.layers.0.self_attn.q_proj.adapter.lora_b",
                "model.layers.1.mlp.down_proj.adapter.lora_a",
            ]
        };
        for name in names {
            let name = *name;
            let analytic = grads[name].flatten(None, None).unwrap();
            for index in [0usize, 3] {
                let eps = 1e-2f32;
                let mut loss_at = |delta: f32| -> f32 {
                    let mut params = model.parameters_mut().flatten();
                    let p = params.get_mut(name).unwrap();
                    let mut values = p.flatten(None, None).unwrap().as_slice::<f32>().to_vec();
                    values[index] += delta;
                    **p = Array::from_slice(&values, p.shape());
                    let loss = masked_lm_loss(&mut model, &b).unwrap().item_exact::<f32>();
                    let mut params = model.parameters_mut().flatten();
                    let p = params.get_mut(name).unwrap();
                    values[index] -= delta;
                    **p = Array::from_slice(&values, p.shape());
                    loss
                };
                let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
                let exact = analytic.as_slice::<f32>()[index];
                let tol = 2e-3 + 0.02 * exact.abs();
                assert!(
                    (numeric - exact).abs() < tol,
                    "dora={dora} {name}[{index}]: numeric {numeric} vs analytic {exact}"
                );
            }
        }
    }
}
