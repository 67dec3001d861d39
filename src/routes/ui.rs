//! The chat page: `GET /` and its assets under `/ui/`, embedded in the binary at build time from
//! the `ui/` folder (`rust-embed`), so it works offline and needs no build step. Every answer
//! carries a strict Content-Security-Policy: scripts only from this origin (no inline script),
//! requests only to this origin, no framing. The page needs no key; the API it calls does.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Embed)]
#[folder = "ui/"]
struct Assets;

/// What the page may load and where it may connect: its own origin only. Images also from
/// `blob:` (the preview of an attached screenshot) and `data:` (the same image, sent inline).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// What the page must know before it calls the API.
#[derive(Debug, Serialize)]
pub struct PageSettings {
    /// Whether the API needs a client key, so the page asks for one before anything else.
    key_required: bool,
}

/// `GET /ui/settings.json`: the page's settings (open, like the page; it holds no data).
pub async fn settings(State(state): State<AppState>) -> Response {
    let mut response = Json(PageSettings {
        key_required: state.client_keys.required(),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /ui/{*path}`: a script, style sheet or icon of the page.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

/// An embedded file with its type and security headers; `304` when the browser's copy (by its
/// `ETag`, the file's hash) is current. Browsers revalidate each time (`no-cache`), so a new
/// binary's page is never mixed with an old one's scripts.
fn asset(path: &str, request: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no page asset `{path}`"),
        )
        .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let headers = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&content_type(path, file.metadata.mimetype())) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The type to send: text types say they are UTF-8, so no browser guesses another charset.
fn content_type(path: &str, guessed: &str) -> String {
    let text = guessed.starts_with("text/") || path.ends_with(".svg") || path.ends_with(".js");
    if text && !guessed.contains("charset") {
        format!("{guessed}; charset=utf-8")
    } else {
        guessed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = Assets::get("index.html").expect("the page is embedded");
        let page = std::str::from_utf8(&page.data).expect("UTF-8");
        for name in ["/ui/app.js", "/ui/style.css", "/ui/icon.svg"] {
            assert!(page.contains(name), "the page loads {name}");
            let file = name.trim_start_matches("/ui/");
            assert!(Assets::get(file).is_some(), "{file} is embedded");
        }
        assert!(
            !page.contains("<script>") && !page.contains(" style="),
            "nothing inline: the policy forbids it"
        );
    }

    #[test]
    fn text_types_carry_their_charset() {
        assert_eq!(
            content_type("app.js", "text/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("icon.svg", "image/svg+xml"),
            "image/svg+xml; charset=utf-8"
        );
        assert_eq!(content_type("a.png", "image/png"), "image/png");
    }
}
