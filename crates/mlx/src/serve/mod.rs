//! `pipe serve`: an OpenAI-compatible HTTP server over one base model and any number of
//! adapters, decoding concurrent requests together (continuous batching).
//!
//! Threads: MLX work stays on one engine thread ([`engine`]), which owns the model and the
//! batch; HTTP runs on a tokio runtime (axum) whose handlers validate, tokenize and talk to
//! the engine through channels ([`routes`]). One file per concern: the batch's KV cache
//! ([`batch`]), token choice ([`sampling`]), adapters side by side ([`adapters`]), request
//! checks ([`api`]), OpenAI-shaped errors ([`errors`]) and the handlers' shared state
//! ([`state`]).
//!
//! Reference: mlx-lm `server.py` (routes, SSE chunks) and `generate.py` (`BatchGenerator`).

pub mod adapters;
pub mod api;
pub mod batch;
pub mod batch_file;
pub mod engine;
pub mod errors;
pub mod requests;
pub mod routes;
pub mod sampling;
pub mod state;

use crate::load::LoadedModel;
use adapters::Registry;
use anyhow::{Context, bail};
use engine::{Engine, Load};
use state::AppState;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind.
    pub host: IpAddr,
    /// Port (0: any free one).
    pub port: u16,
    /// Bearer token clients must send; required for a non-loopback `host`.
    pub api_key: Option<String>,
    /// Adapters loaded at start: `(name, directory)`.
    pub adapters: Vec<(String, PathBuf)>,
    /// Public names routed to adapters at start: `(route, adapter)`.
    pub routes: Vec<(String, String)>,
    /// Names the base model answers to besides `base`.
    pub base_aliases: Vec<String>,
    /// Rows decoded together at most.
    pub max_batch: usize,
    /// Requests waiting for a row at most (beyond that: 429).
    pub max_queue: usize,
    /// Prompt plus completion tokens per request at most.
    pub max_context: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Largest request body in bytes.
    pub max_request_bytes: usize,
}

/// The engine thread, started, and the state requests go through.
pub struct Started {
    /// What handlers (or a batch driver) use.
    pub state: Arc<AppState>,
    /// The engine thread; it ends once every `state` is dropped and its rows are done.
    pub engine: std::thread::JoinHandle<()>,
}

/// Starts the engine thread over `loaded` with the start-up adapters loaded.
pub fn start(loaded: LoadedModel, options: &ServeOptions) -> anyhow::Result<Started> {
    let LoadedModel {
        model,
        tokenizer,
        chat_template,
        ..
    } = loaded;
    let tokenizer = Arc::new(tokenizer);
    let mut base_names = vec!["base".to_owned()];
    for alias in &options.base_aliases {
        if !base_names.contains(alias) {
            base_names.push(alias.clone());
        }
    }
    let load = Arc::new(Load::default());
    let adapter_list = Arc::new(RwLock::new(Vec::new()));
    let registry = Registry::new(&model, base_names.clone());
    let (commands, queue) = std::sync::mpsc::channel();
    let state = Arc::new(AppState {
        tokenizer: tokenizer.clone(),
        template: chat_template.map(Arc::new),
        commands,
        load: load.clone(),
        adapters: adapter_list.clone(),
        routes: RwLock::default(),
        base_names,
        api_key: options.api_key.clone(),
        capacity: options.max_batch.max(1) + options.max_queue,
        max_context: options.max_context,
        default_max_tokens: options.default_max_tokens,
        max_request_bytes: options.max_request_bytes,
        created: state::unix_now(),
        counter: AtomicU64::new(0),
    });
    // MLX binds arrays to the thread's stream: everything the engine evaluates (adapters
    // included) is created on its own thread.
    let (ready, is_ready) = std::sync::mpsc::channel();
    let adapters = options.adapters.clone();
    let max_batch = options.max_batch;
    let engine = std::thread::Builder::new()
        .name("pipe-serve-engine".into())
        .spawn(move || {
            let mut engine = Engine::new(model, tokenizer, registry, adapter_list, load, max_batch);
            for (name, dir) in &adapters {
                if let Err(e) = engine.add_adapter(name, dir) {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            let _ = ready.send(Ok(()));
            engine.run(queue);
        })
        .context("cannot start the decoding thread")?;
    match is_ready.recv() {
        Ok(Ok(())) => {
            for (route, adapter) in &options.routes {
                state
                    .set_route(route, adapter)
                    .map_err(|e| anyhow::anyhow!("route `{route}`: {}", e.message))?;
            }
            Ok(Started { state, engine })
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("the decoding thread stopped while loading adapters"),
    }
}

/// Serves `loaded` until interrupted (Ctrl-C or SIGTERM); `on_ready` gets the bound
/// address and the model names once requests are accepted.
pub fn serve(
    loaded: LoadedModel,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr, &[String]),
) -> anyhow::Result<()> {
    if !options.host.is_loopback() && options.api_key.is_none() {
        bail!(
            "binding {} exposes the server beyond this machine: set an API key with \
             --api-key or PIPE_API_KEY (or bind 127.0.0.1)",
            options.host
        );
    }
    let Started { state, engine } = start(loaded, &options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let names = state.model_names();
    let result = runtime.block_on(async move {
        let addr = SocketAddr::new(options.host, options.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        on_ready(listener.local_addr()?, &names);
        let app = routes::router(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server failed")
    });
    // The router (and with it the engine's last command sender) is gone: the engine
    // thread ends once it has no rows left.
    drop(runtime);
    let _ = engine.join();
    result
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
