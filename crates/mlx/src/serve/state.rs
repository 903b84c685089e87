//! What every HTTP handler shares: the tokenizer and chat template (prompts are rendered
//! and tokenized on the HTTP side, off the engine thread), the way to the engine, the load
//! counters, the adapter list and the server's limits.

use super::adapters::AdapterInfo;
use super::engine::{Command, Load};
use super::errors::ApiError;
use crate::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use axum::http::{HeaderMap, header};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// State shared by the handlers.
#[derive(Debug)]
pub struct AppState {
    /// Prompts' tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template, if the model has one.
    pub template: Option<Arc<ChatTemplate>>,
    /// The engine's command queue.
    pub commands: Sender<Command>,
    /// Load counters.
    pub load: Arc<Load>,
    /// Adapters, as the engine last published them.
    pub adapters: Arc<RwLock<Vec<AdapterInfo>>>,
    /// Public names routed to adapters (`assistant` → `assistant-1f2e…`); see
    /// [`AppState::set_route`].
    pub routes: RwLock<BTreeMap<String, String>>,
    /// Names of the base model (`base` first).
    pub base_names: Vec<String>,
    /// A required bearer token, if any.
    pub api_key: Option<String>,
    /// Requests decoding or waiting, at most.
    pub capacity: usize,
    /// Prompt plus completion tokens, at most.
    pub max_context: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Largest request body, bytes.
    pub max_request_bytes: usize,
    /// Server start (Unix seconds), the `created` of `/v1/models`.
    pub created: u64,
    /// Completion ids.
    pub counter: AtomicU64,
}

impl AppState {
    /// Checks the bearer token when one is required (compared in constant time).
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == key.len()
            && given
                .bytes()
                .zip(key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// The adapter a request's `model` names (`None`: the base), or a 404.
    pub fn resolve_model(&self, model: &str) -> Result<Option<String>, ApiError> {
        if self.base_names.iter().any(|n| n == model) {
            return Ok(None);
        }
        // Read once: a request resolves its route before the engine sees it, so a swap
        // between two requests sends each wholly to one version. The version a route left
        // stays loaded until the deploy that moved it removes it (`keep`).
        if let Some(target) = self.route_table().get(model) {
            return Ok(Some(target.clone()));
        }
        if self.adapter_list().iter().any(|a| a.name == model) {
            return Ok(Some(model.to_owned()));
        }
        Err(ApiError::model_not_found(model, &self.model_names()))
    }

    /// Every model id requests may use: the base's names, then the adapters.
    pub fn model_names(&self) -> Vec<String> {
        let mut names = self.base_names.clone();
        names.extend(self.route_table().into_keys());
        names.extend(self.adapter_list().into_iter().map(|a| a.name));
        names
    }

    /// The routes, public name to adapter.
    pub fn route_table(&self) -> BTreeMap<String, String> {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Points the public name `route` at the loaded adapter `adapter` in one step (a
    /// request sees the old target or the new one, never neither); the previous target.
    pub fn set_route(&self, route: &str, adapter: &str) -> Result<Option<String>, ApiError> {
        if self.base_names.iter().any(|n| n == route)
            || self.adapter_list().iter().any(|a| a.name == route)
        {
            return Err(ApiError::conflict(format!(
                "`{route}` already names the base model or an adapter; a route needs a name \
                 of its own"
            )));
        }
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the lock so that no removal slips between check and swap (removal
        // takes the same lock to check that no route points at the adapter).
        if !self.adapter_list().iter().any(|a| a.name == adapter) {
            return Err(ApiError::not_found(format!(
                "no adapter named `{adapter}` is loaded; add it first (POST /admin/adapters); \
                 `{route}` is unchanged"
            )));
        }
        Ok(routes.insert(route.to_owned(), adapter.to_owned()))
    }

    /// The loaded adapters.
    pub fn adapter_list(&self) -> Vec<AdapterInfo> {
        self.adapters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends a command to the engine thread.
    pub fn send(&self, command: Command) -> Result<(), ApiError> {
        self.commands
            .send(command)
            .map_err(|_| ApiError::internal("the decoding engine has stopped"))
    }

    /// `(rows decoding, requests in flight)`.
    pub fn load(&self) -> (usize, usize) {
        (
            self.load.decoding.load(Ordering::Relaxed),
            self.load.in_flight.load(Ordering::Relaxed),
        )
    }

    /// A fresh completion id.
    pub fn next_id(&self, chat: bool) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let prefix = if chat { "chatcmpl" } else { "cmpl" };
        format!("{prefix}-{:x}-{n}", self.created)
    }

    /// Now, in Unix seconds.
    pub fn created_now(&self) -> u64 {
        unix_now()
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
