//! The one error type handlers return: a status, a stable machine code and a message the client
//! may read, rendered as `{"error": {"code", "message"}}`. Internals are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::limiter::QueueError;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

/// Every error response: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// The `error` object, shared by JSON bodies and the SSE `error` event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// A stable machine code, e.g. `invalid_request`, `queue_full`, `upstream_timeout`.
    pub code: &'a str,
    /// What went wrong, for people.
    pub message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn detail(&self) -> ErrorDetail<'_> {
        ErrorDetail {
            code: self.code,
            message: &self.message,
        }
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry on another instance",
        )
        .with_retry_after(1)
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Full { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", err.to_string())
                    .with_retry_after(1)
            }
            QueueError::Timeout { waited } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_timeout",
                err.to_string(),
            )
            .with_retry_after(waited.as_secs().clamp(1, 60)),
        }
    }
}

impl From<&UpstreamError> for ApiError {
    fn from(err: &UpstreamError) -> Self {
        let status = if err.is_timeout() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
