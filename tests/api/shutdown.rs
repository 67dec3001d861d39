//! Graceful shutdown: no new work, streams in flight finish within the grace period, the rest
//! end with an explicit error.

use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use serde_json::json;

use crate::helpers::{answer_text, last, read_events, spawn_app_with};

#[tokio::test]
async fn streams_in_flight_finish_within_the_grace_period() {
    let mut app = spawn_app_with(
        MockKnobs {
            tokens: Some(10),
            token_delay: Duration::from_millis(50),
            ..MockKnobs::default()
        },
        |c| c.server.shutdown_grace_ms = 5_000,
    )
    .await;
    let response = app.post_answer(&json!({"user_input": "finishing"})).await;
    app.wait_for_health("a stream open", |h| h["upstream"]["permits_in_use"] == 1)
        .await;
    let server = app.begin_stop();
    let events = read_events(response).await;
    assert_eq!(last(&events).name, "done", "{events:?}");
    assert_eq!(answer_text(&events).matches("finishing#").count(), 10);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops after the stream ended")
        .expect("no panic")
        .expect("clean stop");
    let refused = app
        .client
        .post(app.url("/answer"))
        .json(&json!({"user_input": "too late"}))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn streams_past_the_grace_period_end_with_an_error_event() {
    let mut app = spawn_app_with(
        MockKnobs {
            tokens: Some(1000),
            token_delay: Duration::from_millis(20),
            ..MockKnobs::default()
        },
        |c| c.server.shutdown_grace_ms = 300,
    )
    .await;
    let response = app.post_answer(&json!({"user_input": "long"})).await;
    app.wait_for_health("a stream open", |h| h["upstream"]["permits_in_use"] == 1)
        .await;
    let server = app.begin_stop();
    let events = read_events(response).await;
    let end = last(&events);
    assert_eq!(end.name, "error");
    assert_eq!(end.data["code"], "shutting_down");
    assert!(!answer_text(&events).is_empty());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("clean stop");
}
