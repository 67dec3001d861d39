//! `GET /metrics` (Prometheus text format) and the middleware counting every request.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ErrorBody;
use crate::metrics::Readings;
use crate::state::AppState;

/// Counts every request by method, matched route and status (outermost, so refusals count too).
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let arrived = std::time::Instant::now();
    let method = request.method().clone();
    // `MatchedPath` shares its text: cloning it copies no string.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .metrics
        .count_request(&method, route, response.status(), arrived.elapsed());
    response
}

/// Counters, gauges and histograms in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The exposition", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "Missing or wrong client API key", body = ErrorBody),
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(&readings(&state)),
    )
}

/// What the other parts count, read now.
fn readings(state: &AppState) -> Readings {
    let permits = state.answers.permits();
    let engines = state.ocr.pool();
    Readings {
        streams_open: state.answers.open(),
        permits_in_use: permits.in_use(),
        permits_total: permits.capacity(),
        queue_length: permits.waiting(),
        ocr_engines: engines.size(),
        ocr_engines_busy: engines.busy(),
        writer: state.log.stats(),
        cluster_up: permits.cluster().map(|c| c.is_up()),
        redis_calls: permits.redis_calls(),
    }
}
