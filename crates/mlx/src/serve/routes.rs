//! The HTTP routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`,
//! and the admin routes (loopback clients only): adapters under `/admin/adapters`, public
//! names routed to adapters under `/admin/routes` (what a `deploy` stage moves).
//!
//! A handler checks the request, renders and tokenizes the prompt, takes a server slot
//! ([`Admission`]; none left answers 429 with `Retry-After`) and hands a [`Job`] to the
//! engine thread. It then either collects the engine's events into one response, or
//! forwards them as server-sent events. Either way the event channel's receiver lives in
//! the response: when the client goes, hyper drops it, and the engine frees the row.

use super::engine::{Command, Event};
use super::errors::ApiError;
use super::requests::{Collected, Kind, Prepared, logprobs_json};
use super::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// The application's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/admin/adapters", get(list_adapters).post(add_adapter))
        .route("/admin/adapters/{name}", delete(remove_adapter))
        .route("/admin/routes", get(list_routes))
        .route("/admin/routes/{name}", put(set_route).delete(remove_route))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/models") })
        .with_state(state)
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    let load = s.load();
    Json(json!({"status": "ok", "decoding": load.0, "in_flight": load.1}))
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = s.authorize(&headers) {
        return e.into_response();
    }
    let data: Vec<Value> = s
        .model_names()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": s.created, "owned_by": "pipe"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// A request's body, read to its end. At most the server's `max_request_bytes` are kept; a
/// longer body is still read (up to [`DRAIN_LIMIT`]) before its 413 goes out, because a
/// client that is still sending when the server answers and closes the connection gets a
/// broken pipe instead of the answer.
pub struct RequestBody(Result<Bytes, ApiError>);

/// Bytes of an over-long body read before the connection is closed on it.
const DRAIN_LIMIT: usize = 64 << 20;

impl FromRequest<Arc<AppState>> for RequestBody {
    type Rejection = Infallible;

    async fn from_request(
        request: axum::extract::Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Infallible> {
        Ok(Self(
            read_to_end(request.into_body(), state.max_request_bytes).await,
        ))
    }
}

async fn read_to_end(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        read += chunk.len();
        if read <= limit {
            kept.extend_from_slice(&chunk);
        } else if read > DRAIN_LIMIT {
            break;
        }
    }
    if read > limit {
        return Err(ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::bad_request(format!(
                "the request body is larger than the server's limit of {limit} bytes"
            ))
        });
    }
    Ok(Bytes::from(kept))
}

/// The body as JSON of type `T`, with OpenAI-shaped errors for a body too large or not
/// JSON.
fn parse<T: serde::de::DeserializeOwned>(RequestBody(body): RequestBody) -> Result<T, ApiError> {
    let body = body?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: RequestBody) -> Response {
    let run = || {
        s.authorize(&headers)?;
        let prepared = s.prepare_chat(parse(body)?)?;
        let rx = s.submit(&prepared)?;
        Ok::<_, ApiError>((rx, prepared))
    };
    match run() {
        Err(e) => e.into_response(),
        Ok((rx, prepared)) => respond(&s, rx, prepared).await,
    }
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RequestBody,
) -> Response {
    let run = || {
        s.authorize(&headers)?;
        let prepared = s.prepare_completion(parse(body)?)?;
        let rx = s.submit(&prepared)?;
        Ok::<_, ApiError>((rx, prepared))
    };
    match run() {
        Err(e) => e.into_response(),
        Ok((rx, prepared)) => respond(&s, rx, prepared).await,
    }
}

async fn respond(s: &AppState, mut rx: UnboundedReceiver<Event>, prepared: Prepared) -> Response {
    let id = s.next_id(prepared.kind == Kind::Chat);
    let created = s.created_now();
    let settings = &prepared.settings;
    if settings.stream {
        // Headers go out at once (a queued request would otherwise look hung); a failure
        // in the engine arrives as an error event.
        let meta = ChunkMeta {
            id,
            created,
            model: prepared.model,
            kind: prepared.kind,
            want_logprobs: settings.sampling.logprobs.is_some(),
            include_usage: settings.include_usage,
        };
        return Sse::new(sse_stream(rx, meta))
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let mut all = Collected::default();
    while let Some(event) = rx.recv().await {
        if all.add(event) {
            break;
        }
    }
    match all.response(&prepared, &id, created) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) fn failed(status: u16, message: &str) -> ApiError {
    match status {
        404 => ApiError::not_found(message),
        _ => ApiError::internal(message),
    }
}

/// What every streamed chunk repeats.
struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    want_logprobs: bool,
    include_usage: bool,
}

impl ChunkMeta {
    /// One chunk: a choice, or (the usage chunk) none.
    fn chunk(&self, choice: Option<Value>, usage: Option<Value>) -> SseEvent {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let choices: Vec<Value> = choice.into_iter().collect();
        let mut v = json!({"id": self.id, "object": object, "created": self.created,
            "model": self.model, "choices": choices});
        if self.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        SseEvent::default().data(v.to_string())
    }
}

/// The SSE stream: a role chunk (chat), one chunk per text event, a last chunk with the
/// finish reason, the usage chunk when asked, then `[DONE]`.
fn sse_stream(
    rx: UnboundedReceiver<Event>,
    meta: ChunkMeta,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let meta = Arc::new(meta);
    let opening = (meta.kind == Kind::Chat).then(|| {
        meta.chunk(
            Some(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}),
            ),
            None,
        )
    });
    let head = stream::iter(opening.into_iter().map(Ok));
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let mut offset = 0usize;
    let body = events
        .scan(false, |ended, e| {
            let out = if *ended { None } else { Some(e) };
            if matches!(out, Some(Event::Done { .. } | Event::Failed { .. })) {
                *ended = true;
            }
            std::future::ready(out)
        })
        .flat_map(move |event| {
            let meta = meta.clone();
            let items: Vec<SseEvent> = match event {
                Event::Text { text, logprobs } => {
                    let lp = meta
                        .want_logprobs
                        .then(|| logprobs_json(meta.kind, &logprobs, offset));
                    offset += text.len();
                    let choice = match meta.kind {
                        Kind::Chat => json!({"index": 0, "delta": {"content": text},
                            "logprobs": lp, "finish_reason": null}),
                        Kind::Completion => json!({"index": 0, "text": text, "logprobs": lp,
                            "finish_reason": null}),
                    };
                    vec![meta.chunk(Some(choice), None)]
                }
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let choice = match meta.kind {
                        Kind::Chat => json!({"index": 0, "delta": {}, "logprobs": null,
                            "finish_reason": finish}),
                        Kind::Completion => json!({"index": 0, "text": "", "logprobs": null,
                            "finish_reason": finish}),
                    };
                    let mut v = vec![meta.chunk(Some(choice), None)];
                    if meta.include_usage {
                        let usage = json!({"prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens});
                        v.push(meta.chunk(None, Some(usage)));
                    }
                    v.push(SseEvent::default().data("[DONE]"));
                    v
                }
                // Headers are sent: an error mid-stream goes as an error event.
                Event::Failed { status, message } => {
                    vec![SseEvent::default().data(failed(status, &message).body().to_string())]
                }
            };
            stream::iter(items.into_iter().map(Ok))
        });
    head.chain(body)
}

/// Admin routes answer loopback clients only, whatever address the server is bound to.
fn admin_guard(s: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::forbidden(
            "adapter administration is only accepted from this machine (loopback)",
        ));
    }
    s.authorize(headers)
}

async fn list_adapters(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = admin_guard(&s, peer, &headers) {
        return e.into_response();
    }
    Json(json!({"adapters": s.adapter_list()})).into_response()
}

#[derive(serde::Deserialize)]
struct AddAdapter {
    name: String,
    path: std::path::PathBuf,
}

async fn add_adapter(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: RequestBody,
) -> Response {
    let run = async {
        admin_guard(&s, peer, &headers)?;
        let req: AddAdapter = parse(body)?;
        if s.route_table().contains_key(&req.name) {
            return Err(ApiError::conflict(format!(
                "`{}` is a route; pick another adapter name",
                req.name
            )));
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        s.send(Command::AddAdapter {
            name: req.name.clone(),
            path: req.path,
            reply,
        })?;
        match done.await {
            Ok(Ok(())) => Ok(req.name),
            Ok(Err(e)) => Err(ApiError::invalid("path", e.to_string())),
            Err(_) => Err(ApiError::internal("the engine stopped")),
        }
    };
    match run.await {
        Ok(name) => Json(json!({"added": name, "adapters": s.adapter_list()})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove_adapter(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let run = async {
        admin_guard(&s, peer, &headers)?;
        let (reply, done) = tokio::sync::oneshot::channel();
        {
            // Under the routes' lock: no route can be pointed at it between check and send.
            let routes = s
                .routes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((route, _)) = routes.iter().find(|(_, target)| **target == name) {
                return Err(ApiError::conflict(format!(
                    "route `{route}` answers with `{name}`; point it elsewhere (PUT \
                     /admin/routes/{route}) or delete it before removing the adapter"
                )));
            }
            s.send(Command::RemoveAdapter {
                name: name.clone(),
                reply,
            })?;
        }
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::not_found(e.to_string())),
            Err(_) => Err(ApiError::internal("the engine stopped")),
        }
    };
    match run.await {
        Ok(()) => Json(json!({"removed": name, "adapters": s.adapter_list()})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_routes(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = admin_guard(&s, peer, &headers) {
        return e.into_response();
    }
    Json(json!({"routes": s.route_table()})).into_response()
}

#[derive(serde::Deserialize)]
struct SetRoute {
    adapter: String,
}

/// `PUT /admin/routes/NAME {"adapter": A}`: requests for NAME go to A from now on.
async fn set_route(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: RequestBody,
) -> Response {
    let run = || {
        admin_guard(&s, peer, &headers)?;
        let req: SetRoute = parse(body)?;
        let previous = s.set_route(&name, &req.adapter)?;
        Ok::<_, ApiError>((req.adapter, previous))
    };
    match run() {
        Ok((adapter, previous)) => {
            Json(json!({"route": name, "adapter": adapter, "previous": previous})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn remove_route(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = admin_guard(&s, peer, &headers) {
        return e.into_response();
    }
    let removed = s
        .routes
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&name);
    match removed {
        Some(adapter) => Json(json!({"removed": name, "adapter": adapter})).into_response(),
        None => ApiError::not_found(format!("no route named `{name}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A body of `chunks` chunks of 1 KiB that counts how many were read.
    fn counted_body(chunks: usize, read: Arc<AtomicUsize>) -> Body {
        Body::from_stream(stream::iter((0..chunks).map(move |_| {
            read.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Bytes::from(vec![b'a'; 1024]))
        })))
    }

    #[tokio::test]
    async fn an_over_long_body_is_read_to_its_end_before_the_413() {
        let read = Arc::new(AtomicUsize::new(0));
        let err = read_to_end(counted_body(40, read.clone()), 10 * 1024)
            .await
            .unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("10240 bytes"), "{}", err.message);
        assert_eq!(read.load(Ordering::SeqCst), 40, "every chunk read");

        let read = Arc::new(AtomicUsize::new(0));
        let body = read_to_end(counted_body(10, read), 10 * 1024)
            .await
            .unwrap();
        assert_eq!(body.len(), 10 * 1024);
    }
}
