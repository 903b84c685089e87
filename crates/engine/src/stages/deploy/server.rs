//! A running `pipe serve`, seen through its admin routes (loopback only): which adapters
//! it holds, where its public names point, and the three moves a deploy makes (add a
//! version, point a route at it, remove a retired version).
//!
//! Every call is made afresh: a server is state outside the workspace (it may have been
//! restarted and lost its routes), so nothing here is cached between runs.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A server's admin routes.
pub struct Server {
    base: String,
    agent: ureq::Agent,
    api_key: Option<String>,
}

/// Why a call failed: no answer at all, or an answer that refused.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Nothing answers (refused connection, timeout, bad host).
    #[error("no pipe serve answers at {server} ({message})")]
    Unreachable {
        /// The server.
        server: String,
        /// The transport's words.
        message: String,
    },
    /// The server answered with an error.
    #[error("{server} refused {call} ({status}): {message}")]
    Refused {
        /// The server.
        server: String,
        /// The call, e.g. `PUT /admin/routes/assistant`.
        call: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

impl Server {
    /// The server at `base` (`http://host:port`); `PIPE_API_KEY`, when set, is sent as the
    /// bearer token, as a server started with it requires.
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            // Loading an adapter reads and places its weights: seconds, not minutes.
            .timeout_global(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            api_key: std::env::var("PIPE_API_KEY").ok().filter(|k| !k.is_empty()),
        }
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ServerError> {
        let call = format!("{method} {path}");
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let unreachable = |message: String| ServerError::Unreachable {
            server: self.base.clone(),
            message,
        };
        let response = match body {
            None => request
                .body(())
                .map_err(|e| unreachable(e.to_string()))
                .and_then(|r| self.agent.run(r).map_err(|e| unreachable(e.to_string()))),
            Some(b) => request
                .header("Content-Type", "application/json")
                .body(b.to_string())
                .map_err(|e| unreachable(e.to_string()))
                .and_then(|r| self.agent.run(r).map_err(|e| unreachable(e.to_string()))),
        };
        let mut response = response?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| unreachable(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map_or_else(|| text.chars().take(300).collect(), str::to_owned);
        let hint = match status {
            404 if path == "/admin/routes" => {
                " (a pipe serve older than deploy stages has no routes: restart it)"
            }
            401 => " (set PIPE_API_KEY to the server's API key)",
            403 => " (admin routes answer only clients on the server's machine)",
            _ => "",
        };
        Err(ServerError::Refused {
            server: self.base.clone(),
            call,
            status,
            message: format!("{message}{hint}"),
        })
    }

    /// Public names and the adapters they route to.
    pub fn routes(&self) -> Result<BTreeMap<String, String>, ServerError> {
        let v = self.call("GET", "/admin/routes", None)?;
        Ok(serde_json::from_value(v["routes"].clone()).unwrap_or_default())
    }

    /// The loaded adapters' names.
    pub fn adapters(&self) -> Result<Vec<String>, ServerError> {
        let v = self.call("GET", "/admin/adapters", None)?;
        Ok(v["adapters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Loads the adapter folder `path` (absolute: the server's working folder is not the
    /// workspace) as `name`.
    pub fn add_adapter(&self, name: &str, path: &std::path::Path) -> Result<(), ServerError> {
        self.call(
            "POST",
            "/admin/adapters",
            Some(json!({"name": name, "path": path})),
        )
        .map(drop)
    }

    /// Points `route` at the loaded adapter `adapter`, in one step on the server.
    pub fn set_route(&self, route: &str, adapter: &str) -> Result<(), ServerError> {
        self.call(
            "PUT",
            &format!("/admin/routes/{route}"),
            Some(json!({"adapter": adapter})),
        )
        .map(drop)
    }

    /// Unloads `name` (rows already decoding on it finish first).
    pub fn remove_adapter(&self, name: &str) -> Result<(), ServerError> {
        self.call("DELETE", &format!("/admin/adapters/{name}"), None)
            .map(drop)
    }
}
