//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status
//! the proxy chose. Every error of an OpenAI route is rewritten so, the ones from the layers in
//! front of the handler too (a missing key, a foreign origin, a body too large or too slow):
//! [`ApiError`] leaves a copy of itself on its response, and [`OpenAiErrorsLayer`] renders it
//! again.

use std::task::{Context, Poll};

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::{Either, Map};
use serde::Serialize;
use tower::{Layer, Service};

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

/// Rewrites the errors of the OpenAI routes into OpenAI's shape, keeping their status and
/// headers (`Retry-After`, `WWW-Authenticate`, `Connection: close`, `x-request-id`). A plain
/// `tower` layer, outside every layer that can refuse a request: other routes pay one path check.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiErrorsLayer;

impl<S> Layer<S> for OpenAiErrorsLayer {
    type Service = OpenAiErrors<S>;

    fn layer(&self, inner: S) -> OpenAiErrors<S> {
        OpenAiErrors { inner }
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiErrors<S> {
    inner: S,
}

type Rewrite<E> = fn(Result<Response, E>) -> Result<Response, E>;

impl<S> Service<Request> for OpenAiErrors<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Map<S::Future, Rewrite<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_openai_path(request.uri().path()) {
            let rewrite: Rewrite<S::Error> = |result| result.map(in_openai_shape);
            Either::Right(self.inner.call(request).map(rewrite))
        } else {
            Either::Left(self.inner.call(request))
        }
    }
}

/// `response` with an OpenAI error body, if it is an error the proxy made.
fn in_openai_shape(response: Response) -> Response {
    let Some(err) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let (body_parts, body) = Json(OpenAiErrorBody::from(&err))
        .into_response()
        .into_parts();
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
