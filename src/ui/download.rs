//! Artifact downloads: `GET /api/runs/{id}/download?path=P` sends a file the run recorded
//! as an artifact (an adapter folder, a metrics file, a report). Only paths the run's record
//! lists are served, and only when they still resolve inside the workspace (no `..`, no
//! link out of it), so the route cannot be used to read anything else. A folder comes as a
//! `.tar.gz` of its files, named after it (an adapter unpacks to the mlx-lm layout `pipe
//! train` wrote: `adapters.safetensors`, `adapter_config.json`, with PEFT's layout in
//! `peft/`). A path inside an artifact folder is served too, so `lora/peft` downloads the
//! PEFT layout alone, as `lora-peft.tar.gz`.

use super::routes::{error, load_run};
use super::{AppState, security};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// `?path=runs/quickstart/lora`.
#[derive(Debug, Deserialize)]
pub struct PathQuery {
    /// The artifact's path, as the run's record lists it.
    pub path: String,
}

/// `GET /api/runs/{id}/download?path=P`.
pub async fn artifact(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Response {
    let record = match load_run(&state, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let wanted = q.path.trim_end_matches('/');
    // An artifact, or a file or folder inside one (an adapter's `peft/` layout).
    let listed = record.stages.iter().flat_map(|s| &s.artifacts).any(|a| {
        let a = a.path.trim_end_matches('/');
        wanted == a
            || wanted
                .strip_prefix(a)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| {
                    !rest
                        .split('/')
                        .any(|c| c.is_empty() || c == ".." || c == ".")
                })
    });
    if !listed {
        return error(
            StatusCode::NOT_FOUND,
            &format!("`{}` is not an artifact of run {id}", q.path),
        );
    }
    let real = match security::confine(&state.root, q.path.trim_end_matches('/')) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::FORBIDDEN, &e),
    };
    // `runs/x/lora/peft` downloads as `lora-peft`: the folder alone would not say whose.
    let mut parts = wanted.rsplit('/');
    let last = parts.next().unwrap_or("artifact");
    let shown = match parts.next() {
        Some(parent) if last == "peft" => format!("{parent}-{last}"),
        _ => last.to_owned(),
    };
    let safe: String = shown
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    send(real, safe).await
}

/// The file or folder `real` as an attachment named `name` (a folder as `name.tar.gz`),
/// streamed: a fused model is hundreds of megabytes, so nothing is held in memory whole.
/// What fails before the first byte is an error answer; a read failing later cuts the
/// transfer short, which the client sees as an incomplete download, not as a good file.
pub async fn send(real: std::path::PathBuf, name: String) -> Response {
    let opened = tokio::task::spawn_blocking({
        let real = real.clone();
        move || -> std::io::Result<Option<(std::fs::File, u64)>> {
            if std::fs::metadata(&real)?.is_dir() {
                return Ok(None);
            }
            let file = std::fs::File::open(&real)?;
            let len = file.metadata()?.len();
            Ok(Some((file, len)))
        }
    })
    .await;
    let opened = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, &format!("{name}: {e}"));
        }
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{name}: {e}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let (file_name, kind, len) = match &opened {
        None => (format!("{name}.tar.gz"), "application/gzip", None),
        Some((_, len)) => (name.clone(), "application/octet-stream", Some(*len)),
    };
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let written = match opened {
            None => tar_gz(&real, &name, &mut out),
            Some((mut file, _)) => std::io::copy(&mut file, &mut out).map(drop),
        }
        .and_then(|()| std::io::Write::flush(&mut out));
        if let Err(e) = written {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let mut headers = vec![
        (header::CONTENT_TYPE, kind.to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ),
    ];
    if let Some(len) = len {
        headers.push((header::CONTENT_LENGTH, len.to_string()));
    }
    let mut response = body.into_response();
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// Bytes per chunk sent to the client.
const CHUNK: usize = 256 * 1024;

/// Hands what is written to the response body in chunks; fails once the client has gone,
/// which stops the packing.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

/// The folder `dir` as a gzipped tar whose entries sit under `name/`. Links are stored as
/// links, never followed, so nothing outside the folder is packed.
fn tar_gz(dir: &std::path::Path, name: &str, out: impl std::io::Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(name, dir)?;
    tar.into_inner()?.finish()?.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_folder_packs_under_its_name_with_links_kept_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let adapter = dir.path().join("lora");
        std::fs::create_dir_all(adapter.join("sub")).unwrap();
        std::fs::write(adapter.join("adapter_config.json"), "{}").unwrap();
        std::fs::write(adapter.join("sub/w.bin"), [1u8, 2, 3]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", adapter.join("out")).unwrap();
        let mut bytes = Vec::new();
        super::tar_gz(&adapter, "lora", &mut bytes).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut files: Vec<(String, u64, bool)> = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .filter(|e| !e.header().entry_type().is_dir())
            .map(|e| {
                let link = e.header().entry_type().is_symlink();
                (e.path().unwrap().display().to_string(), e.size(), link)
            })
            .collect();
        files.sort();
        let mut want = vec![
            ("lora/adapter_config.json".to_owned(), 2, false),
            ("lora/sub/w.bin".to_owned(), 3, false),
        ];
        #[cfg(unix)]
        want.push(("lora/out".to_owned(), 0, true));
        want.sort();
        assert_eq!(files, want);
    }
}
