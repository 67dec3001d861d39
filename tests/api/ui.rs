//! The chat page's files at `/` and `/ui/`: served without a key, with their security headers,
//! revalidated by `ETag`, and off with `ui.enabled = false`. (What the page does is checked in
//! a real browser: tests/browser.rs.)

use chat_proxy::demo::MockKnobs;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with};

const KEY: &str = "page-test-key-0123456789";

/// `GET /ui/settings.json`, which needs no key.
async fn settings(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/ui/settings.json")).send().await;
    response.expect("sent").json().await.expect("JSON")
}

#[tokio::test]
async fn the_page_loads_without_a_key_with_a_strict_policy_and_the_api_still_needs_one() {
    let app = spawn_app_with(MockKnobs::default(), |c| c.auth.keys = vec![KEY.into()]).await;
    let page = app.client.get(app.url("/")).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("ASCII");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{policy} has {part}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(page.text().await.expect("body").contains("/ui/app.js"));

    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml; charset=utf-8"),
    ] {
        let file = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(file.status(), StatusCode::OK, "{path}");
        assert_eq!(file.headers()["content-type"], content_type, "{path}");
        assert_eq!(file.headers()["x-content-type-options"], "nosniff");
    }
    assert_eq!(settings(&app).await["key_required"], true);

    // Nothing else is open: the API the page calls needs the key.
    for path in ["/v1/models", "/ocr/some-id", "/ocr/jobs/some-id"] {
        let status = app
            .client
            .get(app.url(path))
            .send()
            .await
            .expect("sent")
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // No way out of the embedded folder, and no file that is not there.
    for path in [
        "/ui/../config.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/nope.js",
        "/ui/",
    ] {
        let response = app.client.get(app.url(path)).send().await.expect("sent");
        assert!(
            matches!(
                response.status(),
                StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
            ),
            "{path}: {}",
            response.status()
        );
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("[server]") && !body.contains("[package]"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_current_copy_is_answered_304_and_a_changed_tag_gets_the_file() {
    let app = spawn_app_with(MockKnobs::default(), |_| {}).await;
    let first = app
        .client
        .get(app.url("/ui/app.js"))
        .send()
        .await
        .expect("sent");
    let etag = first.headers()["etag"].clone();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let again = app
        .client
        .get(app.url("/ui/app.js"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    let other = app
        .client
        .get(app.url("/ui/app.js"))
        .header("if-none-match", "\"not-this-one\"")
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(settings(&app).await["key_required"], false);
}

#[tokio::test]
async fn the_page_can_be_turned_off() {
    let app = spawn_app_with(MockKnobs::default(), |c| c.ui.enabled = false).await;
    for path in ["/", "/ui/app.js", "/ui/settings.json"] {
        let response = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "not_found");
    }
}
