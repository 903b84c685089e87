use super::*;
use crate::models::llama::tiny_random;
use crate::train::batch::pad_batch;
use crate::train::log::read_step_log;
use crate::train::lora::LoraConfig;
use crate::train::loss::{LossBatch, masked_lm_loss};
use crate::train::micro::MicroBatch;
use mlx_rs::Array;

/// A toy task a tiny model can learn: after the prompt `[1, a]` answer `[a+1, a+2, 2]`.
fn task(n: usize) -> Vec<TokenizedExample> {
    (0..n)
        .map(|i| {
            let a = 3 + (i % 20) as u32;
            TokenizedExample {
                ids: vec![1, a, a + 1, a + 2, 2],
                loss_mask: vec![false, false, true, true, true],
            }
        })
        .collect()
}

fn config(method: Method, iters: u64) -> TrainConfig {
    TrainConfig {
        method,
        lora: LoraConfig {
            rank: 4,
            alpha: Some(8.0),
            ..LoraConfig::default()
        },
        quantize_group_size: 32,
        iters,
        batch_size: 4,
        learning_rate: 1e-2,
        valid_every: 0,
        ..TrainConfig::default()
    }
}

fn run(
    method: Method,
    iters: u64,
    dir: &Path,
    resume: bool,
    cfg: Option<TrainConfig>,
) -> TrainSummary {
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    let cfg = cfg.unwrap_or_else(|| config(method, iters));
    let spec = prepare(&mut model, &cfg).unwrap();
    let (train_set, valid_set) = (task(40), task(8));
    train(
        &mut model,
        spec.as_ref(),
        TrainData {
            train: &train_set,
            valid: &valid_set,
            pad_id: 0,
        },
        &cfg,
        dir,
        resume,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn every_method_lowers_the_validation_loss() {
    for method in [Method::Lora, Method::Qlora, Method::Dora, Method::Full] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = tiny_random(0, 32, 2, false).unwrap();
        let cfg = config(method, 30);
        let spec = prepare(&mut model, &cfg).unwrap();
        let bs = BatchSpec {
            batch_size: 4,
            max_seq_len: 64,
            pad_multiple: 1,
            keep_partial: true,
        };
        let before = validation_loss(&mut model, &task(8), &bs, 0, None).unwrap();
        let summary = train(
            &mut model,
            spec.as_ref(),
            TrainData {
                train: &task(40),
                valid: &task(8),
                pad_id: 0,
            },
            &cfg,
            dir.path(),
            false,
            &mut |_| {},
        )
        .unwrap();
        let after = summary.final_valid_loss.unwrap();
        assert!(after < before * 0.7, "{method:?}: {before} -> {after}");
        assert!(
            dir.path().join("adapters.safetensors").is_file(),
            "{method:?}"
        );
        assert_eq!(
            read_step_log(&dir.path().join("train_log.jsonl"))
                .unwrap()
                .len(),
            30
        );
        if method != Method::Full {
            assert!(dir.path().join("peft/adapter_model.safetensors").is_file());
        }
    }
}

#[test]
fn resume_replays_the_uninterrupted_run() {
    let straight = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        save_every: 3,
        lora: LoraConfig {
            dropout: 0.1,
            ..config(Method::Lora, 8).lora
        },
        ..config(Method::Lora, 8)
    };
    run(Method::Lora, 8, straight.path(), false, Some(cfg.clone()));
    let expected = read_step_log(&straight.path().join("train_log.jsonl")).unwrap();

    let interrupted = tempfile::tempdir().unwrap();
    run(
        Method::Lora,
        6,
        interrupted.path(),
        false,
        Some(TrainConfig {
            iters: 6,
            ..cfg.clone()
        }),
    );
    // The first run stopped after step 6 with a checkpoint; resuming continues to step 8
    // with the same batches, dropout masks and optimizer moments.
    assert!(interrupted.path().join("checkpoint/state.json").is_file());
    let resumed = run(Method::Lora, 8, interrupted.path(), true, Some(cfg));
    assert_eq!(resumed.steps, 8);
    let got = read_step_log(&interrupted.path().join("train_log.jsonl")).unwrap();
    assert_eq!(got.len(), 8);
    for (a, b) in expected.iter().zip(&got) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
}

/// The guard's own rules are tested in `guard`; this checks the trainer stops on its word
/// and points at the last good checkpoint. A factor below 1 makes any loss "explode"; the
/// config check refuses one, so the model is prepared with a valid config and `train` (which
/// does not check the config again) gets the factor.
#[test]
fn divergence_stops_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    let spec = prepare(&mut model, &config(Method::Lora, 40)).unwrap();
    let cfg = TrainConfig {
        divergence_factor: 0.5,
        ..config(Method::Lora, 40)
    };
    let err = train(
        &mut model,
        spec.as_ref(),
        TrainData {
            train: &task(40),
            valid: &task(8),
            pad_id: 0,
        },
        &cfg,
        dir.path(),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("exploded") && err.contains("learning rate"),
        "{err}"
    );
    assert!(err.contains("checkpoint"), "{err}");
}

#[test]
fn full_fine_tuning_refuses_a_quantized_base() {
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    prepare(&mut model, &config(Method::Qlora, 1)).unwrap();
    let err = prepare(&mut model, &config(Method::Full, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a float base"), "{err}");
}

/// Loss and every gradient of `model` on `batch`, sorted by parameter name.
fn loss_and_grads(model: &mut Llama, batch: &LossBatch) -> (f32, Vec<(String, Array)>) {
    let mut vg = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    let (loss, grads) = vg(model, batch).unwrap();
    let mut grads: Vec<(String, Array)> =
        grads.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (loss[0].item_exact::<f32>(), grads)
}

fn assert_same(what: &str, a: &(f32, Vec<(String, Array)>), b: &(f32, Vec<(String, Array)>)) {
    assert!((a.0 - b.0).abs() < 1e-5, "{what}: loss {} vs {}", a.0, b.0);
    assert_eq!(a.1.len(), b.1.len(), "{what}");
    assert!(!a.1.is_empty(), "{what}: no gradients");
    for ((name, g), (name_b, h)) in a.1.iter().zip(&b.1) {
        assert_eq!(name, name_b);
        let d = crate::test_support::max_abs_diff(g, h);
        let scale = g.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(
            d <= 1e-4 * scale.max(1e-3),
            "{what} {name}: max diff {d} (scale {scale})"
        );
    }
}

/// Rows with a shared 12-token preamble, so batches exercise the shared-prefix KV path.
fn shared_prefix_rows() -> Vec<TokenizedExample> {
    (0..4u32)
        .map(|r| {
            let ids: Vec<u32> = (1..=12).chain([20 + r, 21 + r, 2 + r % 3]).collect();
            let loss_mask = (0..ids.len()).map(|j| j >= 12).collect();
            TokenizedExample { ids, loss_mask }
        })
        .collect()
}

/// Gradient checkpointing and QLoRA's recomputed dequantization change memory, not math:
/// the loss and every trainable gradient equal the plain path's, with and without the
/// shared-prefix KV cache, for LoRA, QLoRA, DoRA and full fine-tuning.
#[test]
fn checkpointing_and_recomputed_dequantization_are_exact() {
    let bs = BatchSpec {
        batch_size: 4,
        max_seq_len: 64,
        pad_multiple: 1,
        keep_partial: true,
    };
    let rows = shared_prefix_rows();
    let padded = pad_batch(&rows.iter().collect::<Vec<_>>(), &bs, 0);
    let batches = [
        ("plain", LossBatch::from_padded(&padded)),
        ("shared prefix", LossBatch::from_padded_shared(&padded)),
    ];
    assert!(batches[1].1.prefix.is_some());
    for method in [Method::Lora, Method::Qlora, Method::Dora, Method::Full] {
        let mut model = tiny_random(1, 32, 3, false).unwrap();
        prepare(&mut model, &config(method, 1)).unwrap();
        // Trained-looking adapters: with B = 0 the adapter gradients of A would vanish.
        let key = mlx_rs::random::key(9).unwrap();
        for (name, p) in model.parameters_mut().flatten() {
            if name.ends_with("lora_b") {
                *p = mlx_rs::random::normal::<f32>(p.shape(), None, 0.05, &key).unwrap();
            }
        }
        for (what, batch) in &batches {
            lora::set_training(&mut model, false);
            model.grad_checkpoint = false;
            let reference = loss_and_grads(&mut model, batch);
            // Training mode turns on QLoRA's recomputed dequantization.
            lora::set_training(&mut model, true);
            let recomputed = loss_and_grads(&mut model, batch);
            assert_same(
                &format!("{method:?} {what} dequantize"),
                &reference,
                &recomputed,
            );
            model.grad_checkpoint = true;
            let checkpointed = loss_and_grads(&mut model, batch);
            assert_same(
                &format!("{method:?} {what} checkpoint"),
                &reference,
                &checkpointed,
            );
        }
    }
}

/// The trainer with `grad_checkpoint: true` takes the same steps as without.
#[test]
fn grad_checkpoint_training_matches_the_plain_run() {
    let losses = |grad_checkpoint: bool| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            grad_checkpoint,
            ..config(Method::Lora, 5)
        };
        let summary = run(Method::Lora, 5, dir.path(), false, Some(cfg));
        assert_eq!(summary.grad_checkpoint, grad_checkpoint);
        read_step_log(&dir.path().join("train_log.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| r.loss)
            .collect::<Vec<_>>()
    };
    let (plain, checkpointed) = (losses(false), losses(true));
    assert_eq!(plain.len(), 5);
    for (a, b) in plain.iter().zip(&checkpointed) {
        assert!((a - b).abs() < 1e-5, "{plain:?} vs {checkpointed:?}");
    }
}

#[test]
fn grad_checkpoint_with_dropout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    let mut cfg = config(Method::Lora, 2);
    cfg.grad_checkpoint = true;
    cfg.lora.dropout = 0.1;
    // The config check refuses it, and so does `train` for a caller that skips `prepare`.
    let err = prepare(&mut model, &cfg).unwrap_err().to_string();
    assert!(err.contains("dropout"), "{err}");
    let spec = prepare(&mut model, &config(Method::Lora, 2)).unwrap();
    let err = train(
        &mut model,
        spec.as_ref(),
        TrainData {
            train: &task(8),
            valid: &[],
            pad_id: 0,
        },
        &cfg,
        dir.path(),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("dropout"), "{err}");
}

/// Long rows, so one row's activations are megabytes and the probes tell sizes apart.
fn long_task(n: usize) -> Vec<TokenizedExample> {
    (0..n)
        .map(|i| {
            let len = 300 + (i % 7) * 10;
            let ids: Vec<u32> = (0..len)
                .map(|j| 1 + ((i * 7 + j * 3) % 30) as u32)
                .collect();
            let loss_mask = (0..len).map(|j| j >= len / 2).collect();
            TokenizedExample { ids, loss_mask }
        })
        .collect()
}

/// `micro_batch: auto` picks a smaller micro-batch for a smaller budget, keeps the
/// effective batch (micro × accumulation), and trains exactly like the plain path with
/// that split.
#[test]
fn auto_micro_batch_fits_the_budget_and_keeps_the_effective_batch() {
    let data = long_task(24);
    let run_with = |cfg: &TrainConfig| {
        let dir = tempfile::tempdir().unwrap();
        let mut model = tiny_random(2, 32, 2, false).unwrap();
        let spec = prepare(&mut model, cfg).unwrap();
        let summary = train(
            &mut model,
            spec.as_ref(),
            TrainData {
                train: &data,
                valid: &[],
                pad_id: 0,
            },
            cfg,
            dir.path(),
            false,
            &mut |_| {},
        )
        .unwrap();
        let losses: Vec<f64> = read_step_log(&dir.path().join("train_log.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| r.loss)
            .collect();
        (summary, losses)
    };
    let auto = |budget_mb: u64| TrainConfig {
        batch_size: 8,
        grad_accum: 1,
        micro_batch: Some(MicroBatch::Auto),
        memory_budget_mb: Some(budget_mb),
        ..config(Method::Lora, 3)
    };
    let (large, _) = run_with(&auto(1 << 20));
    let plan = large.batch.clone().unwrap();
    assert_eq!((plan.micro_batch, plan.grad_accum), (8, 1), "{plan:?}");
    assert_eq!(plan.memory_budget_bytes, Some(1 << 40));
    let need = |rows: usize| {
        plan.probes
            .iter()
            .find(|p| p.rows == rows)
            .unwrap()
            .peak_bytes
    };
    assert!(need(8) > need(1) + (8 << 20), "{plan:?}");
    // A budget between what one row and what eight rows need.
    let budget_mb = (need(1) + (need(8) - need(1)) / 3) >> 20;
    let (small, small_losses) = run_with(&auto(budget_mb));
    let plan = small.batch.clone().unwrap();
    assert!(plan.micro_batch < 8, "{plan:?}");
    assert_eq!(plan.micro_batch * plan.grad_accum as usize, 8, "{plan:?}");
    assert!(
        plan.probe_peak_bytes.unwrap() <= budget_mb << 20,
        "{plan:?}"
    );
    // The same split written by hand trains identically.
    let (_, plain_losses) = run_with(&TrainConfig {
        batch_size: plan.micro_batch,
        grad_accum: plan.grad_accum,
        ..config(Method::Lora, 3)
    });
    assert_eq!(small_losses.len(), 3);
    for (a, b) in small_losses.iter().zip(&plain_losses) {
        assert!((a - b).abs() < 1e-6, "{small_losses:?} vs {plain_losses:?}");
    }
    // A budget below one row is a clear error, not a crash (a zero budget is refused by the
    // config check already).
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_random(2, 32, 2, false).unwrap();
    let cfg = auto(1);
    let spec = prepare(&mut model, &cfg).unwrap();
    let err = train(
        &mut model,
        spec.as_ref(),
        TrainData {
            train: &data,
            valid: &[],
            pad_id: 0,
        },
        &cfg,
        dir.path(),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("memory budget"), "{err}");
}

/// Mixed precision on Metal, float32 on the CPU: the frozen base in bfloat16 on a GPU
/// (not for full fine-tuning, whose weights are the trainables), and adapters in float32
/// whatever the base. The GPU half cannot run here; the choice and the adapter's dtype
/// handling can.
#[test]
fn mixed_precision_keeps_trainables_in_float32() {
    use mlx_rs::Dtype;
    assert_eq!(base_dtype_for(Method::Lora, true), Dtype::Bfloat16);
    assert_eq!(base_dtype_for(Method::Qlora, true), Dtype::Bfloat16);
    assert_eq!(base_dtype_for(Method::Full, true), Dtype::Float32);
    for method in [Method::Lora, Method::Qlora, Method::Dora, Method::Full] {
        assert_eq!(base_dtype_for(method, false), Dtype::Float32);
    }
    // A bfloat16 base with float32 adapters: activations stay bfloat16, gradients reach
    // the float32 adapters as float32.
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    for (_, p) in model.parameters_mut().flatten() {
        *p = p.as_dtype(Dtype::Bfloat16).unwrap();
    }
    for layer in 0..2 {
        for (_, linear) in lora::block_linears(&mut model, layer) {
            linear.compute_dtype = Dtype::Bfloat16;
        }
    }
    let spec = prepare(&mut model, &config(Method::Lora, 1))
        .unwrap()
        .unwrap();
    assert_eq!(spec.rank, 4);
    let hidden = model
        .hidden_states(&Array::from_slice(&[1i32, 5, 6], &[1, 3]), None, None)
        .unwrap();
    assert_eq!(hidden.dtype(), Dtype::Bfloat16);
    let rows = task(4);
    let bs = BatchSpec {
        batch_size: 4,
        max_seq_len: 64,
        pad_multiple: 1,
        keep_partial: true,
    };
    let batch = LossBatch::from_padded(&pad_batch(&rows.iter().collect::<Vec<_>>(), &bs, 0));
    let (loss, grads) = loss_and_grads(&mut model, &batch);
    assert!(loss.is_finite());
    for (name, g) in &grads {
        assert_eq!(g.dtype(), Dtype::Float32, "{name}");
    }
}
