//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status
//! the proxy chose. Every error of an OpenAI route is rewritten so, the ones from the layers in
//! front of the handler too (a missing key, a foreign origin, a body too large or too slow):
//! [`ApiError`] leaves a copy of itself on its response, and [`openai_errors`] renders it again.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// `{"error": {...}}`, as the `openai` SDKs read it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiError,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiError {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// The proxy's stable machine code, as in its other errors (`model_not_found`,
    /// `queue_full`, `upstream_timeout`, ...).
    pub code: &'static str,
}

impl From<&ApiError> for OpenAiErrorBody {
    fn from(err: &ApiError) -> Self {
        let kind = match err.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        Self {
            error: OpenAiError {
                message: err.message.clone(),
                kind,
                param: err.param.clone(),
                code: err.code,
            },
        }
    }
}

/// The paths of the OpenAI-compatible API (its `/v1` routes and their unprefixed twins).
pub fn is_openai_path(path: &str) -> bool {
    path.starts_with("/v1/")
        || path == "/chat/completions"
        || path == "/models"
        || path.starts_with("/models/")
}

/// Rewrites an OpenAI route's error into OpenAI's shape, keeping its status and headers
/// (`Retry-After`, `WWW-Authenticate`, `Connection: close`, `x-request-id`).
pub async fn openai_errors(request: Request, next: Next) -> Response {
    let openai = is_openai_path(request.uri().path());
    let response = next.run(request).await;
    if !openai {
        return response;
    }
    let Some(err) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_response().into_parts();
    let body = Json(OpenAiErrorBody::from(&err)).into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_status_and_the_field_is_named() {
        let body = |err: ApiError| serde_json::to_value(OpenAiErrorBody::from(&err)).expect("JSON");
        let bad = body(ApiError::bad_request("invalid_request", "no").with_param("model"));
        assert_eq!(bad["error"]["type"], "invalid_request_error");
        assert_eq!(bad["error"]["param"], "model");
        assert_eq!(bad["error"]["code"], "invalid_request");
        let auth = body(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "key",
        ));
        assert_eq!(auth["error"]["type"], "authentication_error");
        assert!(auth["error"]["param"].is_null());
        let busy = body(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            "full",
        ));
        assert_eq!(busy["error"]["type"], "rate_limit_error");
        let timeout = body(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_timeout",
            "t",
        ));
        assert_eq!(timeout["error"]["type"], "server_error");
        assert!(is_openai_path("/v1/chat/completions") && is_openai_path("/models/demo"));
        assert!(!is_openai_path("/answer") && !is_openai_path("/modelsx"));
    }
}
