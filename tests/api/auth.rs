//! Client API keys in front of every route but `/health`.

use chat_proxy::demo::MockKnobs;
use serde_json::{Value, json};

use crate::helpers::{last, read_events, spawn_app_with};

const KEY: &str = "client-key-0123456789";

#[tokio::test]
async fn keys_are_required_everywhere_but_health_and_recorded_by_id() {
    let hashed = "sha256:".to_owned() + &"ab".repeat(32);
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(2),
            ..MockKnobs::default()
        },
        |c| {
            c.auth.keys = vec![KEY.into(), hashed];
        },
    )
    .await;
    let send = |key: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.url("/answer"))
            .json(&json!({"user_input": "q"}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    for key in [None, Some("wrong-key-0123456789")] {
        let response = send(key).await.expect("sent");
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let ocr = app
        .client
        .post(app.url("/ocr"))
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ocr.status(), 401, "the OCR routes need a key too");
    let health = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 200, "/health stays open");
    // The scheme's name is case-insensitive.
    let lower = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", format!("bearer {KEY}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(lower.status(), 200, "`bearer` is the Bearer scheme");

    let response = send(Some(KEY)).await.expect("sent");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(last(&read_events(response).await).name, "done");
    let db = app.wait_for_rows(1).await;
    let row = db.chat_log(&request_id).await.expect("read").expect("row");
    let id = row.client_key_id.expect("the key's id is recorded");
    assert_eq!(id.len(), 12);
    assert!(
        !id.contains(KEY) && !KEY.contains(&id),
        "an id, never the key"
    );
}

#[tokio::test]
async fn a_page_of_another_origin_is_refused_before_any_work() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(2),
            ..MockKnobs::default()
        },
        |c| c.cors.allowed_origins = vec!["https://chat.example.com".into()],
    )
    .await;
    let post = |origin: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/answer"))
            // What a page's "simple" request sends: no preflight comes first.
            .header("content-type", "text/plain")
            .body(r#"{"user_input": "q", "stream": false}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    for origin in ["http://evil.example", "null"] {
        let response = post(Some(origin.to_owned())).await.expect("sent");
        assert_eq!(response.status(), 403, "{origin}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "origin_not_allowed", "{origin}");
    }
    assert_eq!(
        app.mock
            .counters()
            .requests
            .load(std::sync::atomic::Ordering::Acquire),
        0,
        "nothing reached the model"
    );
    for origin in [
        None,
        Some(format!("http://{}", app.addr)),
        Some("https://chat.example.com".to_owned()),
    ] {
        let response = post(origin.clone()).await.expect("sent");
        assert_eq!(response.status(), 200, "{origin:?}");
    }
}
