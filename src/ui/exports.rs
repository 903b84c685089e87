//! The models page's other downloads: an adapter fused into its base model (a Hugging Face
//! folder, `pipe fuse`) and a GGUF file for llama.cpp (`pipe export gguf --type q8_0`).
//!
//! Neither is a stage output, so the UI builds one when asked, with the same commands a
//! user would type, and keeps it under `runs/exports/`, named after the adapter's folder
//! and the fingerprint of the stage that trained it: a retrained adapter gets a new
//! export, and the export of its older weights is deleted when that one is built. A
//! build waits for nothing: while a run holds the `mlx` slot it is refused (a training's
//! speed and memory were measured without a second model beside it), and one build
//! runs at a time. A build holds the workspace lock, as a run does, so a run started
//! meanwhile (from the UI, the CLI or a schedule) waits for it instead of retraining the
//! adapter folder while the build reads it.

use super::AppState;
use super::models::{self, Adapter};
use super::routes::{ApiError, error};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipe_engine::exec::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where exports live, relative to the workspace.
pub const DIR: &str = "runs/exports";

/// What can be built from an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The base model with the adapter merged in, float32, Hugging Face layout.
    Fused,
    /// The fused model as one GGUF file, 8-bit blocks (llama.cpp's q8_0).
    Gguf,
}

impl Format {
    const ALL: [Format; 2] = [Format::Fused, Format::Gguf];

    /// The file or folder inside the adapter's export folder.
    fn file_name(self) -> &'static str {
        match self {
            Format::Fused => "fused",
            Format::Gguf => "model.q8_0.gguf",
        }
    }

    /// `pipe` arguments that write it to `out`.
    fn command(self, adapter: &Adapter, root: &Path, out: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = match self {
            Format::Fused => vec!["fuse".into()],
            Format::Gguf => vec![
                "export".into(),
                "gguf".into(),
                "--type".into(),
                "q8_0".into(),
            ],
        };
        if let Some(model) = &adapter.base_model {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend([
            "--adapter".into(),
            root.join(&adapter.path).into(),
            "--out".into(),
            out.into(),
        ]);
        args
    }
}

/// One export's state, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ExportState {
    /// Not built (or built for weights the adapter no longer has).
    Missing,
    /// Being built now.
    Building,
    /// Built: ready to download.
    Ready {
        /// Its size.
        bytes: u64,
    },
    /// The last build failed; building again is allowed.
    Failed {
        /// What the command said.
        error: String,
    },
}

/// Builds in progress and the last failures, by adapter folder and format.
#[derive(Debug, Default)]
pub struct Builds {
    jobs: Mutex<BTreeMap<(String, Format), Job>>,
}

#[derive(Debug, Clone)]
enum Job {
    Building,
    Failed(String),
}

/// The folder that holds `adapter`'s exports: `runs/exports/<folder>-<fingerprint>`.
pub fn folder(adapter: &Adapter) -> String {
    let slug: String = adapter
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let version = adapter
        .fingerprint
        .as_deref()
        .map_or("unversioned", |f| &f[..f.len().min(12)]);
    format!("{DIR}/{slug}-{version}")
}

/// `format`'s export of `adapter`, relative to the workspace.
pub fn path(adapter: &Adapter, format: Format) -> String {
    format!("{}/{}", folder(adapter), format.file_name())
}

impl Builds {
    /// Each format's state for `adapter`.
    pub fn states(&self, root: &Path, adapter: &Adapter) -> BTreeMap<Format, ExportState> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Format::ALL
            .into_iter()
            .map(|format| {
                let state = match jobs.get(&(adapter.path.clone(), format)) {
                    Some(Job::Building) => ExportState::Building,
                    Some(Job::Failed(error)) => ExportState::Failed {
                        error: error.clone(),
                    },
                    None => match size(&root.join(path(adapter, format))) {
                        Some(bytes) => ExportState::Ready { bytes },
                        None => ExportState::Missing,
                    },
                };
                (format, state)
            })
            .collect()
    }

    /// Claims the one build slot for `(adapter, format)`; `Err` says why not.
    fn claim(&self, adapter: &Adapter, format: Format) -> Result<(), String> {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(((path, other), _)) = jobs.iter().find(|(_, j)| matches!(j, Job::Building)) {
            return Err(format!(
                "the {} export of `{path}` is being built; one build runs at a time",
                label(*other)
            ));
        }
        jobs.insert((adapter.path.clone(), format), Job::Building);
        Ok(())
    }

    fn settle(&self, adapter: &Adapter, format: Format, result: Result<(), String>) {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => jobs.remove(&(adapter.path.clone(), format)),
            Err(e) => jobs.insert((adapter.path.clone(), format), Job::Failed(e)),
        };
    }
}

fn label(format: Format) -> &'static str {
    match format {
        Format::Fused => "fused",
        Format::Gguf => "GGUF",
    }
}

/// Bytes of a file, or of the files of a folder; `None` when absent.
fn size(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len());
    }
    Some(
        walkdir::WalkDir::new(path)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum(),
    )
}

/// Runs the command that writes `format` for `adapter`, into a temporary name first, so
/// a build cut short never looks ready; then drops the exports of the adapter's older
/// weights.
fn build(pipe_exe: &Path, root: &Path, adapter: &Adapter, format: Format) -> Result<(), String> {
    let folder = root.join(folder(adapter));
    std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let done = folder.join(format.file_name());
    let partial = folder.join(format!(".{}.partial", format.file_name()));
    remove(&partial);
    let out = std::process::Command::new(pipe_exe)
        .args(format.command(adapter, root, &partial))
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", pipe_exe.display()))?;
    if !out.status.success() {
        remove(&partial);
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        // The message and its hint are at the end; a long log before them is not.
        let start = said.len().saturating_sub(1500);
        let start = (start..said.len())
            .find(|&i| said.is_char_boundary(i))
            .unwrap_or(0);
        return Err(if said.is_empty() {
            format!("`pipe` exited with {}", out.status)
        } else {
            said[start..].to_owned()
        });
    }
    std::fs::rename(&partial, &done).map_err(|e| format!("{}: {e}", done.display()))?;
    let ours = folder.file_name().map(std::ffi::OsStr::to_os_string);
    let prefix = prefix(adapter);
    if let Ok(entries) = std::fs::read_dir(root.join(DIR)) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if Some(&name) != ours.as_ref() && name.to_string_lossy().starts_with(&prefix) {
                remove(&entry.path());
            }
        }
    }
    Ok(())
}

/// What the name of every export folder of this adapter's path starts with.
fn prefix(adapter: &Adapter) -> String {
    let folder = folder(adapter);
    let name = folder.rsplit('/').next().unwrap_or_default();
    let cut = name.rfind('-').map_or(name.len(), |i| i + 1);
    name[..cut].to_owned()
}

fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
}

/// `{"path": "runs/quickstart/lora", "format": "gguf"}`.
#[derive(Debug, Deserialize)]
pub struct ExportRequest {
    /// The adapter's folder, as `GET /api/models` lists it.
    pub path: String,
    /// What to build or download.
    pub format: Format,
}

fn listed(root: &Path, path: &str) -> Result<Adapter, ApiError> {
    models::find(root, path).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("`{path}` is not an adapter of this workspace's runs"),
        )
    })
}

/// `POST /api/models/export`: starts building an export; answers at once with its state
/// (202 while it builds, 200 when it already exists).
pub async fn start(State(state): State<Arc<AppState>>, Json(req): Json<ExportRequest>) -> Response {
    let root = state.root.clone();
    let adapter = match listed(&root, &req.path) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if let Some(ExportState::Ready { bytes }) =
        state.builds.states(&root, &adapter).get(&req.format)
    {
        return Json(ExportState::Ready { bytes: *bytes }).into_response();
    }
    if let Some(holder) = super::playground::slot::holder(&root) {
        return error(
            StatusCode::CONFLICT,
            &format!("{holder} holds the accelerator; build the export when it has finished"),
        );
    }
    let what = format!(
        "pipe ui, building the {} export of {}",
        label(req.format),
        adapter.path
    );
    let workspace = match lock::acquire_as(&root, Some(Duration::ZERO), Some(&what), |_| {}) {
        Ok(held) => held,
        Err(lock::LockError::Timeout { holder, .. }) => {
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "{holder} is going in this workspace; build the export when it has finished"
                ),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Err(e) = state.builds.claim(&adapter, req.format) {
        return error(StatusCode::CONFLICT, &e);
    }
    let worker = state.clone();
    tokio::task::spawn_blocking(move || {
        let result = build(&worker.pipe_exe, &worker.root, &adapter, req.format);
        worker.builds.settle(&adapter, req.format, result);
        drop(workspace);
    });
    (StatusCode::ACCEPTED, Json(ExportState::Building)).into_response()
}

/// `?path=runs/quickstart/lora&format=fused`.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    /// The adapter's folder.
    pub path: String,
    /// Which export.
    pub format: Format,
}

/// `GET /api/models/download?path=P&format=F`: a built export (the fused folder as
/// `.tar.gz`).
pub async fn download(
    State(state): State<Arc<AppState>>,
    Query(q): Query<DownloadQuery>,
) -> Response {
    let adapter = match listed(&state.root, &q.path) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let rel = path(&adapter, q.format);
    let real: PathBuf = state.root.join(&rel);
    if !real.exists() {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "the {} export of `{}` is not built",
                label(q.format),
                q.path
            ),
        );
    }
    let stem = adapter.path.rsplit('/').next().unwrap_or("adapter");
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = match q.format {
        Format::Fused => format!("{safe}-fused"),
        Format::Gguf => format!("{safe}.q8_0.gguf"),
    };
    super::download::send(real, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(path: &str, fingerprint: Option<&str>) -> Adapter {
        Adapter {
            path: path.into(),
            run: "r".into(),
            stage: "train".into(),
            pipeline: "p".into(),
            base_model: Some("smollm2-135m-instruct".into()),
            method: None,
            rank: None,
            fingerprint: fingerprint.map(Into::into),
            metrics: BTreeMap::new(),
            ended: String::new(),
            bytes: 0,
            peft: false,
        }
    }

    #[test]
    fn exports_are_named_after_the_folder_and_the_weights_version() {
        let a = adapter("runs/quick start/lora", Some("0123456789abcdef0123"));
        assert_eq!(
            folder(&a),
            "runs/exports/runs-quick-start-lora-0123456789ab"
        );
        assert_eq!(
            path(&a, Format::Gguf),
            "runs/exports/runs-quick-start-lora-0123456789ab/model.q8_0.gguf"
        );
        assert_eq!(prefix(&a), "runs-quick-start-lora-");
        assert_eq!(
            folder(&adapter("lora", None)),
            "runs/exports/lora-unversioned"
        );
    }

    #[test]
    fn one_build_at_a_time_and_a_failure_is_shown_until_the_next_try() {
        let root = tempfile::tempdir().unwrap();
        let builds = Builds::default();
        let a = adapter("runs/a/lora", Some("aaaa"));
        let b = adapter("runs/b/lora", Some("bbbb"));
        builds.claim(&a, Format::Fused).unwrap();
        let refused = builds.claim(&b, Format::Gguf).unwrap_err();
        assert!(refused.contains("`runs/a/lora`"), "{refused}");
        assert_eq!(
            builds.states(root.path(), &a)[&Format::Fused],
            ExportState::Building
        );
        assert_eq!(
            builds.states(root.path(), &a)[&Format::Gguf],
            ExportState::Missing
        );
        builds.settle(&a, Format::Fused, Err("out of memory".into()));
        assert_eq!(
            builds.states(root.path(), &a)[&Format::Fused],
            ExportState::Failed {
                error: "out of memory".into()
            }
        );
        builds.claim(&b, Format::Gguf).unwrap();
        let file = root.path().join(path(&b, Format::Gguf));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, [0u8; 7]).unwrap();
        builds.settle(&b, Format::Gguf, Ok(()));
        assert_eq!(
            builds.states(root.path(), &b)[&Format::Gguf],
            ExportState::Ready { bytes: 7 }
        );
    }
}
