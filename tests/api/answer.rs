//! `/answer` as a front end sees it: events, JSON mode, request ids, validation, health.

use std::time::Duration;

use chat_proxy::demo::{Fault, MockKnobs};
use serde_json::{Value, json};

use crate::helpers::{answer_text, last, names, read_events, spawn_app, spawn_app_with};

#[tokio::test]
async fn streams_meta_deltas_and_done() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(4),
            record_requests: true,
            ..MockKnobs::default()
        },
        |_| {},
    )
    .await;
    let response = app.post_answer(&json!({"user_input": "q1"})).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let request_id = headers["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");

    let events = read_events(response).await;
    assert_eq!(
        names(&events),
        ["meta", "delta", "delta", "delta", "delta", "done"]
    );
    assert_eq!(events[0].data["request_id"], request_id);
    assert_eq!(events[0].data["model"], "mock-model");
    assert_eq!(answer_text(&events), "q1#0 q1#1 q1#2 q1#3 ");
    let done = &last(&events).data;
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["usage"]["completion_tokens"], 4);
    for key in ["queue_ms", "ttft_ms", "total_ms"] {
        assert!(done["timings"][key].is_u64(), "{key} in {done}");
    }

    let sent = app.mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(sent[0]["stream_options"]["include_usage"], true);
    assert_eq!(sent[0]["model"], "mock-model");
    let messages = sent[0]["messages"].as_array().expect("messages");
    assert_eq!(
        messages[0]["role"], "system",
        "the system prompt from prompts/ comes first"
    );
    assert!(
        messages[0]["content"]
            .as_str()
            .expect("text")
            .contains("ocr_image")
    );
    assert_eq!(messages[1], json!({"role": "user", "content": "q1"}));
    assert_eq!(sent[0]["tools"][0]["function"]["name"], "ocr_image");
}

#[tokio::test]
async fn with_tools_off_the_messages_go_upstream_as_sent() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(1),
            record_requests: true,
            ..MockKnobs::default()
        },
        |c| c.tools.enabled = false,
    )
    .await;
    let events = read_events(app.post_answer(&json!({"user_input": "q1"})).await).await;
    assert_eq!(last(&events).name, "done");
    let sent = app.mock.requests();
    assert_eq!(
        sent[0]["messages"],
        json!([{"role": "user", "content": "q1"}])
    );
    assert!(sent[0].get("tools").is_none());
}

#[tokio::test]
async fn non_streaming_answer_is_one_json() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(3),
            ..MockKnobs::default()
        },
        |_| {},
    )
    .await;
    let response = app
        .post_answer(&json!({
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q2"}],
            "stream": false, "session_id": "s", "user_id": "u"
        }))
        .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["request_id"], request_id);
    assert_eq!(body["reply"], "q2#0 q2#1 q2#2 ");
    assert_eq!(body["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 4);
}

#[tokio::test]
async fn a_reused_request_id_never_costs_a_log_row() {
    let app = spawn_app().await;
    for question in ["one", "two", "three"] {
        let response = app
            .client
            .post(app.url("/answer"))
            .header("x-request-id", "reused-7")
            .json(&json!({"user_input": question, "stream": false}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    let db = app.wait_for_rows(3).await;
    let rows = db.chat_logs().await.expect("rows");
    assert!(
        rows.iter().all(|row| row.request_id == "reused-7"),
        "{rows:?}"
    );
    let mut log_ids: Vec<_> = rows.iter().map(|row| row.log_id.clone()).collect();
    log_ids.dedup();
    assert_eq!(
        log_ids.len(),
        3,
        "each row has the server's own key: {log_ids:?}"
    );
    let questions: Vec<_> = rows
        .iter()
        .map(|row| row.request_messages.clone())
        .collect();
    for (row, question) in questions.iter().zip(["one", "two", "three"]) {
        assert!(row.contains(question), "{row}");
    }
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_others_replaced() {
    let app = spawn_app().await;
    let send = |id: &'static str| {
        app.client
            .post(app.url("/answer"))
            .header("x-request-id", id)
            .json(&json!({"user_input": "x", "stream": false}))
            .send()
    };
    let kept = send("client-42").await.expect("sent");
    assert_eq!(kept.headers()["x-request-id"], "client-42");
    let body: Value = kept.json().await.expect("JSON");
    assert_eq!(body["request_id"], "client-42");
    let replaced = send("bad id with spaces").await.expect("sent");
    assert_ne!(replaced.headers()["x-request-id"], "bad id with spaces");
    // A made id is a time-ordered UUID, so later ids sort after earlier ones.
    let made = |response: &reqwest::Response| {
        let id = response.headers()["x-request-id"].to_str().expect("ascii");
        uuid::Uuid::parse_str(id).expect("a UUID")
    };
    let first = made(&replaced);
    assert_eq!(first.get_version_num(), 7);
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = made(&send("bad id with spaces").await.expect("sent"));
    assert!(second > first, "{second} sorts after {first}");
    // Errors carry one too.
    let refused = app.post_answer(&json!({})).await;
    assert!(refused.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn every_validation_error_is_a_4xx_naming_the_field() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.server.max_body_bytes = 2_000;
        c.limits.max_messages = 3;
        c.limits.max_input_chars = 1_000;
    })
    .await;
    let cases: Vec<(&str, u16, &str, &str)> = vec![
        ("{not json", 400, "invalid_json", "JSON"),
        ("{}", 400, "invalid_request", "user_input"),
        (
            r#"{"user_input":"a","messages":[{"role":"user","content":"b"}]}"#,
            400,
            "invalid_request",
            "not both",
        ),
        (r#"{"user_input":""}"#, 400, "invalid_request", "user_input"),
        (
            r#"{"user_input":["a"]}"#,
            400,
            "invalid_request",
            "user_input",
        ),
        (
            r#"{"user_input":"a","stream":1}"#,
            400,
            "invalid_request",
            "stream",
        ),
        (
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            400,
            "invalid_request",
            "messages[0].role",
        ),
        (
            r#"{"messages":[{"role":"user","content":"  "}]}"#,
            400,
            "invalid_request",
            "messages[0].content",
        ),
        (r#"{"messages":"hi"}"#, 400, "invalid_request", "messages"),
        (
            r#"{"messages":[{"role":"user","content":"1"},{"role":"user","content":"2"},{"role":"user","content":"3"},{"role":"user","content":"4"}]}"#,
            400,
            "too_many_messages",
            "messages",
        ),
        (
            // Under the body limit, over the character cap (1,200 characters).
            r#"{"messages":[{"role":"user","content":"LONG"},{"role":"assistant","content":"LONG"}]}"#,
            400,
            "input_too_long",
            "1200 characters",
        ),
    ];
    for (body, status, code, field) in cases {
        let body = body.replace("LONG", &"y".repeat(600));
        let response = app
            .client
            .post(app.url("/answer"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{body}: {message}");
    }
    let big = json!({"user_input": "x".repeat(3_000)});
    let response = app.post_answer(&big).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["code"], "body_too_large");
    assert_eq!(
        app.mock
            .counters()
            .requests
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
}

#[tokio::test]
async fn headers_and_meta_arrive_before_the_first_token() {
    // The mock goes silent before its first chunk: a proxy that waited for a token to send
    // headers would never answer here.
    let app = spawn_app_with(
        MockKnobs {
            fault: Some(Fault::StallAfter(0)),
            ..MockKnobs::default()
        },
        |c| c.upstream.first_chunk_timeout_ms = 60_000,
    )
    .await;
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        app.post_answer(&json!({"user_input": "x"})),
    )
    .await
    .expect("headers come at once");
    assert_eq!(response.status(), 200);
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut events),
    )
    .await
    .expect("meta comes at once")
    .expect("an event")
    .expect("well-formed");
    assert_eq!(first.event, "meta");
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let app = spawn_app_with(
        MockKnobs {
            first_chunk_delay: Duration::from_millis(600),
            tokens: Some(1),
            ..MockKnobs::default()
        },
        |c| c.server.keepalive_ms = 100,
    )
    .await;
    let raw = app
        .post_answer(&json!({"user_input": "x"}))
        .await
        .text()
        .await
        .expect("body");
    assert!(
        raw.lines().any(|l| l.starts_with(':')),
        "no comment line in {raw}"
    );
    assert!(raw.contains("event: done"), "{raw}");
}

#[tokio::test]
async fn health_reports_permits_and_queue() {
    let app = spawn_app().await;
    for path in ["/health", "/actuator/health"] {
        let body: Value = app
            .client
            .get(app.url(path))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        assert_eq!(body["status"], "ok", "{path}");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["upstream"]["permits_total"], 5);
        assert_eq!(body["upstream"]["permits_in_use"], 0);
        assert_eq!(body["upstream"]["permits_available"], 5);
        assert_eq!(body["upstream"]["queue_length"], 0);
    }
    let missing = app.client.get(app.url("/nope")).send().await.expect("sent");
    assert_eq!(missing.status(), 404);
}
