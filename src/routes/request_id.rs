//! `x-request-id` on every response: a client's own id is kept when it is sane, otherwise the
//! request gets a new UUID. Handlers read it as `Extension<RequestId>`, and the request runs
//! inside a `request` span carrying it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub const HEADER: &str = "x-request-id";

/// Longest client-sent id that is kept.
const MAX_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map(str::to_owned)
        // Time-ordered (version 7): the log's unique index on `request_id` grows at its end
        // instead of taking each new id at a random page.
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let header = HeaderValue::from_str(&id).expect("accepted ids are visible ASCII");
    // One span per request: every log line it causes carries its id.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    // With tracing on, a client's `traceparent` makes this span part of its trace.
    crate::telemetry::continue_trace(&span, request.headers());
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(HEADER, header);
    response
}

/// Letters, digits and `-_.:`, 1 to 128 of them: safe in logs, headers and database keys.
fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::is_acceptable;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_acceptable("req-123_abc.def:1"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable("quote\"d"));
        assert!(!is_acceptable(&"a".repeat(129)));
    }
}
