//! Adapter files: mlx-lm's layout (what `mlx_lm.generate --adapter-path` reads) and
//! Hugging Face PEFT's, plus fusing an adapter into the base weights.
//!
//! | | mlx-lm | PEFT |
//! |---|---|---|
//! | weights | `adapters.safetensors` | `adapter_model.safetensors` |
//! | A | `model.layers.N.self_attn.q_proj.lora_a`, `[in, r]` | `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, `[r, in]` |
//! | B | `…q_proj.lora_b`, `[r, out]` | `…q_proj.lora_B.weight`, `[out, r]` |
//! | DoRA magnitude | `…q_proj.m`, `[out]` | `…q_proj.lora_magnitude_vector`, `[out]` |
//! | config | `adapter_config.json`: `fine_tune_type`, `num_layers`, `lora_parameters {rank, scale, dropout, keys}` | `adapter_config.json`: `peft_type`, `r`, `lora_alpha`, `target_modules`, `use_dora`, `layers_to_transform` |
//!
//! PEFT stores A and B transposed relative to mlx-lm; the scale is `lora_alpha / r` in both.

use super::lora::{AdapterSpec, Method, attach, block_linears};
use super::safetensors;
use crate::linear::Linear;
use crate::load::identity::{self, BaseModel};
use crate::models::llama::Llama;
use anyhow::{Context, bail};
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use pipe_engine::atomic_write::write_json;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// mlx-lm's `adapter_config.json` (the fields it reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlxLmAdapterConfig {
    /// `lora`, `dora` or `full`.
    pub fine_tune_type: String,
    /// Adapted blocks, counted from the top.
    pub num_layers: i32,
    /// The adapter's shape.
    pub lora_parameters: MlxLmLoraParameters,
    /// The base weights it was trained on (pipe's field; mlx-lm ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<BaseModel>,
}

/// `lora_parameters` in mlx-lm's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlxLmLoraParameters {
    /// Rank.
    pub rank: i32,
    /// `alpha / rank`.
    pub scale: f32,
    /// Dropout.
    pub dropout: f32,
    /// Adapted modules relative to a block, e.g. `self_attn.q_proj`.
    #[serde(default)]
    pub keys: Vec<String>,
}

fn module_path(name: &str) -> &'static str {
    match name {
        "q_proj" => "self_attn.q_proj",
        "k_proj" => "self_attn.k_proj",
        "v_proj" => "self_attn.v_proj",
        "o_proj" => "self_attn.o_proj",
        "gate_proj" => "mlp.gate_proj",
        "up_proj" => "mlp.up_proj",
        _ => "mlp.down_proj",
    }
}

/// The adapter tensors of `model` under mlx-lm's names (`….adapter.lora_a` → `….lora_a`).
pub fn adapter_tensors(model: &Llama) -> HashMap<String, Array> {
    model
        .trainable_parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k.replace(".adapter.", "."), v.clone()))
        .collect()
}

/// Writes `adapters.safetensors` and `adapter_config.json` in mlx-lm's layout into `dir`.
/// Each file is written atomically, so a crash leaves the old file whole.
pub fn save_mlx_lm(
    model: &Llama,
    spec: &AdapterSpec,
    method: Method,
    dir: &Path,
) -> anyhow::Result<()> {
    let layers = model.model.layers.len() as i32;
    let config = MlxLmAdapterConfig {
        fine_tune_type: match method {
            Method::Full => "full",
            Method::Dora => "dora",
            Method::Lora | Method::Qlora => "lora",
        }
        .to_owned(),
        num_layers: spec.num_layers.unwrap_or(layers).min(layers),
        lora_parameters: MlxLmLoraParameters {
            rank: spec.rank,
            scale: spec.scale,
            dropout: spec.dropout,
            keys: spec
                .targets
                .iter()
                .map(|t| module_path(t).to_owned())
                .collect(),
        },
        base_model: model.base.clone(),
    };
    let tensors = adapter_tensors(model);
    safetensors::write(&dir.join("adapters.safetensors"), &tensors, &HashMap::new())?;
    Ok(write_json(&dir.join("adapter_config.json"), &config)?)
}

/// Loads an mlx-lm adapter directory onto `model`; a full fine-tune's weights replace the
/// model's own (then there is no adapter spec).
pub fn load_mlx_lm(model: &mut Llama, dir: &Path) -> anyhow::Result<Option<AdapterSpec>> {
    let config: MlxLmAdapterConfig = read_json(&dir.join("adapter_config.json"))?;
    identity::check(dir, config.base_model.as_ref(), model.base.as_ref())?;
    let targets = config
        .lora_parameters
        .keys
        .iter()
        .map(|k| k.rsplit('.').next().unwrap_or(k).to_owned())
        .collect::<Vec<_>>();
    let spec = AdapterSpec {
        rank: config.lora_parameters.rank,
        scale: config.lora_parameters.scale,
        dropout: config.lora_parameters.dropout,
        num_layers: Some(config.num_layers),
        targets: if targets.is_empty() {
            super::lora::ALL_TARGETS
                .iter()
                .map(|t| (*t).to_owned())
                .collect()
        } else {
            targets
        },
        dora: config.fine_tune_type == "dora",
    };
    if config.fine_tune_type == "full" {
        // mlx-lm's layout for full fine-tunes: every trained weight, under its own name.
        let path = dir.join("adapters.safetensors");
        let tensors = crate::load::safetensors_header::load(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut params = model.parameters_mut().flatten();
        let mut problems = Vec::new();
        for (name, value) in tensors {
            match params.get_mut(name.as_str()) {
                Some(slot) if slot.shape() == value.shape() => **slot = value,
                Some(slot) => problems.push(format!(
                    "{name}: shape {:?}, expected {:?}",
                    value.shape(),
                    slot.shape()
                )),
                None => problems.push(format!("{name}: not a parameter of this model")),
            }
        }
        if !problems.is_empty() {
            problems.sort();
            bail!(
                "{} does not fit the model:\n  {}",
                path.display(),
                problems.join("\n  ")
            );
        }
        return Ok(None);
    }
    attach(model, &spec, 0)?;
    let path = dir.join("adapters.safetensors");
    let tensors = crate::load::safetensors_header::load(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    assign(model, tensors, &path, |k| k.to_owned())?;
    Ok(Some(spec))
}

/// Writes a full fine-tune in mlx-lm's layout: every trained weight in
/// `adapters.safetensors`, and `adapter_config.json` with `fine_tune_type: full`.
pub fn save_full(model: &Llama, dir: &Path) -> anyhow::Result<()> {
    let params = model.trainable_parameters().flatten();
    safetensors::write(
        &dir.join("adapters.safetensors"),
        params.iter().map(|(k, v)| (k.as_ref(), *v)),
        &HashMap::new(),
    )?;
    let layers = model.model.layers.len() as i32;
    let config = MlxLmAdapterConfig {
        fine_tune_type: "full".into(),
        num_layers: layers,
        lora_parameters: MlxLmLoraParameters {
            rank: 0,
            scale: 0.0,
            dropout: 0.0,
            keys: Vec::new(),
        },
        base_model: model.base.clone(),
    };
    Ok(write_json(&dir.join("adapter_config.json"), &config)?)
}

/// Puts `tensors` (renamed by `to_ours`, from file names to mlx-lm names) into the
/// model's adapters, strictly: every adapter tensor must be present with its shape, and
/// nothing may be left over.
fn assign(
    model: &mut Llama,
    tensors: HashMap<String, Array>,
    path: &Path,
    to_ours: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let mut incoming: HashMap<String, Array> =
        tensors.into_iter().map(|(k, v)| (to_ours(&k), v)).collect();
    let mut params = model.parameters_mut().flatten();
    let mut problems = Vec::new();
    for (name, slot) in params.iter_mut() {
        if !name.contains(".adapter.") {
            continue;
        }
        let key = name.replace(".adapter.", ".");
        match incoming.remove(&key) {
            Some(value) if value.shape() == slot.shape() => **slot = value,
            Some(value) => problems.push(format!(
                "{key}: shape {:?}, expected {:?}",
                value.shape(),
                slot.shape()
            )),
            None => problems.push(format!("{key}: missing")),
        }
    }
    let mut extra: Vec<_> = incoming.into_keys().collect();
    extra.sort();
    problems.extend(extra.into_iter().map(|k| format!("{k}: unexpected")));
    if !problems.is_empty() {
        problems.sort();
        bail!(
            "{} does not fit the model's adapters:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// PEFT's `adapter_config.json` (the fields pipe writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    pub task_type: String,
    /// Rank.
    pub r: i32,
    /// `scale · r`.
    pub lora_alpha: f32,
    /// Dropout.
    pub lora_dropout: f32,
    /// Projection names.
    pub target_modules: Vec<String>,
    /// Block indexes that carry adapters.
    #[serde(default)]
    pub layers_to_transform: Option<Vec<i32>>,
    /// DoRA.
    #[serde(default)]
    pub use_dora: bool,
    /// Always `none`.
    #[serde(default)]
    pub bias: String,
    /// The base model as it was named for training (PEFT's own field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_name_or_path: Option<String>,
}

const PEFT_PREFIX: &str = "base_model.model.";

/// Writes the adapter in PEFT's layout (`adapter_model.safetensors` + `adapter_config.json`).
pub fn save_peft(model: &Llama, spec: &AdapterSpec, dir: &Path) -> anyhow::Result<()> {
    let mut tensors = HashMap::new();
    for (name, value) in adapter_tensors(model) {
        let (key, value) = if let Some(base) = name.strip_suffix(".lora_a") {
            (format!("{PEFT_PREFIX}{base}.lora_A.weight"), value.t())
        } else if let Some(base) = name.strip_suffix(".lora_b") {
            (format!("{PEFT_PREFIX}{base}.lora_B.weight"), value.t())
        } else if let Some(base) = name.strip_suffix(".m") {
            (format!("{PEFT_PREFIX}{base}.lora_magnitude_vector"), value)
        } else {
            bail!(
                "cannot export `{name}` to PEFT: not a LoRA tensor (full fine-tunes have no PEFT form)"
            );
        };
        tensors.insert(key, value);
    }
    let n = model.model.layers.len() as i32;
    let first = n - spec.num_layers.unwrap_or(n).min(n);
    let config = PeftConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        r: spec.rank,
        lora_alpha: spec.scale * spec.rank as f32,
        lora_dropout: spec.dropout,
        target_modules: spec.targets.clone(),
        layers_to_transform: (first > 0).then(|| (first..n).collect()),
        use_dora: spec.dora,
        bias: "none".into(),
        base_model_name_or_path: model.base.as_ref().map(|b| b.source.clone()),
    };
    safetensors::write(
        &dir.join("adapter_model.safetensors"),
        &tensors,
        &HashMap::new(),
    )?;
    Ok(write_json(&dir.join("adapter_config.json"), &config)?)
}

/// Loads a PEFT LoRA adapter directory onto `model`.
pub fn load_peft(model: &mut Llama, dir: &Path) -> anyhow::Result<AdapterSpec> {
    let config: PeftConfig = read_json(&dir.join("adapter_config.json"))?;
    if config.peft_type != "LORA" {
        bail!(
            "{}: peft_type {} is not LORA",
            dir.display(),
            config.peft_type
        );
    }
    let n = model.model.layers.len() as i32;
    let num_layers = match &config.layers_to_transform {
        None => None,
        Some(layers) => {
            let first = *layers.iter().min().unwrap_or(&0);
            if layers.len() as i32 != n - first || layers.iter().max() != Some(&(n - 1)) {
                bail!(
                    "{}: layers_to_transform must be the last blocks of the model",
                    dir.display()
                );
            }
            Some(n - first)
        }
    };
    let spec = AdapterSpec {
        rank: config.r,
        scale: config.lora_alpha / config.r as f32,
        dropout: config.lora_dropout,
        num_layers,
        targets: config.target_modules.clone(),
        dora: config.use_dora,
    };
    attach(model, &spec, 0)?;
    let path = dir.join("adapter_model.safetensors");
    let tensors = crate::load::safetensors_header::load(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    // PEFT's A and B are transposed relative to ours.
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| {
            if k.ends_with(".lora_A.weight") || k.ends_with(".lora_B.weight") {
                (k, v.t())
            } else {
                (k, v)
            }
        })
        .collect();
    assign(model, tensors, &path, |k| {
        let k = k.strip_prefix(PEFT_PREFIX).unwrap_or(k);
        k.replace(".lora_A.weight", ".lora_a")
            .replace(".lora_B.weight", ".lora_b")
            .replace(".lora_magnitude_vector", ".m")
    })?;
    Ok(spec)
}

/// Merges every adapter into its base weight: the result is a plain float layer
/// `W + ΔW` with no adapter. A quantized base is dequantized first (re-quantizing
/// could round a small adapter away).
pub fn fuse(model: &mut Llama) -> Result<(), mlx_rs::error::Exception> {
    for layer in 0..model.model.layers.len() {
        for (_, linear) in block_linears(model, layer) {
            let Some(adapter) = linear.adapter.take() else {
                continue;
            };
            let w = linear.dense_weight()?.as_dtype(mlx_rs::Dtype::Float32)?;
            let fused = w.add(adapter.delta(&w)?)?;
            let bias = linear.bias.value.take();
            *linear = Linear::plain(fused, bias);
        }
    }
    // These are no longer the weights that were loaded: an adapter trained on them would
    // not belong to the file they came from.
    model.base = None;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid adapter config", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;
    use crate::test_support::max_abs_diff;
    use crate::train::lora::LoraConfig;
    use mlx_rs::random;

    fn tokens() -> Array {
        Array::from_slice(&[1i32, 5, 7, 9, 3, 2, 8, 4], &[2, 4])
    }

    /// A model with trained-looking (random, non-zero) adapters.
    fn adapted(dora: bool) -> (Llama, AdapterSpec) {
        let mut model = tiny_random(4, 40, 3, false).unwrap();
        let method = if dora { Method::Dora } else { Method::Lora };
        let spec = crate::train::lora::adapter_spec(
            &LoraConfig {
                rank: 4,
                num_layers: Some(2),
                ..LoraConfig::default()
            },
            method,
        );
        attach(&mut model, &spec, 1).unwrap();
        let mut key = random::key(9).unwrap();
        let mut params = model.parameters_mut().flatten();
        let mut names: Vec<_> = params
            .keys()
            .filter(|k| k.contains(".adapter."))
            .cloned()
            .collect();
        names.sort();
        for name in names {
            let (k, rest) = random::split(&key, 2).unwrap();
            key = rest;
            let p = params.get_mut(&name).unwrap();
            let noise = random::normal::<f32>(p.shape(), None, 0.02, &k).unwrap();
            **p = p.add(noise).unwrap();
        }
        drop(params);
        (model, spec)
    }

    #[test]
    fn mlx_lm_round_trip_gives_identical_logits() {
        for dora in [false, true] {
            let (mut model, spec) = adapted(dora);
            let expected = model.forward_tokens(&tokens(), None, None).unwrap();
            let dir = tempfile::tempdir().unwrap();
            save_mlx_lm(
                &model,
                &spec,
                if dora { Method::Dora } else { Method::Lora },
                dir.path(),
            )
            .unwrap();
            let config = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
            assert!(config.contains("\"num_layers\": 2"), "{config}");
            let mut fresh = tiny_random(4, 40, 3, false).unwrap();
            let loaded = load_mlx_lm(&mut fresh, dir.path()).unwrap().unwrap();
            assert_eq!(loaded.dora, dora);
            let got = fresh.forward_tokens(&tokens(), None, None).unwrap();
            assert_eq!(max_abs_diff(&expected, &got), 0.0, "dora={dora}");
        }
    }

    #[test]
    fn an_adapter_records_its_base_and_refuses_another() {
        let base = |h: &str| BaseModel {
            source: format!("model-{h}"),
            blake3: h.repeat(64),
        };
        let (mut model, spec) = adapted(false);
        model.base = Some(base("a"));
        let dir = tempfile::tempdir().unwrap();
        save_mlx_lm(&model, &spec, Method::Lora, dir.path()).unwrap();
        save_peft(&model, &spec, &dir.path().join("peft")).unwrap();
        let peft: PeftConfig = read_json(&dir.path().join("peft/adapter_config.json")).unwrap();
        assert_eq!(peft.base_model_name_or_path.as_deref(), Some("model-a"));

        let mut same = tiny_random(4, 40, 3, false).unwrap();
        same.base = Some(base("a"));
        assert!(load_mlx_lm(&mut same, dir.path()).is_ok());
        // Built in memory (no file to know it by): nothing to compare with.
        let mut unknown = tiny_random(4, 40, 3, false).unwrap();
        assert!(load_mlx_lm(&mut unknown, dir.path()).is_ok());
        let mut other = tiny_random(4, 40, 3, false).unwrap();
        other.base = Some(base("b"));
        let message = format!("{:#}", load_mlx_lm(&mut other, dir.path()).unwrap_err());
        assert!(
            message.contains("trained on `model-a`") && message.contains("`model-b`"),
            "{message}"
        );
        // Fused weights are no longer the file's: they carry no base.
        fuse(&mut same).unwrap();
        assert_eq!(same.base, None);
    }

    #[test]
    fn full_fine_tunes_round_trip_in_mlx_lm_layout() {
        let mut model = tiny_random(4, 40, 3, false).unwrap();
        model.unfreeze_parameters(true);
        {
            let mut params = model.parameters_mut().flatten();
            let p = params.get_mut("model.layers.1.mlp.up_proj.weight").unwrap();
            **p = p.multiply(mlx_rs::array!(1.5f32)).unwrap();
        }
        let expected = model.forward_tokens(&tokens(), None, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_full(&model, dir.path()).unwrap();
        let mut fresh = tiny_random(4, 40, 3, false).unwrap();
        assert!(
            max_abs_diff(
                &expected,
                &fresh.forward_tokens(&tokens(), None, None).unwrap()
            ) > 0.0
        );
        assert!(load_mlx_lm(&mut fresh, dir.path()).unwrap().is_none());
        let got = fresh.forward_tokens(&tokens(), None, None).unwrap();
        assert_eq!(max_abs_diff(&expected, &got), 0.0);
    }

    #[test]
    fn peft_round_trip_transposes_and_gives_identical_logits() {
        for dora in [false, true] {
            let (mut model, spec) = adapted(dora);
            let expected = model.forward_tokens(&tokens(), None, None).unwrap();
            let dir = tempfile::tempdir().unwrap();
            save_peft(&model, &spec, dir.path()).unwrap();
            let tensors =
                Array::load_safetensors(dir.path().join("adapter_model.safetensors")).unwrap();
            let a = &tensors["base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"];
            assert_eq!(a.shape(), &[4, 64], "PEFT's A is [r, in]");
            let config: PeftConfig = read_json(&dir.path().join("adapter_config.json")).unwrap();
            assert_eq!(config.layers_to_transform, Some(vec![1, 2]));
            assert_eq!(config.lora_alpha, 80.0);
            let mut fresh = tiny_random(4, 40, 3, false).unwrap();
            load_peft(&mut fresh, dir.path()).unwrap();
            let got = fresh.forward_tokens(&tokens(), None, None).unwrap();
            assert_eq!(max_abs_diff(&expected, &got), 0.0, "dora={dora}");
        }
    }

    #[test]
    fn a_wrong_adapter_file_lists_every_mismatch() {
        let (model, spec) = adapted(false);
        let dir = tempfile::tempdir().unwrap();
        save_mlx_lm(&model, &spec, Method::Lora, dir.path()).unwrap();
        let mut smaller = tiny_random(4, 40, 3, false).unwrap();
        // Claim rank 2: every tensor's shape is wrong.
        let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            text.replace("\"rank\": 4", "\"rank\": 2"),
        )
        .unwrap();
        let err = load_mlx_lm(&mut smaller, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
        assert!(
            err.contains("model.layers.2.self_attn.q_proj.lora_a: shape [64, 4], expected [64, 2]"),
            "{err}"
        );
    }

    #[test]
    fn fused_model_equals_base_plus_adapter() {
        for dora in [false, true] {
            let (mut model, _) = adapted(dora);
            let expected = model.forward_tokens(&tokens(), None, None).unwrap();
            fuse(&mut model).unwrap();
            assert!(
                model
                    .trainable_parameters()
                    .flatten()
                    .keys()
                    .all(|k| !k.contains("adapter"))
            );
            let got = model.forward_tokens(&tokens(), None, None).unwrap();
            let d = max_abs_diff(&expected, &got);
            assert!(d < 1e-4, "dora={dora}: {d}");
        }
    }
}
