//! What the engine knows of the `monitor` kind: its configuration
//! ([`pipe_schema::monitor`]) and the paths it names. It scores models, so it runs in
//! `pipe-mlx` (`pipe_mlx_core::stages::monitor`); the rest of a night is
//! [`crate::monitor`].

use crate::history::outcome::Outcome;
use pipe_schema::FieldError;
use pipe_schema::monitor::MonitorConfig;
use serde_json::Value;

/// The `monitor` kind.
pub struct Monitor;

impl super::StageKind for Monitor {
    fn name(&self) -> &'static str {
        "monitor"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "score a model on a pinned probe set and new data, detect regressions, retrain and \
         promote"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let config = check(with)?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut deps = vec![path(&config.probe.path)];
        deps.extend(config.new_data.as_deref().map(path));
        deps.extend(config.adapter.as_deref().map(path));
        deps.extend(super::model_dep(&config.model));
        Ok(super::Resolved {
            outs: vec![path(&config.out)],
            deps,
            config: serde_json::to_value(&config).expect("a monitor config serializes"),
            uses_mlx: true,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<MonitorConfig>()
    }
    fn outcome(&self, config: &Value, root: &std::path::Path) -> Outcome {
        use crate::history::record::ArtifactRole;
        let mut o = Outcome::default();
        if let Ok(config) = serde_json::from_value::<MonitorConfig>(config.clone()) {
            let out = config.out.display().to_string();
            o.add_metrics_file(root, &format!("{out}/metrics.json"), "");
            o.add_artifact(root, &format!("{out}/monitor.json"), ArtifactRole::Other);
        }
        o
    }
    /// A registry alias can move between runs without any file of the workspace changing
    /// (a promotion, `pipe model promote`): such a monitor runs every time (an unchanged
    /// model and data are then not scored again: see `crate::monitor::night`). A monitor
    /// of a folder is cached like any stage.
    fn reads_external_state_of(&self, config: &Value) -> bool {
        config.get("registry").is_some_and(|r| !r.is_null())
    }
}

/// Parses and checks a monitor stage's `with:`.
pub fn check(with: &Value) -> Result<MonitorConfig, FieldError> {
    let config: MonitorConfig = super::parse_with(with)?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, StageKind};
    use serde_json::json;

    #[test]
    fn a_registry_monitor_always_runs_a_folder_monitor_is_cached() {
        let with = |watch: Value| {
            let mut v = json!({
                "model": "smollm2-135m-instruct",
                "probe": {"path": "probe.jsonl", "blake3": "0".repeat(64)},
                "new_data": "data/test.jsonl",
                "history": "monitor/h.jsonl",
                "out": "runs/monitor",
            });
            v.as_object_mut()
                .unwrap()
                .extend(watch.as_object().unwrap().clone());
            v
        };
        use serde_json::Value;
        let folder = Kind::MONITOR
            .resolve(&with(json!({"adapter": "runs/lora"})))
            .unwrap();
        assert_eq!(folder.deps, ["probe.jsonl", "data/test.jsonl", "runs/lora"]);
        assert_eq!(folder.outs, ["runs/monitor"]);
        assert!(folder.uses_mlx);
        assert!(!super::Monitor.reads_external_state_of(&folder.config));
        let registry = Kind::MONITOR
            .resolve(&with(json!({"registry": "past@champion"})))
            .unwrap();
        assert!(super::Monitor.reads_external_state_of(&registry.config));
        let e = Kind::MONITOR
            .resolve(&with(json!({"probe": {"path": "p", "blake3": "short"}})))
            .unwrap_err();
        assert!(e.to_string().contains("probe.blake3"), "{e}");
    }
}
