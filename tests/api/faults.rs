//! A broken upstream never looks like a complete answer: each fault ends in an explicit error.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_proxy::demo::{Fault, MockKnobs};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, answer_text, last, names, read_events, spawn_app_with};

async fn app_with_fault(fault: Fault, fault_requests: Option<usize>) -> TestApp {
    spawn_app_with(
        MockKnobs {
            tokens: Some(5),
            fault: Some(fault),
            fault_requests,
            ..MockKnobs::default()
        },
        |c| {
            c.upstream.chunk_gap_timeout_ms = 300;
            c.upstream.first_chunk_timeout_ms = 300;
        },
    )
    .await
}

/// Streams one question and returns (events, error code of the last event).
async fn stream_error(app: &TestApp) -> (Vec<crate::helpers::SseEvent>, String) {
    let response = app.post_answer(&json!({"user_input": "q"})).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    assert!(
        !names(&events).contains(&"done"),
        "no done after a fault: {events:?}"
    );
    let end = last(&events);
    assert_eq!(end.name, "error", "{events:?}");
    (
        events.clone(),
        end.data["code"].as_str().expect("code").to_owned(),
    )
}

async fn json_error(app: &TestApp) -> (u16, String) {
    let response = app
        .post_answer(&json!({"user_input": "q", "stream": false}))
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    (
        status,
        body["error"]["code"].as_str().expect("code").to_owned(),
    )
}

#[tokio::test]
async fn upstream_500_is_retried_then_reported() {
    let app = app_with_fault(Fault::Status(500), None).await;
    let (_, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_status");
    // One try plus `max_retries` (2) retries.
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 3);
    assert_eq!(json_error(&app).await, (502, "upstream_status".into()));
}

#[tokio::test]
async fn a_passing_500_is_retried_invisibly() {
    let app = app_with_fault(Fault::Status(503), Some(2)).await;
    let response = app.post_answer(&json!({"user_input": "q"})).await;
    let events = read_events(response).await;
    assert_eq!(last(&events).name, "done", "{events:?}");
    assert_eq!(answer_text(&events), "q#0 q#1 q#2 q#3 q#4 ");
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 3);
}

#[tokio::test]
async fn upstream_429_is_retried_then_reported() {
    let app = app_with_fault(Fault::Status(429), None).await;
    let (_, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_rate_limited");
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 3);
}

/// An app whose upstream answers 429 with `Retry-After: after_s` to its first request.
async fn app_asking_to_retry_after(after_s: u64, total_timeout_ms: u64) -> TestApp {
    spawn_app_with(
        MockKnobs {
            tokens: Some(2),
            fault: Some(Fault::Status(429)),
            fault_requests: Some(1),
            retry_after_s: Some(after_s),
            ..MockKnobs::default()
        },
        |c| c.upstream.total_timeout_ms = total_timeout_ms,
    )
    .await
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_for_as_asked() {
    let app = app_asking_to_retry_after(1, 30_000).await;
    let started = Instant::now();
    let events = read_events(app.post_answer(&json!({"user_input": "q"})).await).await;
    assert_eq!(last(&events).name, "done", "the retry was answered");
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 2);
    // The wait is what the upstream asked for, not the jittered backoff (200 ms at most).
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_time_left_fails_at_once() {
    let app = app_asking_to_retry_after(600, 5_000).await;
    let (status, code) = json_error(&app).await;
    assert_eq!((status, code.as_str()), (502, "upstream_rate_limited"));
    assert_eq!(
        app.mock.counters().requests.load(Ordering::Acquire),
        1,
        "no retry: the wait would outlast the request's time"
    );
}

#[tokio::test]
async fn upstream_4xx_is_not_retried() {
    let app = app_with_fault(Fault::Status(401), None).await;
    let (status, code) = json_error(&app).await;
    assert_eq!((status, code.as_str()), (502, "upstream_status"));
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn a_cut_mid_stream_is_an_error_after_the_partial_answer() {
    let app = app_with_fault(Fault::CutAfter(2), None).await;
    let (events, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_cut");
    assert_eq!(answer_text(&events), "q#0 q#1 ");
    // Something was relayed: no retry.
    assert_eq!(app.mock.counters().requests.load(Ordering::Acquire), 1);
    assert_eq!(json_error(&app).await, (502, "upstream_cut".into()));
}

#[tokio::test]
async fn a_malformed_chunk_is_an_error() {
    let app = app_with_fault(Fault::MalformedAfter(1), None).await;
    let (events, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_malformed");
    assert_eq!(answer_text(&events), "q#0 ");
    assert_eq!(json_error(&app).await, (502, "upstream_malformed".into()));
}

#[tokio::test]
async fn a_stall_mid_stream_times_out() {
    let app = app_with_fault(Fault::StallAfter(2), None).await;
    let (events, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_timeout");
    assert_eq!(answer_text(&events), "q#0 q#1 ");
    assert_eq!(json_error(&app).await, (504, "upstream_timeout".into()));
}

#[tokio::test]
async fn a_stall_before_the_first_chunk_times_out() {
    let app = app_with_fault(Fault::StallAfter(0), None).await;
    let (events, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_timeout");
    assert_eq!(answer_text(&events), "");
}

#[tokio::test]
async fn an_unreachable_upstream_is_reported_after_retries() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        c.upstream.base_url = format!("http://127.0.0.1:{port}/v1");
    })
    .await;
    let (_, code) = stream_error(&app).await;
    assert_eq!(code, "upstream_unavailable");
    assert_eq!(json_error(&app).await, (502, "upstream_unavailable".into()));
}

/// Deltas of a burst are held only while more are arriving: when the upstream goes quiet, what
/// it sent reaches the client at once, not with the error that the silence ends in.
#[tokio::test]
async fn deltas_before_a_stall_arrive_while_the_upstream_is_quiet() {
    const GAP_MS: u64 = 1_000;
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(5),
            fault: Some(Fault::StallAfter(3)),
            ..MockKnobs::default()
        },
        |c| c.upstream.chunk_gap_timeout_ms = GAP_MS,
    )
    .await;
    let response = app.post_answer(&json!({"user_input": "q"})).await;
    let mut events = response.bytes_stream().eventsource();
    let mut text = String::new();
    let mut last_delta = None;
    let error_at = loop {
        let event = events
            .next()
            .await
            .expect("the stream ends with an error")
            .expect("well-formed SSE");
        match event.event.as_str() {
            "delta" => {
                let data: Value = serde_json::from_str(&event.data).expect("JSON");
                text.push_str(data["content"].as_str().expect("content"));
                last_delta = Some(Instant::now());
            }
            "error" => break Instant::now(),
            _ => {}
        }
    };
    assert_eq!(text, "q#0 q#1 q#2 ");
    let held = error_at - last_delta.expect("deltas came");
    assert!(
        held >= Duration::from_millis(GAP_MS / 2),
        "the last delta came {held:?} before the error: it was held back with it"
    );
}
