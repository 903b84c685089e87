//! A thin typed client of MLflow's REST API (`/api/2.0/mlflow/...`) and its artifact proxy
//! (`/api/2.0/mlflow-artifacts/...`), on the HTTP client the engine already uses. No
//! maintained Rust client exists; this covers what pipe logs: experiments, runs, batched
//! params/metrics/tags, artifacts, and the model registry with aliases.
//!
//! Credentials come from `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME` /
//! `MLFLOW_TRACKING_PASSWORD` (basic), as MLflow's own client reads them. They are sent in
//! headers only, and every message this module produces names the server without them.
//!
//! Transient failures (no connection, 429, 5xx) are retried with exponential backoff; a
//! server that does not answer within [`Client::timeout`] counts as down, so a slow server
//! delays only the background sync, never a stage.

use super::multipart::{self, Policy};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The most entities MLflow takes in one `log-batch` call, per kind and in all.
pub const BATCH_METRICS: usize = 1000;
/// Params per `log-batch`.
pub const BATCH_PARAMS: usize = 100;
/// Tags per `log-batch`.
pub const BATCH_TAGS: usize = 100;
/// The longest param value MLflow stores (longer ones are cut, with a marker).
pub const PARAM_VALUE_MAX: usize = 6000;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The server could not be reached (or timed out) after the retries.
    #[error("MLflow at {server} is unreachable: {message}")]
    Unreachable {
        /// The server, without credentials.
        server: String,
        /// What the transport said.
        message: String,
    },
    /// The server answered with an error.
    #[error("MLflow at {server} refused {call}: {status} {code}: {message}")]
    Refused {
        /// The server, without credentials.
        server: String,
        /// The call (`runs/create`).
        call: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's error code (`RESOURCE_DOES_NOT_EXIST`), when it sent one.
        code: String,
        /// MLflow's message.
        message: String,
    },
    /// A local file could not be read for upload or written after download.
    #[error("{0}")]
    Io(String),
}

impl MlflowError {
    /// Whether the server said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, MlflowError::Refused { status: 404, .. })
            || matches!(self, MlflowError::Refused { code, .. } if code == "RESOURCE_DOES_NOT_EXIST")
    }

    /// Whether the server said the thing exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, MlflowError::Refused { code, .. } if code == "RESOURCE_ALREADY_EXISTS")
    }
}

/// How to authenticate.
#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in debug output.
        f.write_str(match self {
            Auth::None => "none",
            Auth::Bearer(_) => "bearer (redacted)",
            Auth::Basic(_) => "basic (redacted)",
        })
    }
}

/// A connection to one MLflow server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    shown: String,
    auth: Auth,
    agent: ureq::Agent,
    retries: u32,
    multipart: Policy,
}

/// A request body.
enum Payload {
    Empty,
    Json(String),
    /// Streamed from disk, with its length.
    File(std::path::PathBuf),
}

/// A failed attempt: worth retrying (transport), or not (a local file).
enum SendError {
    Transport(String),
    Local(String),
}

/// A run as MLflow describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: String,
    /// Where its artifacts go (`mlflow-artifacts:/1/<run>/artifacts`).
    pub artifact_uri: String,
    /// RUNNING, FINISHED, FAILED, KILLED.
    #[serde(default)]
    pub status: String,
}

/// One model version.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    /// The registered model.
    pub name: String,
    /// Its number, as text.
    pub version: String,
    /// Where its files are.
    #[serde(default)]
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    /// Aliases pointing at it.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl ModelVersion {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A tag or param.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct KeyValue {
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// One metric point.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metric {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The step.
    pub step: u64,
}

/// An artifact listing entry.
#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    /// Relative to the listed folder's root.
    pub path: String,
    /// Whether it is a folder.
    #[serde(default)]
    pub is_dir: bool,
    /// Bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
}

impl Client {
    /// A client of the server at `uri` (`http://host:port`), with credentials from the
    /// environment.
    pub fn new(uri: &str) -> Self {
        let auth = if let Ok(token) = std::env::var("MLFLOW_TRACKING_TOKEN") {
            Auth::Bearer(token)
        } else if let (Ok(user), Ok(pass)) = (
            std::env::var("MLFLOW_TRACKING_USERNAME"),
            std::env::var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            Auth::Basic(base64(&format!("{user}:{pass}")))
        } else {
            Auth::None
        };
        Self::with_auth(uri, auth)
    }

    fn with_auth(uri: &str, auth: Auth) -> Self {
        let base = uri.trim_end_matches('/').to_owned();
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            shown: redact(&base),
            base,
            auth,
            agent,
            retries: 3,
            multipart: Policy::from_env(),
        }
    }

    /// The same client, sending files in parts by `policy` (see [`multipart`]).
    pub fn with_multipart(mut self, policy: Policy) -> Self {
        self.multipart = policy;
        self
    }

    /// The same client, trying each call once (for probes that must be quick).
    pub fn without_retries(mut self) -> Self {
        self.retries = 0;
        self
    }

    /// The server as shown in messages (credentials in the URI removed).
    pub fn server(&self) -> &str {
        &self.shown
    }

    /// The per-call limit beyond which a server counts as down.
    pub fn timeout() -> Duration {
        Duration::from_secs(60)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let payload = body.map_or(Payload::Empty, |b| Payload::Json(b.to_string()));
        let (status, bytes) = self.send(method, &url, path, &payload)?;
        self.json_of(path, status, &bytes)
    }

    /// Sends with retries; the status and body of the last answer.
    fn send(
        &self,
        method: &str,
        url: &str,
        call: &str,
        payload: &Payload,
    ) -> Result<(u16, Vec<u8>), MlflowError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            let outcome = self.send_once(method, url, payload);
            let retry = match &outcome {
                // 501 (Not Implemented) is an answer, not a hiccup.
                Ok((status, _)) => *status == 429 || (*status >= 500 && *status != 501),
                Err(SendError::Transport(_)) => true,
                Err(SendError::Local(_)) => false,
            };
            if !retry || attempt >= self.retries {
                return outcome.map_err(|e| match e {
                    SendError::Transport(e) => MlflowError::Unreachable {
                        server: self.shown.clone(),
                        message: format!(
                            "{}: {}",
                            call.split('?').next().unwrap_or(call),
                            redact(&e)
                        ),
                    },
                    SendError::Local(e) => MlflowError::Io(e),
                });
            }
            attempt += 1;
            std::thread::sleep(delay);
            delay *= 2;
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        payload: &Payload,
    ) -> Result<(u16, Vec<u8>), SendError> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        builder = match &self.auth {
            Auth::None => builder,
            Auth::Bearer(t) => builder.header("Authorization", format!("Bearer {t}")),
            Auth::Basic(b) => builder.header("Authorization", format!("Basic {b}")),
        };
        let local = |e: ureq::http::Error| SendError::Local(format!("bad request to MLflow: {e}"));
        let response = match payload {
            Payload::Empty => self.agent.run(builder.body(()).map_err(local)?),
            Payload::Json(text) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(text.as_bytes())
                    .map_err(local)?,
            ),
            Payload::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    SendError::Local(format!("cannot read {}: {e}", path.display()))
                })?;
                self.agent.run(builder.body(file).map_err(local)?)
            }
        };
        let mut response = response.map_err(|e| SendError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| SendError::Transport(e.to_string()))?;
        Ok((status, bytes))
    }

    fn json_of(&self, call: &str, status: u16, bytes: &[u8]) -> Result<Value, MlflowError> {
        let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(MlflowError::Refused {
            server: self.shown.clone(),
            call: call.split('?').next().unwrap_or(call).to_owned(),
            status,
            code: value["error_code"].as_str().unwrap_or_default().to_owned(),
            message: value["message"].as_str().map_or_else(
                || String::from_utf8_lossy(bytes).chars().take(300).collect(),
                str::to_owned,
            ),
        })
    }

    /// The id of experiment `name`, created if it does not exist.
    pub fn experiment_id(&self, name: &str) -> Result<String, MlflowError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            query_escape(name)
        );
        match self.call("GET", &path, None) {
            Ok(v) => Ok(v["experiment"]["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            Err(e) if e.is_not_found() => {
                // MLflow 3's UI opens an experiment without this tag as a GenAI one (traces,
                // no runs table); fine-tuning runs belong in the model-training view.
                let body = json!({ "name": name, "tags": [
                    { "key": "mlflow.experimentKind", "value": "custom_model_development" }
                ]});
                match self.call("POST", "experiments/create", Some(&body)) {
                    Ok(v) => Ok(v["experiment_id"].as_str().unwrap_or_default().to_owned()),
                    // Created by a concurrent sync between our two calls.
                    Err(e) if e.is_already_exists() => self.experiment_id(name),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The tags of experiment `name`.
    pub fn experiment_tags(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, MlflowError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            query_escape(name)
        );
        let v = self.call("GET", &path, None)?;
        let tags: Vec<KeyValue> =
            serde_json::from_value(v["experiment"]["tags"].clone()).unwrap_or_default();
        Ok(tags.into_iter().map(|t| (t.key, t.value)).collect())
    }

    /// Starts a run.
    pub fn create_run(
        &self,
        experiment_id: &str,
        name: &str,
        start_ms: u64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, MlflowError> {
        let v = self.call(
            "POST",
            "runs/create",
            Some(&json!({
                "experiment_id": experiment_id, "run_name": name,
                "start_time": start_ms, "tags": tags,
            })),
        )?;
        serde_json::from_value(v["run"]["info"].clone())
            .map_err(|e| MlflowError::Io(format!("runs/create answered oddly: {e}")))
    }

    /// The run `run_id`.
    pub fn get_run(&self, run_id: &str) -> Result<(RunInfo, Value), MlflowError> {
        let v = self.call(
            "GET",
            &format!("runs/get?run_id={}", query_escape(run_id)),
            None,
        )?;
        let info = serde_json::from_value(v["run"]["info"].clone())
            .map_err(|e| MlflowError::Io(format!("runs/get answered oddly: {e}")))?;
        Ok((info, v["run"].clone()))
    }

    /// Runs of an experiment matching an MLflow filter (`tags.\`pipe.run\` = 'x'`).
    pub fn search_runs(
        &self,
        experiment_id: &str,
        filter: &str,
    ) -> Result<Vec<Value>, MlflowError> {
        let mut runs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": [experiment_id], "filter": filter, "max_results": 1000,
            });
            if let Some(t) = &token {
                body["page_token"] = Value::String(t.clone());
            }
            let v = self.call("POST", "runs/search", Some(&body))?;
            runs.extend(v["runs"].as_array().cloned().unwrap_or_default());
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(runs),
            }
        }
    }

    /// Sets a run's status and end time.
    pub fn end_run(&self, run_id: &str, status: &str, end_ms: u64) -> Result<(), MlflowError> {
        self.call(
            "POST",
            "runs/update",
            Some(&json!({ "run_id": run_id, "status": status, "end_time": end_ms })),
        )
        .map(drop)
    }

    /// Logs params, metrics and tags, in as many `log-batch` calls as MLflow's limits need.
    pub fn log_batch(
        &self,
        run_id: &str,
        params: &[KeyValue],
        metrics: &[Metric],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        for chunk in params.chunks(BATCH_PARAMS) {
            self.batch(run_id, chunk, &[], &[])?;
        }
        for chunk in tags.chunks(BATCH_TAGS) {
            self.batch(run_id, &[], &[], chunk)?;
        }
        for chunk in metrics.chunks(BATCH_METRICS) {
            self.batch(run_id, &[], chunk, &[])?;
        }
        Ok(())
    }

    fn batch(
        &self,
        run_id: &str,
        params: &[KeyValue],
        metrics: &[Metric],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        self.call(
            "POST",
            "runs/log-batch",
            Some(&json!({ "run_id": run_id, "params": params, "metrics": metrics, "tags": tags })),
        )
        .map(drop)
    }

    /// A metric's every point.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Value>, MlflowError> {
        let v = self.call(
            "GET",
            &format!(
                "metrics/get-history?run_id={}&metric_key={}&max_results=25000",
                query_escape(run_id),
                query_escape(key)
            ),
            None,
        )?;
        Ok(v["metrics"].as_array().cloned().unwrap_or_default())
    }

    /// The proxy URL of an artifact under a run's `mlflow-artifacts:` URI.
    fn artifact_url(&self, artifact_uri: &str, rel: &str) -> Result<String, MlflowError> {
        self.proxy_url("artifacts", artifact_uri, rel)
    }

    /// The URL of `rel` under a run's `mlflow-artifacts:` URI on one of the proxy's routes
    /// (`artifacts`, `mpu/create`, ...).
    fn proxy_url(&self, route: &str, artifact_uri: &str, rel: &str) -> Result<String, MlflowError> {
        let tail = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .map(|t| t.trim_start_matches('/'))
            .ok_or_else(|| {
                MlflowError::Io(format!(
                    "the run's artifact location `{artifact_uri}` is not served by the tracking \
                     server; start it with `--serve-artifacts` so pipe can upload through it"
                ))
            })?;
        let mut url = format!("{}/api/2.0/mlflow-artifacts/{route}/{tail}", self.base);
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            url.push('/');
            url.push_str(&query_escape(seg));
        }
        Ok(url)
    }

    /// Uploads one file as `rel` under the run's artifacts: in parts when it is large and
    /// the server's store takes parts, else streamed from disk in one PUT.
    pub fn upload(&self, artifact_uri: &str, rel: &str, file: &Path) -> Result<(), MlflowError> {
        let size = std::fs::metadata(file)
            .map_err(|e| MlflowError::Io(format!("cannot read {}: {e}", file.display())))?
            .len();
        if let Some(parts) = self.multipart.parts(size) {
            match self.upload_in_parts(artifact_uri, rel, file, &parts) {
                Err(e) if multipart::unsupported(&e) => {}
                done => return done.map(drop),
            }
        }
        let url = self.artifact_url(artifact_uri, rel)?;
        let (status, bytes) = self.send(
            "PUT",
            &url,
            "artifact upload",
            &Payload::File(file.to_owned()),
        )?;
        self.json_of("artifact upload", status, &bytes).map(drop)
    }

    /// Uploads `file` as `rel` in `parts` through the proxy's multipart routes; `Ok(n)` is
    /// the number of parts sent. An upload that fails after `create` is aborted, so the
    /// store keeps no orphaned parts.
    pub fn upload_in_parts(
        &self,
        artifact_uri: &str,
        rel: &str,
        file: &Path,
        parts: &[(u64, u64)],
    ) -> Result<usize, MlflowError> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        // The server names the object after the last segment of `path`.
        let create = self.post_json(
            &self.proxy_url("mpu/create", artifact_uri, dir)?,
            "multipart create",
            &json!({"path": name, "num_parts": parts.len()}),
        )?;
        let created: multipart::Created = serde_json::from_value(create).map_err(|e| {
            MlflowError::Io(format!(
                "MLflow's multipart create answer is not understood: {e}"
            ))
        })?;
        let upload_id = created.upload_id.clone().unwrap_or_default();
        let sent = self.send_parts(file, parts, &created).and_then(|done| {
            self.post_json(
                &self.proxy_url("mpu/complete", artifact_uri, dir)?,
                "multipart complete",
                &json!({"path": name, "upload_id": upload_id, "parts": done}),
            )
        });
        if let Err(e) = sent {
            let _ = self.post_json(
                &self.proxy_url("mpu/abort", artifact_uri, dir)?,
                "multipart abort",
                &json!({"path": name, "upload_id": upload_id}),
            );
            return Err(e);
        }
        Ok(parts.len())
    }

    /// PUTs each part to its presigned URL; the parts as `complete` wants them.
    fn send_parts(
        &self,
        file: &Path,
        parts: &[(u64, u64)],
        created: &multipart::Created,
    ) -> Result<Vec<Value>, MlflowError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut credentials = created.credentials.clone();
        credentials.sort_by_key(|c| c.part_number);
        if credentials.len() != parts.len() {
            return Err(MlflowError::Io(format!(
                "MLflow handed out {} upload URLs for {} parts",
                credentials.len(),
                parts.len()
            )));
        }
        let unreadable =
            |e: std::io::Error| MlflowError::Io(format!("cannot read {}: {e}", file.display()));
        let mut reader = std::fs::File::open(file).map_err(unreadable)?;
        let mut done = Vec::with_capacity(parts.len());
        for (credential, &(offset, len)) in credentials.iter().zip(parts) {
            let mut chunk = vec![0; len as usize];
            reader.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
            reader.read_exact(&mut chunk).map_err(unreadable)?;
            let etag = self.put_presigned(credential, &chunk)?;
            done.push(json!({
                "part_number": credential.part_number,
                "etag": etag,
                "url": credential.url,
            }));
        }
        Ok(done)
    }

    /// One part to the store's presigned URL: the store's own headers and none of the
    /// tracking server's credentials. Its ETag, which `complete` needs.
    fn put_presigned(
        &self,
        credential: &multipart::Credential,
        chunk: &[u8],
    ) -> Result<String, MlflowError> {
        let store = redact(credential.url.split('?').next().unwrap_or_default());
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            let mut request = ureq::http::Request::builder()
                .method("PUT")
                .uri(&credential.url);
            for (k, v) in &credential.headers {
                request = request.header(k, v);
            }
            let request = request
                .body(chunk)
                .map_err(|e| MlflowError::Io(format!("bad part upload request: {e}")))?;
            let outcome = self.agent.run(request);
            let transient = match &outcome {
                Ok(r) => r.status().as_u16() == 429 || r.status().as_u16() >= 500,
                Err(_) => true,
            };
            if transient && attempt < self.retries {
                attempt += 1;
                std::thread::sleep(delay);
                delay *= 2;
                continue;
            }
            let mut response = outcome.map_err(|e| MlflowError::Unreachable {
                server: store.clone(),
                message: format!(
                    "part {}: {}",
                    credential.part_number,
                    redact(&e.to_string())
                ),
            })?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                let body = response.body_mut().read_to_string().unwrap_or_default();
                return Err(MlflowError::Refused {
                    server: store,
                    call: format!("part {} upload", credential.part_number),
                    status,
                    code: String::new(),
                    message: body.chars().take(300).collect(),
                });
            }
            return Ok(response
                .headers()
                .get("ETag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned());
        }
    }

    fn post_json(&self, url: &str, call: &str, body: &Value) -> Result<Value, MlflowError> {
        let (status, bytes) = self.send("POST", url, call, &Payload::Json(body.to_string()))?;
        self.json_of(call, status, &bytes)
    }

    /// Downloads artifact `rel` of a run into `dest`.
    pub fn download(&self, artifact_uri: &str, rel: &str, dest: &Path) -> Result<(), MlflowError> {
        let url = self.artifact_url(artifact_uri, rel)?;
        let (status, bytes) = self.send("GET", &url, "artifact download", &Payload::Empty)?;
        if !(200..300).contains(&status) {
            return self.json_of("artifact download", status, &bytes).map(drop);
        }
        crate::atomic_write::write_atomic(dest, &bytes)
            .map_err(|e| MlflowError::Io(format!("cannot write {}: {e}", dest.display())))
    }

    /// The files under `rel` of a run's artifacts (one level).
    pub fn list_artifacts(
        &self,
        artifact_uri: &str,
        rel: &str,
    ) -> Result<Vec<FileInfo>, MlflowError> {
        let tail = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .map(|t| t.trim_start_matches('/'))
            .unwrap_or_default();
        let path = if rel.is_empty() {
            tail.to_owned()
        } else {
            format!("{tail}/{rel}")
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts?path={}",
            self.base,
            query_escape(&path)
        );
        let (status, bytes) = self.send("GET", &url, "artifact listing", &Payload::Empty)?;
        let v = self.json_of("artifact listing", status, &bytes)?;
        Ok(v["files"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| serde_json::from_value(f).ok())
            .collect())
    }

    /// Creates registered model `name` unless it exists.
    pub fn ensure_registered_model(&self, name: &str) -> Result<(), MlflowError> {
        match self.call(
            "POST",
            "registered-models/create",
            Some(&json!({ "name": name })),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Registers a new version of `name` from a run's artifacts.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[KeyValue],
    ) -> Result<ModelVersion, MlflowError> {
        let v = self.call(
            "POST",
            "model-versions/create",
            Some(&json!({ "name": name, "source": source, "run_id": run_id, "tags": tags })),
        )?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| MlflowError::Io(format!("model-versions/create answered oddly: {e}")))
    }

    /// Every version of `name`.
    pub fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, MlflowError> {
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "model-versions/search?filter={}&max_results=1000",
                query_escape(&filter)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&page_token={}", query_escape(t)));
            }
            let v = self.call("GET", &path, None)?;
            out.extend(
                v["model_versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|m| serde_json::from_value::<ModelVersion>(m).ok()),
            );
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort_by_key(|m| m.version.parse::<u64>().unwrap_or(0));
        // Search results leave `aliases` empty; the registered model lists them.
        if !out.is_empty() {
            let model = self.call(
                "GET",
                &format!("registered-models/get?name={}", query_escape(name)),
                None,
            )?;
            for alias in model["registered_model"]["aliases"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let (Some(a), Some(v)) = (alias["alias"].as_str(), alias["version"].as_str())
                else {
                    continue;
                };
                if let Some(m) = out
                    .iter_mut()
                    .find(|m| m.version == v && !m.aliases.iter().any(|x| x == a))
                {
                    m.aliases.push(a.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Version `version` of `name`.
    pub fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, MlflowError> {
        let v = self.call(
            "GET",
            &format!(
                "model-versions/get?name={}&version={}",
                query_escape(name),
                query_escape(version)
            ),
            None,
        )?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| MlflowError::Io(format!("model-versions/get answered oddly: {e}")))
    }

    /// Points `alias` of `name` at `version`.
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), MlflowError> {
        self.call(
            "POST",
            "registered-models/alias",
            Some(&json!({ "name": name, "alias": alias, "version": version })),
        )
        .map(drop)
    }

    /// The version `alias` of `name` points at.
    pub fn version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion, MlflowError> {
        let v = self.call(
            "GET",
            &format!(
                "registered-models/alias?name={}&alias={}",
                query_escape(name),
                query_escape(alias)
            ),
            None,
        )?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| MlflowError::Io(format!("registered-models/alias answered oddly: {e}")))
    }
}

/// `uri` without `user:password@`.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://{}", &uri[..scheme], &uri[at + 1..])
        }
        _ => uri.to_owned(),
    }
}

/// Percent-encodes a query value or path segment.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(text: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_messages() {
        assert_eq!(redact("http://u:p@host:5000"), "http://host:5000");
        assert_eq!(redact("http://host:5000"), "http://host:5000");
        let c = Client::with_auth("http://u:secret@127.0.0.1:1", Auth::Bearer("tok".into()))
            .without_retries();
        let e = c.experiment_id("x").unwrap_err().to_string();
        assert!(!e.contains("secret") && !e.contains("tok"), "{e}");
        assert!(!format!("{c:?}").contains("tok"));
    }

    #[test]
    fn encodes() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(query_escape("a b/c'd"), "a%20b%2Fc%27d");
    }
}
