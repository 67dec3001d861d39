//! The one error type handlers return: a status, a stable machine code and a message the client
//! may read, rendered as `{"error": {"code", "message"}}`. Internals are logged, never sent.
//!
//! This is also the one place where domain errors (which know nothing of HTTP) get their status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::answer::{AdmissionError, ExchangeError, RequestError};
use crate::client_limits::Refusal;
use crate::ocr::OcrError;
use crate::ocr::http_jobs::JobRefused;
use crate::permit_queue::QueueError;
use crate::routes::body_timeout::BodyTimedOut;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when one is (OpenAI's error body names it as `param`).
    pub param: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Close the connection after this response (`Connection: close`): what is left of the
    /// request on it cannot be trusted.
    pub close_connection: bool,
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
            param: None,
            retry_after: None,
            close_connection: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
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

    /// An answer whose events stopped before `done` or `error` (its task ended early).
    pub fn answer_cut_short() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the answer ended without a result",
        )
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

impl From<&QueueError> for ApiError {
    fn from(err: &QueueError) -> Self {
        match err {
            QueueError::Full { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, err.code(), err.to_string())
                    .with_retry_after(1)
            }
            QueueError::Timeout { waited } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string())
                    .with_retry_after(waited.as_secs().clamp(1, 60))
            }
            QueueError::Unavailable => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string())
                    .with_retry_after(1)
            }
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

impl From<&JobRefused> for ApiError {
    fn from(refused: &JobRefused) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            refused.code(),
            refused.to_string(),
        )
        .with_retry_after(refused.retry_after_secs())
    }
}

impl From<&Refusal> for ApiError {
    fn from(refusal: &Refusal) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            refusal.code(),
            refusal.to_string(),
        )
        .with_retry_after(refusal.retry_after_secs())
    }
}

impl From<RequestError> for ApiError {
    fn from(err: RequestError) -> Self {
        let param = err.param().map(str::to_owned);
        Self {
            param,
            ..Self::bad_request(err.code(), err.to_string())
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(err: AdmissionError) -> Self {
        match &err {
            AdmissionError::ShuttingDown => Self::shutting_down(),
            AdmissionError::UnknownModel(_) => {
                Self::new(StatusCode::NOT_FOUND, "model_not_found", err.to_string())
                    .with_param("model")
            }
            AdmissionError::ClientLimit(refusal) => refusal.into(),
            AdmissionError::Queue(err) => err.into(),
        }
    }
}

impl From<&ExchangeError> for ApiError {
    fn from(err: &ExchangeError) -> Self {
        match err {
            ExchangeError::ShuttingDown => Self::shutting_down(),
            ExchangeError::Queue(err) => err.into(),
            ExchangeError::Upstream(err) => err.into(),
            ExchangeError::PermitLost => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string())
                    .with_retry_after(1)
            }
            ExchangeError::ToolRoundLimit | ExchangeError::ToolsOff => {
                Self::new(StatusCode::BAD_GATEWAY, err.code(), err.to_string())
            }
            // A reader that kept up can't meet it; for completeness, the client's fault.
            ExchangeError::ClientTooSlow => {
                Self::new(StatusCode::REQUEST_TIMEOUT, err.code(), err.to_string())
            }
        }
    }
}

impl From<&OcrError> for ApiError {
    fn from(err: &OcrError) -> Self {
        let status = match err {
            OcrError::InvalidRequest(_) | OcrError::Forbidden(_) => StatusCode::BAD_REQUEST,
            OcrError::NotFound(_) => StatusCode::NOT_FOUND,
            OcrError::Download(_) => StatusCode::BAD_GATEWAY,
            OcrError::TooLarge(_) | OcrError::TooManyPixels(_) => StatusCode::PAYLOAD_TOO_LARGE,
            OcrError::Undecodable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OcrError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OcrError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<&BodyTimedOut> for ApiError {
    fn from(err: &BodyTimedOut) -> Self {
        Self {
            close_connection: true,
            ..Self::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", err.to_string())
        }
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
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // For a layer that renders errors in another protocol's shape (`routes::openai`).
        response.extensions_mut().insert(self);
        response
    }
}
