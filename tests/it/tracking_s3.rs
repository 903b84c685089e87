//! Large artifacts go to MLflow in parts when its artifact store is a cloud store: a real
//! `mlflow server` proxying to a real S3 API (moto's server, PyPI `moto[server]`), both in a
//! venv in the user cache. The object the store ends up with was assembled from parts (its
//! ETag says how many) and holds the local bytes.

use crate::support::Ws;
use crate::tracking::{free_port, level, runs, start_server_with};
use pipe_engine::tracking::client::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "pipe-artifacts";

/// moto's S3 server, stopped on drop.
pub(crate) struct S3 {
    child: Child,
    pub(crate) endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials and endpoint for boto3, in MLflow's server and in the checks here.
pub(crate) fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MLFLOW_S3_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "pipe-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "pipe-test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
    ]
}

/// Runs a boto3 snippet against the store; its stdout.
pub(crate) fn boto3(python: &std::path::Path, endpoint: &str, code: &str) -> String {
    let script = format!(
        "import boto3, os\ns3 = boto3.client('s3', endpoint_url=os.environ['MLFLOW_S3_ENDPOINT_URL'])\n{code}"
    );
    let mut cmd = Command::new(python);
    cmd.args(["-c", &script]);
    for (k, v) in s3_env(endpoint) {
        cmd.env(k, v);
    }
    crate::python::run(&mut cmd, "boto3")
}

/// The venv with moto's server and boto3 (shared with the MLflow S3 test: one install).
pub(crate) fn moto_python() -> std::path::PathBuf {
    crate::python::venv(
        "mlflow-3.17.2-s3",
        &[("mlflow", "3.17.2"), ("boto3", "1.44.8"), ("moto", "5.2.5")],
        &["moto[server]==5.2.5"],
    )
}

pub(crate) fn start_s3(python: &std::path::Path) -> S3 {
    let port = free_port();
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        // Parts of 1 MiB keep the test small; real S3 wants 5 MiB (pipe's default is 10).
        .env("S3_UPLOAD_PART_MIN_SIZE", "262144")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto server");
    let s3 = S3 {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    boto3(
        python,
        &s3.endpoint,
        &format!("s3.create_bucket(Bucket='{BUCKET}')"),
    );
    s3
}

#[test]
fn a_large_artifact_goes_to_an_s3_backed_mlflow_in_parts_and_arrives_whole() {
    let python = moto_python();
    let s3 = start_s3(&python);
    let env = s3_env(&s3.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_server_with(&python, free_port(), Some(&format!("s3://{BUCKET}/")), &env);

    // A stage whose log (kept with the run, uploaded as `stage.log`) is about 3.7 MB.
    let ws = Ws::new();
    ws.pipeline(&format!(
        r#"name: big-logs
tracking: {{mlflow: "{}", register: false}}
stages:
  chatty:
    cmd: python3 -c "[print('line %06d ' % i + 'x' * 60) for i in range(52000)]"
"#,
        server.uri
    ));
    ws.pipe()
        .env("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1048576")
        .env("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", "1048576")
        .arg("run")
        .assert()
        .success();

    let client = Client::new(&server.uri);
    let experiment = client.experiment_id("big-logs").unwrap();
    let all = runs(&client, &experiment);
    let stages = level(&all, "stage");
    assert_eq!(stages.len(), 1);
    let run = &stages[0].0;
    let (run_id, artifact_uri) = (
        run["run_id"].as_str().unwrap(),
        run["artifact_uri"].as_str().unwrap(),
    );

    // Through the proxy: the bytes of the log the run kept.
    let history = ws.path("runs/history");
    let record = std::fs::read_dir(&history)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let local = std::fs::read(record.join("logs/chatty.log")).unwrap();
    assert!(local.len() > 3_500_000, "{} bytes", local.len());
    client
        .download(artifact_uri, "stage.log", &ws.path("back.log"))
        .unwrap();
    assert_eq!(std::fs::read(ws.path("back.log")).unwrap(), local);

    // In the store: one object, assembled from 4 parts of 1 MiB (S3 ETags end in -<parts>).
    let etag = boto3(
        &python,
        &s3.endpoint,
        &format!(
            "print(s3.head_object(Bucket='{BUCKET}', Key='{experiment}/{run_id}/artifacts/stage.log')['ETag'])"
        ),
    );
    let parts = local.len().div_ceil(1 << 20);
    assert!(
        etag.trim()
            .trim_matches('"')
            .ends_with(&format!("-{parts}")),
        "not a multipart object: ETag {etag}"
    );
}
