//! `pipe ui`: a local web app over the workspace, a view and a remote control of what the
//! command line does, nothing more.
//!
//! - Runs are ordinary `pipe run` processes, started detached (their own process group,
//!   no terminal), so closing the browser or stopping `pipe ui` never stops one; stopping a
//!   run sends it SIGINT, as Ctrl-C would.
//! - Everything shown comes from the run history (`runs/history/`): a run started from the
//!   command line appears as soon as its record does, and its progress streams from the
//!   run's `events.jsonl` over server-sent events, resumable by byte offset
//!   (`Last-Event-ID`), so a reconnect loses no point ([`live`]).
//! - The start form is generated from the pipeline's params and the JSON Schema of the
//!   stage configs they feed (`pipe schema`), and a submitted form is checked by the code
//!   `pipe run` uses, so its errors are `pipe run`'s messages ([`launch`]).
//! - One binary, offline: the page, its script and styles are embedded ([`assets`]).
//!
//! One file per concern: [`routes`] (the JSON API), [`live`] (server-sent events),
//! [`launch`] (pipelines, the form, starting and stopping runs), [`datasets`] (uploads),
//! [`download`] (artifacts), [`models`] (trained adapters), [`exports`] (fused and GGUF builds of them), [`monitors`] (monitor histories), [`playground`] (base and
//! adapter answering side by side through `pipe serve`), [`logs`] (log tails), [`series`] (chart data), [`workspace`] (stage states on the DAG), [`security`] (loopback, token,
//! Origin checks) and [`assets`].

pub mod assets;
pub mod datasets;
pub mod download;
pub mod exports;
pub mod launch;
pub mod live;
pub mod logs;
pub mod models;
pub mod monitors;
pub mod playground;
pub mod routes;
pub mod security;
pub mod series;
pub mod workspace;

use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// How to serve the UI.
#[derive(Debug, Clone)]
pub struct Options {
    /// The workspace.
    pub root: PathBuf,
    /// Address to bind.
    pub host: IpAddr,
    /// Port (0: any free one).
    pub port: u16,
    /// The access token; required (generated when absent) for a non-loopback `host`.
    pub token: Option<String>,
    /// Largest dataset upload, in bytes.
    pub max_upload_bytes: usize,
    /// The playground's model server stops after this long unused.
    pub model_idle: std::time::Duration,
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The workspace root (absolute).
    pub root: PathBuf,
    /// The token clients must present, when the server is reachable beyond this machine.
    pub token: Option<String>,
    /// The bound address (its port answers the Host check).
    pub addr: SocketAddr,
    /// The `pipe` executable that runs are started with.
    pub pipe_exe: PathBuf,
    /// Largest dataset upload, in bytes.
    pub max_upload_bytes: usize,
    /// The playground's model server, started on demand.
    pub playground: playground::Playground,
    /// Fused and GGUF exports being built.
    pub builds: exports::Builds,
}

/// Serves until SIGINT/SIGTERM; `ready` is called once with the URL to open.
pub fn serve(options: Options, ready: impl FnOnce(&str)) -> anyhow::Result<()> {
    let root = std::path::absolute(&options.root)
        .with_context(|| format!("workspace root {}", options.root.display()))?;
    let token = match (&options.token, options.host.is_loopback()) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(security::new_token()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((options.host, options.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", options.host, options.port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            root,
            token: token.clone(),
            addr,
            pipe_exe: std::env::current_exe().context("cannot find the pipe executable")?,
            max_upload_bytes: options.max_upload_bytes,
            playground: playground::Playground::new(options.model_idle),
            builds: exports::Builds::default(),
        });
        let shown = if addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port())
        } else {
            addr
        };
        let url = match &token {
            Some(t) => format!("http://{shown}/?token={t}"),
            None => format!("http://{shown}/"),
        };
        ready(&url);
        // Not a graceful shutdown: live streams never end by themselves, and nothing a
        // request does needs finishing (runs are other processes; writes are atomic).
        let watcher = tokio::spawn(playground::watch(state.clone()));
        let ended = tokio::select! {
            r = axum::serve(listener, routes::router(state.clone())) => r.context("the HTTP server stopped"),
            () = shutdown() => Ok(()),
        };
        watcher.abort();
        // The model server is ours: it ends with the UI (runs are not, and go on).
        state.playground.stop().await;
        ended
    });
    runtime.shutdown_background();
    result
}

/// Resolves on SIGINT or SIGTERM. Runs started from the UI are in their own process
/// groups, so the terminal's Ctrl-C reaches `pipe ui` only.
async fn shutdown() {
    let int = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = int => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = int.await;
    }
}
