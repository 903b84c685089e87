//! The frozen-block activation cache on the real SmolLM2-135M: batches served from the
//! cached hidden states entering the first adapted block give the plain path's loss and
//! LoRA gradients, with the shared-prefix batches the chat template produces; and two
//! train stages of one workspace with the same model, data and `k` share its disk layer.

use pipe_engine::data::{Example, SplitSpec, assign_split, read_bigbench_task};
use pipe_mlx_core::load::{self, LoadOptions};
use pipe_mlx_core::models::llama::Llama;
use pipe_mlx_core::train::activations::{ActivationCache, ActivationCacheConfig, CacheSetup, Set};
use pipe_mlx_core::train::batch::{BatchSpec, TokenizedExample, pad_batch};
use pipe_mlx_core::train::lora::{Adapter, LoraConfig, Method, block_linears};
use pipe_mlx_core::train::loss::{LossBatch, masked_lm_loss};
use pipe_mlx_core::train::tokenize::tokenize_example;
use pipe_mlx_core::train::trainer::{self, TrainConfig};

const PROMPT: &str = "What is the past tense of the verb '{{ input }}'? Answer with one word.";

#[test]
fn cached_block_inputs_are_exact_on_smollm2() {
    let cache_dir = pipe_engine::dirs::user_cache_dir().unwrap();
    let dataset = pipe_engine::fetch::find_dataset("agid-past-tense").unwrap();
    let task = pipe_engine::fetch::fetch(&cache_dir, dataset).expect("fetch the past-tense task");
    let examples = read_bigbench_task(task.path(), PROMPT).unwrap();
    let split = SplitSpec::default();
    let rows: Vec<&Example> = examples
        .iter()
        .filter(|e| assign_split(e, &split) == pipe_engine::data::Split::Train)
        .take(8)
        .collect();
    let model =
        std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    let mut loaded = load::load(
        &model,
        LoadOptions {
            keep_quantized: false,
            ..LoadOptions::default()
        },
    )
    .expect("load SmolLM2");
    let template = loaded.chat_template.as_ref();
    let data: Vec<TokenizedExample> = rows
        .iter()
        .map(|e| tokenize_example(e, &loaded.tokenizer, template).unwrap())
        .collect();
    let config = TrainConfig {
        method: Method::Lora,
        lora: LoraConfig {
            rank: 8,
            num_layers: Some(16),
            ..LoraConfig::default()
        },
        ..TrainConfig::default()
    };
    trainer::prepare(&mut loaded.model, &config).unwrap();
    // Nonzero B, so gradients reach A too and the adapted blocks change the states.
    let key = mlx_rs::random::key(7).unwrap();
    for layer in 0..loaded.model.model.layers.len() {
        for (_, linear) in block_linears(&mut loaded.model, layer) {
            if let Some(a) = Adapter::of_mut(linear) {
                let shape = a.lora_b.shape().to_vec();
                a.lora_b.value = mlx_rs::random::normal::<f32>(&shape, None, 0.01, &key).unwrap();
            }
        }
    }
    let spec = BatchSpec {
        batch_size: 8,
        max_seq_len: 2048,
        pad_multiple: 1,
        keep_partial: true,
    };
    let pad = loaded.tokenizer.pad_id();
    let mut cache = ActivationCache::new(
        &loaded.model,
        &ActivationCacheConfig {
            enabled: true,
            disk_mb: 0,
            ..ActivationCacheConfig::default()
        },
        CacheSetup {
            spec,
            share_prefix: true,
            pad_id: pad,
            train: &data,
            valid: &[],
        },
    )
    .unwrap();
    let picked: Vec<usize> = (0..data.len()).collect();
    let refs: Vec<&TokenizedExample> = data.iter().collect();
    let padded = pad_batch(&refs, &spec, pad);
    let plain = LossBatch::from_padded_shared(&padded);
    assert!(
        plain.prefix.is_some(),
        "the chat template's preamble is shared"
    );
    let mut vg = mlx_rs::nn::value_and_grad(|m: &mut Llama, b: &LossBatch| {
        masked_lm_loss(m, b).map(|l| vec![l])
    });
    let (pl, pg) = vg(&mut loaded.model, &plain).unwrap();
    for round in 0..2 {
        let cached = cache
            .attach(
                &mut loaded.model,
                Set::Train,
                &picked,
                &padded,
                plain.clone(),
            )
            .unwrap();
        let (cl, cg) = vg(&mut loaded.model, &cached).unwrap();
        let (a, b) = (pl[0].item_exact::<f32>(), cl[0].item_exact::<f32>());
        assert!(
            (a - b).abs() < 1e-4 * a.abs().max(1.0),
            "round {round}: loss {a} vs {b}"
        );
        assert_eq!(pg.len(), cg.len());
        for (name, g) in &pg {
            let d = g
                .subtract(&cg[name])
                .unwrap()
                .abs()
                .unwrap()
                .max(None)
                .unwrap()
                .item_exact::<f32>();
            let scale = g.abs().unwrap().max(None).unwrap().item_exact::<f32>();
            assert!(
                d <= 1e-3 * scale.max(1e-4),
                "round {round} {name}: max diff {d} (scale {scale})"
            );
        }
    }
    let stats = cache.stats().unwrap();
    assert_eq!(stats.block, 14, "30 blocks, the last 16 adapted");
    assert_eq!((stats.misses, stats.hits), (8, 8));
}

/// Four training and two validation examples: 4 steps of 2 rows are 2 epochs.
fn tiny_data(ws: &crate::support::Ws) {
    let verbs = [
        ("walk", "walked"),
        ("jump", "jumped"),
        ("play", "played"),
        ("look", "looked"),
        ("call", "called"),
        ("open", "opened"),
    ];
    let rows = |pairs: &[(&str, &str)]| -> String {
        pairs
            .iter()
            .map(|(v, p)| {
                format!("{{\"prompt\": \"Past tense of {v}?\", \"completion\": \"{p}\"}}\n")
            })
            .collect()
    };
    ws.file("data/train.jsonl", &rows(&verbs[..4]));
    ws.file("data/valid.jsonl", &rows(&verbs[4..]));
}

fn cache_stats(ws: &crate::support::Ws, metrics: &str) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_str(&ws.read(metrics)).unwrap();
    m.get("train").unwrap_or(&m)["activation_cache"].clone()
}

/// Two train stages of one workspace (a sweep's trials in miniature: other learning rates,
/// same model, data and adapted blocks) share the disk layer in `cache/activations/v1`:
/// the second reads every state the first wrote, from its first step on. `pipe cache
/// stats` counts the files and `pipe gc` deletes them when over the budget.
#[test]
fn a_second_train_stage_reads_the_first_ones_states_from_disk() {
    let ws = crate::support::Ws::new();
    tiny_data(&ws);
    let model =
        std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    let stage = |name: &str, lr: &str, needs: &str| {
        format!(
            r#"  {name}:
    kind: train
{needs}    with:
      model: "{model}"
      train_data: data/train.jsonl
      valid_data: data/valid.jsonl
      out_dir: {name}
      lora: {{rank: 4, num_layers: 1}}
      learning_rate: {lr}
      iters: 4
      batch_size: 2
      max_seq_len: 64
      activation_cache: {{enabled: true}}
"#
        )
    };
    ws.pipeline(&format!(
        "stages:\n{}{}",
        stage("first", "1.0e-4", ""),
        stage("second", "3.0e-4", "    needs: [first]\n")
    ));
    ws.run_ok(&[]);
    let (first, second) = (
        cache_stats(&ws, "first/metrics.json"),
        cache_stats(&ws, "second/metrics.json"),
    );
    // 4 steps of 2 rows over 4 examples (2 epochs) plus one validation of 2.
    assert_eq!(first["block"], 29, "30 blocks, the last adapted");
    assert_eq!(first["misses"], 6, "{first}");
    assert_eq!(first["disk_written"], 6, "{first}");
    assert_eq!(second["disk_loaded"], 6, "{second}");
    assert_eq!(second["misses"], 0, "{second}");
    assert_eq!(second["hit_rate"], 1.0, "{second}");
    assert_eq!(second["disk_hits"], 10, "{second}");
    // From its first step: every position of every step skipped the frozen blocks.
    let log = ws.read("second/train_log.jsonl");
    let step1: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        step1["cached_positions"], step1["processed_tokens"],
        "{step1}"
    );
    assert!(step1["cached_positions"].as_u64().unwrap() > 0);

    let json = |args: &[&str]| -> serde_json::Value {
        let out = ws.pipe().args(args).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(json(&["cache", "stats"])["activations"]["entries"], 2);
    let gc = json(&["gc", "--activation-budget-mb", "0"]);
    assert_eq!(gc["activations"]["entries_removed"], 2, "{gc}");
}

/// The trials of a tune stage (other learning rates, same model, data and adapted blocks)
/// share the workspace's disk layer: the second trial reads what the first wrote.
#[test]
fn tune_trials_share_the_disk_layer() {
    let ws = crate::support::Ws::new();
    tiny_data(&ws);
    let model =
        std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    ws.pipeline(&format!(
        r#"stages:
  search:
    kind: tune
    with:
      out: search
      space:
        learning_rate: {{float: [1.0e-4, 1.0e-3], log: true}}
      objective: {{metric: train.final_valid_loss, mode: min}}
      budget: {{n_trials: 2, iters: 4}}
      parallel: 1
      trial:
        train:
          model: "{model}"
          train_data: data/train.jsonl
          valid_data: data/valid.jsonl
          lora: {{rank: 4, num_layers: 1}}
          batch_size: 2
          max_seq_len: 64
          activation_cache: {{enabled: true}}
"#
    ));
    ws.run_ok(&[]);
    let mut trials: Vec<serde_json::Value> = ws
        .read("search/trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    trials.sort_by_key(|t| t["index"].as_u64());
    assert_eq!(trials.len(), 2);
    let stats: Vec<serde_json::Value> = trials
        .iter()
        .map(|t| {
            assert_eq!(t["status"], "complete", "{t}");
            let key = t["key"].as_str().unwrap();
            cache_stats(&ws, &format!("cache/tune/v1/trials/{key}/metrics.json"))
        })
        .collect();
    assert_eq!(
        (&stats[0]["misses"], &stats[0]["disk_written"]),
        (&6.into(), &6.into()),
        "{}",
        stats[0]
    );
    assert_eq!(stats[1]["disk_loaded"], 6, "{}", stats[1]);
    assert_eq!(stats[1]["misses"], 0, "{}", stats[1]);
    assert_eq!(stats[1]["disk_hits"], 10, "{}", stats[1]);
}

/// Two trainings at once in two workspaces whose `activation_cache.dir` is one shared
/// folder (a team's scratch disk, or two sweeps of one user): both write the same data
/// set's file. Both finish with the same losses, the folder holds one sealed file and no
/// temporary one, and a third training reads every state from it.
#[test]
fn two_trainings_at_once_share_one_activation_cache_folder() {
    let shared = tempfile::tempdir().unwrap();
    let model =
        std::env::var("PIPE_SMOLLM2_GGUF").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    let workspace = || {
        let ws = crate::support::Ws::new();
        tiny_data(&ws);
        ws.pipeline(&format!(
            r#"stages:
  train:
    kind: train
    with:
      model: "{model}"
      train_data: data/train.jsonl
      valid_data: data/valid.jsonl
      out_dir: adapter
      lora: {{rank: 4, num_layers: 1}}
      learning_rate: 1.0e-4
      iters: 4
      batch_size: 2
      max_seq_len: 64
      activation_cache: {{enabled: true, dir: "{}"}}
"#,
            shared.path().display()
        ));
        ws
    };
    let (a, b) = (workspace(), workspace());
    let start = |ws: &crate::support::Ws| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pipe"))
            .args(["run", "--quiet"])
            .current_dir(ws.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (run_a, run_b) = (start(&a), start(&b));
    for run in [run_a, run_b] {
        let out = run.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // Neither saw the other's file half written, nor failed to write its own.
        assert!(!err.contains("activation cache file"), "{err}");
    }
    let losses = |ws: &crate::support::Ws| -> Vec<f64> {
        ws.read("adapter/train_log.jsonl")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|s| s["loss"].as_f64())
            .collect()
    };
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 4, "{la:?}");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-4, "{la:?} vs {lb:?}");
    }
    let names = || -> Vec<String> {
        std::fs::read_dir(shared.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The train and valid sets' files; no write left half done.
    let files = names();
    assert!(
        files.iter().all(|n| !n.starts_with('.')),
        "temporary files left: {files:?}"
    );
    assert!(!files.is_empty());
    for name in &files {
        pipe_engine::cache::activations::check(&shared.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A third training finds every state the two wrote.
    let c = workspace();
    c.run_ok(&[]);
    let third = cache_stats(&c, "adapter/metrics.json");
    assert_eq!(third["misses"], 0, "{third}");
    assert_eq!(third["disk_loaded"], 6, "{third}");
    assert_eq!(third["disk_discarded"], 0, "{third}");
}
