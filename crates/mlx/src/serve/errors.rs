//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
//! HTTP status OpenAI uses for the same case, so clients raise their usual exceptions
//! (`openai.NotFoundError`, `openai.RateLimitError`, ...).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and how to fix it.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// The offending request field.
    pub param: Option<&'static str>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 about one field.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about the request as a whole (bad JSON, ...).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            param: None,
            ..Self::invalid("", message)
        }
    }

    /// The model (base or adapter) is unknown.
    pub fn model_not_found(model: &str, known: &[String]) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..Self::invalid(
                "model",
                format!(
                    "the model `{model}` does not exist; this server has: {}",
                    known.join(", ")
                ),
            )
        }
    }

    /// Prompt plus completion would not fit the context.
    pub fn context_too_long(prompt: usize, max_tokens: usize, context: usize) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(
                "messages",
                format!(
                    "this server's context is {context} tokens, but the request has {prompt} \
                     prompt tokens and asks for up to {max_tokens} more; shorten the prompt \
                     or lower max_tokens"
                ),
            )
        }
    }

    /// The server is at capacity.
    pub fn busy(limit: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the server is at capacity ({limit} requests decoding or queued); retry shortly"
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
        }
    }

    /// A missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: Some("invalid_api_key"),
            ..Self::bad_request("a valid API key is required: send `Authorization: Bearer KEY`")
        }
    }

    /// Refused (an admin route from another host).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "permission_error",
            ..Self::bad_request(message)
        }
    }

    /// Not found (a route, or an adapter on the admin route).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::bad_request(message)
        }
    }

    /// In conflict with the server's state (a name taken, an adapter a route uses).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            ..Self::bad_request(message)
        }
    }

    /// The server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..Self::bad_request(message)
        }
    }

    /// The error's JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
