//! The page, embedded in the binary: one HTML file, its script and styles, no CDN and no
//! build step, so `pipe ui` works offline. Charts are drawn as SVG by the script.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

fn send(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // A new pipe binary may serve a new page: never reuse an old one.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    send("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => send("text/javascript; charset=utf-8", APP_JS),
        "app.css" => send("text/css; charset=utf-8", APP_CSS),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
