use super::*;
use crate::mlx::models::llama::tiny_random;
use crate::mlx::train::log::read_step_log;

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
/// and points at the last good checkpoint. A factor below 1 makes any loss "explode".
#[test]
fn divergence_stops_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_random(0, 32, 2, false).unwrap();
    let cfg = TrainConfig {
        divergence_factor: 0.5,
        ..config(Method::Lora, 40)
    };
    let spec = prepare(&mut model, &cfg).unwrap();
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
