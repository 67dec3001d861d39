//! Requests from web pages of other origins are refused before any work is done. A browser
//! sends `Origin` with every cross-origin request, and with a "simple" one (a form-encoded or
//! text `POST`) it sends no preflight first: without this check, any page a user visits could
//! make this service spend upstream quota when it runs without keys. A request with no `Origin`
//! (curl, SDKs, servers) or from this server's own origin (its `Host`) passes, and so does one
//! from an origin in `cors.allowed_origins` (`*`: any).

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::{Layer, Service};

use crate::error::ApiError;

/// The origins allowed besides the server's own.
#[derive(Debug, Clone)]
pub struct AllowedOrigins(Arc<Vec<String>>);

impl AllowedOrigins {
    pub fn new(configured: &[String]) -> Self {
        Self(Arc::new(
            configured
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        ))
    }

    fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        let same_origin =
            authority.is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)));
        same_origin || self.0.iter().any(|o| o == "*" || *o == origin)
    }
}

/// The layer that puts [`OriginGuard`] in front of the routes. A plain `tower` service rather
/// than a `from_fn` middleware: it runs on every request, and needs no boxed future to pass one on.
#[derive(Debug, Clone)]
pub struct OriginGuardLayer(AllowedOrigins);

impl OriginGuardLayer {
    pub fn new(allowed: AllowedOrigins) -> Self {
        Self(allowed)
    }
}

impl<S> Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;

    fn layer(&self, inner: S) -> OriginGuard<S> {
        OriginGuard {
            inner,
            allowed: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OriginGuard<S> {
    inner: S,
    allowed: AllowedOrigins,
}

impl<S> Service<Request> for OriginGuard<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if self.is_foreign(&request) {
            let refusal = ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "requests from this web origin are not allowed; add it to cors.allowed_origins",
            );
            return Either::Right(ready(Ok(refusal.into_response())));
        }
        Either::Left(self.inner.call(request))
    }
}

impl<S> OriginGuard<S> {
    fn is_foreign(&self, request: &Request) -> bool {
        // Preflights are the CORS layer's to answer.
        if request.method() == Method::OPTIONS {
            return false;
        }
        let headers = request.headers();
        let Some(origin) = headers.get(header::ORIGIN) else {
            return false;
        };
        // HTTP/2 carries the host in the `:authority` of the URI instead of a `Host` header.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        origin
            .to_str()
            .map_or(true, |origin| !self.allowed.allows(origin, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_origin_and_the_listed_ones_pass() {
        let none = AllowedOrigins::new(&[]);
        assert!(none.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(none.allows("https://Chat.Example.com", Some("chat.example.com")));
        assert!(!none.allows("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!none.allows("null", Some("127.0.0.1:8080")));
        assert!(!none.allows("http://127.0.0.1:8080", None));
        let listed = AllowedOrigins::new(&["https://chat.example.com/".to_owned()]);
        assert!(listed.allows("https://chat.example.com", Some("10.0.0.5:8080")));
        assert!(!listed.allows("https://other.example.com", Some("10.0.0.5:8080")));
        let any = AllowedOrigins::new(&["*".to_owned()]);
        assert!(any.allows("http://evil.example", Some("127.0.0.1:8080")));
    }
}
