//! The HTTP surface: one file per endpoint family, thin handlers over the library.

mod access;
pub mod answer;
pub mod body_timeout;
pub mod health;
pub mod metrics;
pub mod ocr;
pub mod ocr_jobs;
pub mod ocr_results;
pub mod openai;
pub mod openapi;
pub mod origin;
pub mod request_id;
pub mod sse;
pub mod ui;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::{CorsConfig, ms};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let upload_limit = upload_limit(&state);
    let ocr_routes = Router::new()
        .route("/ocr", post(ocr::recognize))
        .route("/ocr_handler", post(ocr::recognize_handler))
        .layer(DefaultBodyLimit::max(upload_limit));
    let routes = Router::new()
        .merge(ocr_routes)
        .route("/ocr/jobs", post(ocr_jobs::create_job))
        .route(
            "/ocr/jobs/{id}",
            get(ocr_jobs::get_job).delete(ocr_jobs::cancel_job),
        )
        .route(
            "/ocr/{id}",
            get(ocr_results::get).patch(ocr_results::correct),
        )
        .route("/answer", post(answer::answer))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/models/{*id}", get(openai::get_model))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/actuator/health", get(health::actuator_health))
        .route("/openapi.json", get(openapi::openapi))
        .route("/metrics", get(metrics::metrics));
    let routes = if state.config.ui.enabled {
        routes
            .route("/", get(ui::page))
            .route("/ui/settings.json", get(ui::settings))
            .route("/ui/{*path}", get(ui::file))
    } else {
        routes
    };
    let routes = routes
        // After every route: it applies to the routes registered before it.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.client_keys.clone(),
            crate::auth::require_key,
        ));
    let routes = routes.layer(body_timeout::BodyTimeoutLayer::new(ms(state
        .config
        .server
        .body_read_timeout_ms)));
    // Before the key check: a foreign page's request is refused whatever it carries.
    let routes = routes.layer(origin::OriginGuardLayer::new(origin::AllowedOrigins::new(
        &state.config.cors.allowed_origins,
    )));
    // Outside the key check: browsers send preflights without credentials.
    let routes = match cors(&state.config.cors) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        // Outside every layer that can refuse a request, so all their errors are rewritten.
        .layer(openai::errors::OpenAiErrorsLayer)
        .layer(axum::middleware::from_fn(request_id::assign))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

/// The CORS policy for browser front ends on other origins; none when no origin is configured
/// (preflights then reach the routes and get 405 or 404).
fn cors(config: &CorsConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        // The headers the page asks for: the `openai` JS SDK in a browser sends its own
        // (`x-stainless-*`) beside `Authorization`; the origin list is what guards the API.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(Duration::from_secs(config.max_age_s));
    Some(layer)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The endpoint exists but not with this method; axum adds the `Allow` header.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method; the Allow header lists the ones it takes",
    )
}

/// The body limit of the OCR routes: uploads carry the image itself, so room for it plus the
/// multipart framing.
pub fn upload_limit(state: &AppState) -> usize {
    state.config.ocr.max_image_bytes + 64 * 1024
}

/// A body, or the JSON error for one that is too large (413) or unreadable.
pub fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        body_error(&rejection, rejection.status(), rejection.body_text(), limit)
    })
}

/// The error for a body that could not be read (`err`, with the status and text it suggests):
/// `body_timeout` (408) when it did not arrive in time, `body_too_large` (413) on every route
/// when it is over the route's `limit`, else `invalid_body`.
pub fn body_error(
    err: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: String,
    limit: usize,
) -> ApiError {
    if let Some(timed_out) = body_timeout::timed_out(err) {
        return timed_out.into();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    } else {
        ApiError::bad_request("invalid_body", text)
    }
}
