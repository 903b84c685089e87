use super::*;
use crate::models::llama::tiny_random;
use crate::train::lora::{
    Adapter, LoraConfig, Method, adapter_spec, attach as attach_lora, block_linears,
};
use crate::train::loss::masked_lm_loss;
use crate::train::trainer::{self, TrainConfig, TrainData, TrainSummary};

/// Rows that share a 12-token preamble (no loss on it), then differ in length.
fn preamble_rows(n: usize) -> Vec<TokenizedExample> {
    (0..n)
        .map(|i| {
            let a = 20 + (i % 17) as u32;
            let tail: Vec<u32> = (0..(2 + i % 5) as u32).map(|j| a + j).chain([2]).collect();
            let ids: Vec<u32> = (1..=12).chain([13 + (i % 3) as u32]).chain(tail).collect();
            let loss_mask = (0..ids.len()).map(|j| j >= 14).collect();
            TokenizedExample { ids, loss_mask }
        })
        .collect()
}

/// A 3-block model with LoRA on the last block and nonzero `B`, so gradients reach `A`.
fn adapted_model(num_layers: i32) -> Llama {
    let mut model = tiny_random(5, 50, 3, false).unwrap();
    let spec = adapter_spec(
        &LoraConfig {
            rank: 4,
            num_layers: Some(num_layers),
            ..LoraConfig::default()
        },
        Method::Lora,
    );
    attach_lora(&mut model, &spec, 3).unwrap();
    let key = mlx_rs::random::key(4).unwrap();
    for layer in 0..3 {
        for (_, linear) in block_linears(&mut model, layer) {
            if let Some(a) = Adapter::of_mut(linear) {
                let shape = a.lora_b.shape().to_vec();
                a.lora_b.value = mlx_rs::random::normal::<f32>(&shape, None, 0.05, &key).unwrap();
            }
        }
    }
    model
}

const SPEC: BatchSpec = BatchSpec {
    batch_size: 4,
    max_seq_len: 64,
    pad_multiple: 1,
    keep_partial: true,
};

fn memory_only() -> ActivationCacheConfig {
    ActivationCacheConfig {
        enabled: true,
        disk_mb: 0,
        ..ActivationCacheConfig::default()
    }
}

#[test]
fn the_first_trainable_block_follows_the_adapters() {
    assert_eq!(first_trainable_block(&adapted_model(1)), 2);
    assert_eq!(first_trainable_block(&adapted_model(3)), 0);
    let mut full = tiny_random(5, 50, 3, false).unwrap();
    full.unfreeze_parameters(true);
    assert_eq!(first_trainable_block(&full), 0, "the embedding trains");
}

/// Batches served from cached block inputs give the plain path's loss and LoRA gradients,
/// with and without a shared prefix, both when the rows are computed (a miss) and when
/// they come from the cache (a hit).
#[test]
fn cached_batches_give_the_plain_loss_and_gradients() {
    let mut model = adapted_model(1);
    // A batch whose rows are a different grouping than the one that filled the cache.
    let later = preamble_rows(8);
    let mut vg = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    for share in [true, false] {
        let mut cache = ActivationCache::new(
            &model,
            &memory_only(),
            CacheSetup {
                spec: SPEC,
                share_prefix: share,
                pad_id: 0,
                train: &later,
                valid: &[],
            },
        )
        .unwrap();
        assert!(cache.active());
        for (round, picked) in [[0usize, 1, 2, 3], [0, 1, 2, 3], [3, 6, 1, 7]]
            .iter()
            .enumerate()
        {
            let refs: Vec<&TokenizedExample> = picked.iter().map(|&i| &later[i]).collect();
            let padded = pad_batch(&refs, &SPEC, 0);
            let plain = if share {
                LossBatch::from_padded_shared(&padded)
            } else {
                LossBatch::from_padded(&padded)
            };
            assert_eq!(plain.prefix.is_some(), share, "the preamble is shared");
            let cached = cache
                .attach(&mut model, Set::Train, picked, &padded, plain.clone())
                .unwrap();
            assert!(cached.cached.is_some());
            let (pl, pg) = vg(&mut model, &plain).unwrap();
            let (cl, cg) = vg(&mut model, &cached).unwrap();
            let (a, b) = (pl[0].item_exact::<f32>(), cl[0].item_exact::<f32>());
            assert!(
                (a - b).abs() < 1e-5,
                "share {share} round {round}: loss {a} vs {b}"
            );
            crate::test_support::assert_grads_close(&pg, &cg);
        }
        let stats = cache.stats().unwrap();
        assert_eq!(stats.block, 2);
        assert_eq!(stats.misses, 6, "rows 0-3, then 6 and 7");
        assert_eq!(stats.hits, 6);
        assert!(stats.skipped_positions > 0);
    }
}

fn train_run(
    cfg: &TrainConfig,
    model_seed: u64,
    train_set: &[TokenizedExample],
    valid: &[TokenizedExample],
) -> TrainSummary {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_random(model_seed, 50, 3, false).unwrap();
    let spec = trainer::prepare(&mut model, cfg).unwrap();
    trainer::train(
        &mut model,
        spec.as_ref(),
        TrainData {
            train: train_set,
            valid,
            pad_id: 0,
        },
        cfg,
        dir.path(),
        false,
        &mut |_| {},
    )
    .unwrap()
}

fn lora_config(num_layers: i32, cache: ActivationCacheConfig) -> TrainConfig {
    TrainConfig {
        method: Method::Lora,
        lora: LoraConfig {
            rank: 4,
            alpha: Some(8.0),
            num_layers: Some(num_layers),
            ..LoraConfig::default()
        },
        iters: 15,
        batch_size: 4,
        learning_rate: 1e-2,
        valid_every: 5,
        activation_cache: cache,
        ..TrainConfig::default()
    }
}

/// Three epochs with validation: the same losses as the uncached run, every example
/// computed once, everything else a hit.
#[test]
fn training_with_the_cache_matches_training_without() {
    let (train_set, valid) = (preamble_rows(20), preamble_rows(6));
    let plain = train_run(
        &lora_config(1, ActivationCacheConfig::default()),
        0,
        &train_set,
        &valid,
    );
    let cached = train_run(&lora_config(1, memory_only()), 0, &train_set, &valid);
    assert!(plain.activation_cache.is_none());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
    assert!(
        close(plain.final_train_loss, cached.final_train_loss),
        "train loss {} vs {}",
        plain.final_train_loss,
        cached.final_train_loss
    );
    let (pv, cv) = (
        plain.final_valid_loss.unwrap(),
        cached.final_valid_loss.unwrap(),
    );
    assert!(close(pv, cv), "valid loss {pv} vs {cv}");
    let stats = cached.activation_cache.unwrap();
    assert_eq!(stats.block, 2);
    assert_eq!(stats.misses, 20 + 6, "each example once");
    // 15 steps x 4 rows and 3 validations x 6 rows, less the misses.
    assert_eq!(stats.hits + stats.misses, 15 * 4 + 3 * 6);
    assert_eq!(stats.over_budget, 0);
    assert!(stats.memory_bytes > 0);
}

/// A run finds the states an earlier run left on disk; another base model, other tokens or
/// another `k` find nothing.
#[test]
fn the_disk_layer_is_reused_and_invalidated() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ActivationCacheConfig {
        enabled: true,
        disk_mb: 64,
        dir: Some(dir.path().to_owned()),
        ..ActivationCacheConfig::default()
    };
    let (train_set, valid) = (preamble_rows(20), preamble_rows(6));
    let first = train_run(&lora_config(1, disk.clone()), 0, &train_set, &valid)
        .activation_cache
        .unwrap();
    assert_eq!((first.disk_loaded, first.disk_written), (0, 26));
    let files = || fs_err::read_dir(dir.path()).unwrap().count();
    assert_eq!(files(), 2, "one file per data set");

    let again = train_run(&lora_config(1, disk.clone()), 0, &train_set, &valid)
        .activation_cache
        .unwrap();
    assert_eq!(again.disk_loaded, 26);
    assert_eq!((again.misses, again.disk_written), (0, 0));
    assert_eq!(again.hit_rate, 1.0);
    assert_eq!(
        again.disk_hits, again.hits,
        "every hit is a state the first run wrote"
    );

    let other_model = train_run(&lora_config(1, disk.clone()), 1, &train_set, &valid)
        .activation_cache
        .unwrap();
    assert_eq!((other_model.disk_loaded, other_model.misses), (0, 26));

    let other_k = train_run(&lora_config(2, disk.clone()), 0, &train_set, &valid)
        .activation_cache
        .unwrap();
    assert_eq!(other_k.block, 1);
    assert_eq!((other_k.disk_loaded, other_k.misses), (0, 26));

    let mut retokenized = train_set.clone();
    retokenized[7].ids[13] += 1;
    let other_data = train_run(&lora_config(1, disk), 0, &retokenized, &valid)
        .activation_cache
        .unwrap();
    assert_eq!(
        other_data.disk_loaded, 6,
        "only the validation set is unchanged"
    );
    assert_eq!(other_data.misses, 20);
}

#[test]
fn the_keys_cover_model_tokens_and_k() {
    let (a, b) = (adapted_model(1), tiny_random(6, 50, 3, false).unwrap());
    assert_eq!(model_key(&a, 2).unwrap(), model_key(&a, 2).unwrap());
    assert_ne!(model_key(&a, 2).unwrap(), model_key(&b, 2).unwrap());
    assert_ne!(model_key(&a, 2).unwrap(), model_key(&a, 1).unwrap());
    // Only the embedding and blocks below k enter: block 2 may change freely.
    let mut c = adapted_model(1);
    c.model.layers[2].mlp.up_proj = b.model.layers[2].mlp.up_proj.clone();
    assert_eq!(model_key(&a, 2).unwrap(), model_key(&c, 2).unwrap());
    c.model.layers[1].mlp.up_proj = b.model.layers[1].mlp.up_proj.clone();
    assert_ne!(model_key(&a, 2).unwrap(), model_key(&c, 2).unwrap());

    let rows = preamble_rows(5);
    let mut other = rows.clone();
    other[2].ids[3] = 49;
    assert_ne!(data_key(&rows, 64), data_key(&other, 64));
    assert_ne!(
        data_key(&rows, 64),
        data_key(&rows, 10),
        "truncation changes inputs"
    );
    let mut relabelled = rows.clone();
    relabelled[2].loss_mask[15] = !relabelled[2].loss_mask[15];
    assert_eq!(
        data_key(&rows, 64),
        data_key(&relabelled, 64),
        "the loss mask does not change the states"
    );
}

#[test]
fn budgets_are_respected() {
    let (train_set, valid) = (preamble_rows(8), Vec::new());
    let none_fit = ActivationCacheConfig {
        memory_mb: 0,
        ..memory_only()
    };
    let mut cfg = lora_config(1, none_fit);
    cfg.valid_every = 0;
    let stats = train_run(&cfg, 0, &train_set, &valid)
        .activation_cache
        .unwrap();
    assert_eq!(stats.hits, 0, "nothing is kept");
    assert_eq!(stats.misses, 15 * 4);
    assert_eq!(stats.over_budget, 15 * 4);
}

/// A damaged file (here: cut short, as a copy or a disk error would leave it) is never
/// read: it is deleted, its states are recomputed and written again, and the run gives the
/// same losses. A writer's leftover temporary file is ignored.
#[test]
fn a_damaged_disk_file_is_recomputed_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ActivationCacheConfig {
        enabled: true,
        disk_mb: 64,
        dir: Some(dir.path().to_owned()),
        ..ActivationCacheConfig::default()
    };
    let (train_set, valid) = (preamble_rows(20), preamble_rows(6));
    let first = train_run(&lora_config(1, disk.clone()), 0, &train_set, &valid);
    let files: Vec<PathBuf> = fs_err::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        assert_eq!(pipe_engine::cache::activations::check(f), Ok(()), "sealed");
    }
    let train_file = files
        .iter()
        .max_by_key(|f| fs_err::metadata(f).unwrap().len())
        .unwrap();
    let bytes = fs_err::read(train_file).unwrap();
    fs_err::write(train_file, &bytes[..bytes.len() / 2]).unwrap();
    let leftover = dir.path().join(format!(
        ".{}.999999.tmp.safetensors",
        train_file.file_stem().unwrap().to_str().unwrap()
    ));
    fs_err::write(&leftover, &bytes[..100]).unwrap();

    let second = train_run(&lora_config(1, disk), 0, &train_set, &valid);
    let stats = second.activation_cache.unwrap();
    assert_eq!(stats.disk_discarded, 1);
    assert_eq!(stats.disk_loaded, 6, "the validation file was whole");
    assert_eq!((stats.misses, stats.disk_written), (20, 20));
    assert_eq!(pipe_engine::cache::activations::check(train_file), Ok(()));
    assert!(
        (first.final_train_loss - second.final_train_loss).abs()
            <= 1e-4 * first.final_train_loss.abs().max(1.0)
    );
}
