//! Who may use the UI, checked on every request before any handler runs.
//!
//! - **Host.** On a loopback bind the `Host` header must name this server as loopback
//!   (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`): a web page elsewhere that points
//!   its own name at 127.0.0.1 (DNS rebinding) is refused.
//! - **Token.** Bound beyond loopback, every request must carry the token `pipe ui`
//!   printed: `Authorization: Bearer TOKEN`, or the cookie set when the printed address
//!   (`/?token=TOKEN`) is first opened (HttpOnly, SameSite=Strict).
//! - **Origin.** A request that changes something (any method but GET/HEAD) must come from
//!   the UI's own page: its `Origin` must be this server. Browsers send `Origin` on every
//!   cross-site POST and cannot forge it, so another site cannot start or stop runs through
//!   a visitor's browser (CSRF). Scripts send the header themselves.
//!
//! Paths a request names (pipelines, downloads) are confined to the workspace where they
//! are used ([`confine`]).

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The cookie that carries the token after the first visit.
pub const COOKIE: &str = "pipe_ui_token";

/// A new random token (128 bits, hex).
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The middleware: Host, token and Origin checks.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if state.addr.ip().is_loopback() && !is_loopback_host(&host, state.addr.port()) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("pipe ui answers on loopback only, not for host `{host}`"),
        );
    }
    if let Some(token) = &state.token {
        let from_query = query_token(request.uri().query());
        if request.method() == Method::GET
            && request.uri().path() == "/"
            && from_query.as_deref().is_some_and(|t| same(t, token))
        {
            // The printed address: remember the token in a cookie and drop it from the URL.
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_owned()),
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                    ),
                ],
            )
                .into_response();
        }
        if !presented(headers).is_some_and(|t| same(&t, token)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this pipe ui needs its token: open the address `pipe ui` printed \
                 (http://HOST:PORT/?token=...), or send `Authorization: Bearer TOKEN`",
            );
        }
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
        let expected = format!("http://{host}");
        if origin != Some(expected.as_str()) {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "cross-site request refused: `Origin` must be {expected} (got {})",
                    origin.unwrap_or("none")
                ),
            );
        }
    }
    next.run(request).await
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Whether `host` (a Host header) names this server on loopback.
fn is_loopback_host(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else {
        return false;
    };
    p.parse::<u16>() == Ok(port) && matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// The token a request presents: bearer header first, then the cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `rel` (a path a request names, relative to the workspace) as a path inside `root`, or
/// why not: absolute paths, `..`, and links leading out of the workspace are refused.
pub fn confine(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("`{rel}` is not a path inside the workspace"));
    }
    let joined = root.join(p);
    let real = joined
        .canonicalize()
        .map_err(|e| format!("{}: {e}", joined.display()))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    if !real.starts_with(&real_root) {
        return Err(format!("`{rel}` leads out of the workspace"));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1:7860", 7860));
        assert!(is_loopback_host("localhost:7860", 7860));
        assert!(is_loopback_host("[::1]:7860", 7860));
        assert!(!is_loopback_host("evil.example:7860", 7860));
        assert!(!is_loopback_host("127.0.0.1:80", 7860));
        assert!(!is_loopback_host("127.0.0.1", 7860));
    }

    #[test]
    fn confine_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        assert!(confine(dir.path(), "a.txt").is_ok());
        for bad in ["../a.txt", "/etc/passwd", "", "./a.txt", "x/../../a"] {
            assert!(confine(dir.path(), bad).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
            let err = confine(dir.path(), "out/passwd").unwrap_err();
            assert!(err.contains("leads out"), "{err}");
        }
    }
}
