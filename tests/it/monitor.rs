//! The `monitor` kind and the nightly loop on the real model (SmolLM2-135M-Instruct)
//! against a real MLflow registry: a deploy of `registry: NAME@ALIAS` in the same run as
//! the stage that moves the alias.

use crate::support::Ws;
use crate::tracking::{free_port, start_server_with};
use pipe_engine::tracking::client::Client;
use serde_json::Value;

fn mlflow() -> crate::tracking::Server {
    let python = crate::python::venv("mlflow-3.17.2", &[("mlflow", "3.17.2")], &[]);
    start_server_with(&python, free_port(), None, &[])
}

fn shipped(ws: &Ws, rel: &str) {
    let text = std::fs::read_to_string(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    ws.file(rel, &text);
}

/// The quickstart with a deploy of the registry's champion in the same run, after its
/// compare stage (`needs`): the deploy must release this run's adapter, not the champion
/// the previous run left (the alias moves in the background sync; a stage reading the
/// registry waits for it).
#[test]
fn a_deploy_of_the_alias_in_the_same_run_gets_the_new_champion() {
    let server = mlflow();
    let ws = Ws::new();
    shipped(&ws, "pipelines/quickstart.yaml");
    let mut yaml = ws.read("pipelines/quickstart.yaml");
    yaml.push_str(
        "\n  deploy:\n    kind: deploy\n    needs: [compare]\n    with: {registry: quickstart@champion, \
         model: assistant, mode: config, out: runs/release}\n",
    );
    ws.file("pipelines/quickstart.yaml", &yaml);
    let client = Client::new(&server.uri);
    for iters in ["3", "4"] {
        let out = ws
            .pipe()
            .env("MLFLOW_TRACKING_URI", &server.uri)
            .args(["run", "pipelines/quickstart.yaml", "--set"])
            .arg(format!("train.iters={iters}"))
            .args(["--set", "eval.examples=4"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let champion = client.version_by_alias("quickstart", "champion").unwrap();
        let record: Value = serde_json::from_str(&ws.read("runs/release/deploy.json")).unwrap();
        let source = record["source"].as_str().unwrap();
        assert!(
            source.contains(&format!("(version {} of", champion.version)),
            "iters={iters}: deployed {source}, champion is version {}",
            champion.version
        );
        let release = ws
            .path("runs/release/adapters")
            .join(record["version"].as_str().unwrap());
        assert_eq!(
            std::fs::read(release.join("adapters.safetensors")).unwrap(),
            std::fs::read(ws.path("runs/quickstart/lora/adapters.safetensors")).unwrap(),
            "iters={iters}: the released adapter is not this run's"
        );
    }
    assert_eq!(client.model_versions("quickstart").unwrap().len(), 2);
}
